"""``medscribe-emulator check FIXTURES_DIR``: run as a real subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
OK_LINE = re.compile(r"^OK: (\d+) scenarios, (\d+) rules(, (\d+) domains, (\d+) subscriptions)?$")


def check(directory: Path | str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "emulator", "check", str(directory), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A fixtures directory with problems in every kind of file."""
    write(
        tmp_path / "scenarios" / "bad.yaml",
        "segments:\n"
        '  - {channel: 0, begin: 2.0, end: 1.0, content: "Backwards."}\n'
        '  - {channel: 3, begin: 0.0, end: 1.0, content: "Bad channel."}\n'
        "faults:\n"
        "  - {at: 1.0, exception: Nope}\n",
    )
    write(
        tmp_path / "scenarios" / "good.yaml", 'segments:\n  - {begin: 0, end: 1, content: "Hi."}\n'
    )
    write(tmp_path / "scenarios" / "syntax.yaml", "segments: [\n")
    write(
        tmp_path / "rules.yaml",
        "- match: {sessionId: abc}\n"
        "  scenario: missing-one\n"
        "- match: {domainId: x}\n"
        "  error: {type: Throttling}\n"
        "- scenario: bad\n",
    )
    write(tmp_path / "resources.yaml", "domains:\n  - domainId: nope\n    name: clinic\n")
    return tmp_path


def test_the_shipped_fixtures_check_ok_with_their_counts():
    result = check(REPO / "fixtures")
    assert result.returncode == 0, result.stdout + result.stderr
    match = OK_LINE.match(result.stdout.strip())
    assert match is not None, result.stdout
    scenarios = [
        p for p in (REPO / "fixtures" / "scenarios").iterdir() if p.suffix in (".yaml", ".json")
    ]
    assert int(match.group(1)) == len(scenarios)


def test_every_problem_is_one_line_with_file_line_and_field(broken):
    result = check(broken)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    bad, rules, resources = (
        broken / "scenarios" / "bad.yaml",
        broken / "rules.yaml",
        broken / "resources.yaml",
    )
    expected_prefixes = [
        f"{bad}:2: segments[0].end: ",
        f"{bad}:3: segments[1].channel: ",
        f"{bad}:5: faults[0].exception: ",
        f"{broken / 'scenarios' / 'syntax.yaml'}:2: ",
        f"{rules}:2: [0].scenario: unknown scenario 'missing-one'",
        f"{rules}:4: [1].error.type: ",
        f"{resources}:2: domains[0].domainId: ",
    ]
    for prefix in expected_prefixes:
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    assert all(re.match(r"^\S+:\d+: \S", line) for line in lines), lines
    assert result.stderr.strip() == f"{len(lines)} problems found"


def test_a_rule_naming_a_broken_scenario_is_not_reported_as_well(broken):
    """The broken scenario is reported once, in its own file; the rule naming it is fine."""
    result = check(broken)
    assert not any(
        line.startswith(f"{broken / 'rules.yaml'}:5:") for line in result.stdout.splitlines()
    )


def test_a_file_named_for_the_generated_visit_does_not_list_its_name_twice(tmp_path):
    write(
        tmp_path / "scenarios" / "synthetic.yaml",
        'segments:\n  - {begin: 0, end: 1, content: "Hi."}\n',
    )
    write(tmp_path / "rules.yaml", "- scenario: nope\n")
    result = check(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any("may not be named 'synthetic'" in line for line in lines)
    assert any(
        line.endswith(
            "unknown scenario 'nope'; known scenarios: synthetic (scenario files are "
            "read when the emulator starts: one added since needs a restart, or give the rule its "
            "scenario inline)"
        )
        for line in lines
    )


def test_resources_are_counted_when_the_file_seeds_some(tmp_path):
    write(
        tmp_path / "resources.yaml",
        "domains:\n"
        "  - domainId: dom-0123456789abcdefghij\n"
        "    name: demo-clinic\n"
        "    subscriptions:\n"
        "      - subscriptionId: sub-0123456789abcdefghijk\n"
        "      - {subscriptionId: sub-INACTIVE0123456789abc, status: INACTIVE}\n",
    )
    result = check(tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "OK: 0 scenarios, 0 rules, 1 domains, 2 subscriptions"


def test_a_directory_with_only_an_empty_rules_file_is_ok(tmp_path):
    write(tmp_path / "rules.yaml", "# nothing yet\n")
    result = check(tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == "OK: 0 scenarios, 0 rules"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p / "missing", "no such directory"),
        (lambda p: p, "not a fixtures directory"),
        (lambda p: _a_file(p / "rules.yaml"), "rules.yaml: a file, not a directory"),
    ],
    ids=["missing-directory", "no-fixture-files", "a-file"],
)
def test_a_directory_that_is_not_a_fixtures_directory_exits_2_with_one_line(
    tmp_path, make, fragment
):
    result = check(make(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]


def _a_file(path):
    path.write_text("[]\n")
    return path


def test_a_bad_flag_exits_2_with_one_line(tmp_path):
    result = check(tmp_path, "--bogus")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "medscribe-emulator check: error: unrecognized arguments: --bogus "
        "(see medscribe-emulator check --help)"
    ]


def test_check_help_mentions_every_option_and_the_exit_codes():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["check"]  # type: ignore[union-attr]
    result = subprocess.run(
        [sys.executable, "-m", "emulator", "check", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in result.stdout
    assert "FIXTURES_DIR" in result.stdout and "exit status" in result.stdout
    assert "file:line: field: message" in result.stdout


def _alias_bomb(levels: int) -> str:
    """A few hundred bytes whose aliases name 9**levels values."""
    names = "abcdefghijklmnop"
    lines = [f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ", ".join([f"*{names[i - 1]}"] * 9) + "]")
    return "\n".join(lines) + f"\nsegments: *{names[levels - 1]}\n"


@pytest.mark.parametrize("where", ["scenarios/bomb.yaml", "rules.yaml"])
def test_a_yaml_alias_bomb_is_read_in_the_time_of_its_bytes(tmp_path, where):
    """290 bytes whose aliases reach 43 million values: each node is walked once (a walk
    of every path through them, for their lines, took over 10 GB), and the problems
    are the few its top level has."""
    text = _alias_bomb(8)
    if where == "rules.yaml":
        text = "- scenario:\n" + "".join(f"    {line}\n" for line in text.splitlines())
    assert len(text) < 400
    write(tmp_path / where, text)
    result = check(tmp_path)
    assert result.returncode == 1
    problems = result.stdout.splitlines()
    assert 1 <= len(problems) <= 20, result.stdout
    assert "segments[0]: a segment must be a mapping, got a list" in result.stdout


def test_an_anchored_scenario_reused_by_many_rules_is_fine(tmp_path):
    """Reuse is what anchors are for: one inline scenario of 150 segments, named by
    20 more rules through its alias."""
    segments = "".join(
        f"      - {{begin: {i}, end: {i + 0.5}, content: Segment {i}.}}\n" for i in range(150)
    )
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(21)]
    rules = f"- match: {{sessionId: {ids[0]}}}\n  scenario: &visit\n    segments:\n" + segments
    rules += "".join(f"- match: {{sessionId: {i}}}\n  scenario: *visit\n" for i in ids[1:])
    write(tmp_path / "rules.yaml", rules)
    result = check(tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "OK: 0 scenarios, 21 rules"


@pytest.mark.parametrize("name", ["scenarios/deep.yaml", "scenarios/deep.json", "rules.yaml"])
def test_nesting_deeper_than_python_recurses_is_one_problem(tmp_path, name):
    depth = 2000
    if name.endswith(".json"):
        text = '{"segments": ' + "[" * depth + "]" * depth + "}"
    elif name == "rules.yaml":
        text = "- scenario: {segments: " + "[" * depth + "]" * depth + "}\n"
    else:
        text = "segments: " + "[" * depth + "]" * depth + "\n"
    write(tmp_path / name, text)
    result = check(tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{name}: nested too deeply" in result.stdout


def test_problems_print_by_file_then_line(tmp_path):
    """A duplicate key is found after the fields of the whole document are checked:
    printed in its line's place all the same."""
    write(
        tmp_path / "rules.yaml",
        "- match: {sessionId: abc}\n"
        "  scenario: nowhere\n"
        "  scenario: twice\n"
        "- match: {domainId: x}\n"
        "  error: {type: Nope}\n",
    )
    result = check(tmp_path)
    lines = [int(line.split(":")[1]) for line in result.stdout.splitlines()]
    assert len(lines) >= 3 and lines == sorted(lines), result.stdout


def test_a_directory_named_like_a_scenario_is_a_problem_not_skipped(tmp_path):
    (tmp_path / "scenarios" / "visit.yaml").mkdir(parents=True)
    result = check(tmp_path)
    assert result.returncode == 1
    assert "visit.yaml: is not a file: a scenario is one file in scenarios/" in result.stdout


def test_serve_refuses_a_directory_that_is_no_fixtures_directory_as_check_does(tmp_path):
    from emulator.errors import ConfigError
    from emulator.server import Settings, build_backend

    settings = Settings(fixtures=tmp_path, state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="not a fixtures directory"):
        build_backend(settings)
    assert "not a fixtures directory" in check(tmp_path).stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rules.yml", "rules.yml: not read: the file must be named rules.yaml"),
        ("rules.json", "rules.json: not read: the file must be named rules.yaml"),
        ("resources.yml", "resources.yml: not read: the file must be named resources.yaml"),
    ],
)
def test_a_rules_or_resources_file_under_another_name_is_a_problem(tmp_path, name, message):
    """Scenarios may be .yml or .json; a rules.yml beside them was not read, and check
    said OK with 0 rules: the fixtures ran without their rules, silently."""
    write(tmp_path / "scenarios" / "one.yaml", "segments:\n  - {begin: 0, end: 1, content: Hi.}\n")
    write(tmp_path / name, "[]\n")
    result = check(tmp_path)
    assert result.returncode == 1, result.stdout
    assert f"{tmp_path / name.split('.')[0]}.{name.split('.')[1]}" in result.stdout
    assert message in result.stdout


def test_a_rules_file_that_is_a_link_to_nothing_is_a_problem(tmp_path):
    """A container mount whose target is missing read as no rules file at all."""
    write(tmp_path / "scenarios" / "one.yaml", "segments:\n  - {begin: 0, end: 1, content: Hi.}\n")
    (tmp_path / "rules.yaml").symlink_to(tmp_path / "gone.yaml")
    result = check(tmp_path)
    assert result.returncode == 1
    assert f"rules.yaml: a link to {tmp_path / 'gone.yaml'}, which does not exist" in result.stdout


def test_every_misnamed_file_is_named_not_only_the_first(tmp_path):
    write(tmp_path / "scenarios" / "one.yaml", "segments:\n  - {begin: 0, end: 1, content: Hi.}\n")
    write(tmp_path / "rules.yml", "[]\n")
    write(tmp_path / "resources.json", "{}\n")
    result = check(tmp_path)
    assert result.returncode == 1
    assert "rules.yml: not read: the file must be named rules.yaml" in result.stdout
    assert "resources.json: not read: the file must be named resources.yaml" in result.stdout
