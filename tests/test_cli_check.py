"""``medscribe-emulator check FIXTURES_DIR``: run as a real subprocess."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest

from emulator import checker
from emulator.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
OK_LINE = re.compile(
    r"^OK: (\d+) scenarios( \(.*\))?, (\d+) rules(, (\d+) domains, (\d+) subscriptions)?$"
)


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
    assert result.stdout.strip() == "OK: 0 scenarios, 0 rules, 1 domain, 2 subscriptions"


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


@pytest.mark.parametrize(
    ("name", "line"), [("scenarios/big.yaml", 3), ("scenarios/big.json", 3), ("rules.yaml", 3)]
)
def test_a_number_of_more_digits_than_are_read_is_said_so_with_its_line(tmp_path, name, line):
    """Valid JSON or YAML with a number of 5,000 digits: the JSON file had crashed
    ``check`` with Python's advice to call ``sys.set_int_max_str_digits()``, the
    YAML file had been called invalid YAML with the same advice."""
    digits = "7" * 5_000
    if name.endswith(".json"):
        text = '{"segments": [\n  {"begin": 0, "end": 1, "content": "hi",\n  "partials": ' + digits
        text += "}]}"
    elif name == "rules.yaml":
        text = f"- scenario: default\n  match: {{sessionId: x}}\n  times: {digits}\n"
    else:
        text = f"segments:\n  - {{begin: 0, end: 1, content: hi,\n     partials: {digits}}}\n"
    write(tmp_path / name, text)
    result = check(tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [
        f"{tmp_path / name}:{line}: a number of 5000 digits: numbers of at most 4300 digits "
        "are read"
    ]


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        # int() reads 4,300 digits and a sign: the range is the problem.
        (
            "scenarios/neg.json",
            '{"segments": [\n {"begin": 0, "end": 1, "content": "hi",\n  "partials": -'
            + "9" * 4300
            + "}]}",
            "scenarios/neg.json:3: segments[0].partials: must be >= 0, got an integer of 4300 "
            "digits",
        ),
        # Written in hex, it is read, but no message could show it: refused at its line.
        (
            "rules.yaml",
            "- scenario: default\n  match: {sessionId: x}\n  times: 0x" + "f" * 3600 + "\n",
            "rules.yaml:3: a number of more than 4300 digits: numbers of at most 4300 digits "
            "are read",
        ),
        # Digits in a string on an earlier line are no number: the number's line is named.
        (
            "scenarios/late.json",
            '{"segments": [\n {"begin": 0, "end": 1,\n  "content": "ref ' + "1" * 5000 + '",\n'
            '  "partials": ' + "7" * 5000 + "}]}",
            "scenarios/late.json:4: a number of 5000 digits: numbers of at most 4300 digits "
            "are read",
        ),
        # YAML 1.1's 1:30 form: int() refused its first part before any check.
        (
            "scenarios/sixty.yaml",
            "segments:\n  - begin: 0\n    end: 1\n    content: hi\n    partials: "
            + "1" * 5000
            + ":30\n",
            "scenarios/sixty.yaml:5: a number of more than 4300 digits: numbers of at most "
            "4300 digits are read",
        ),
        # A float's long fraction is no integer: the integer's line is named.
        (
            "scenarios/float.json",
            '{"segments": [\n {"begin": 0.' + "5" * 5000 + ', "end": 1, "content": "hi",\n'
            '  "partials": ' + "7" * 5000 + "}]}",
            "scenarios/float.json:3: a number of 5000 digits: numbers of at most 4300 digits "
            "are read",
        ),
    ],
    ids=[
        "negative-4300-json",
        "hex-yaml",
        "digits-in-a-string-before",
        "sexagesimal-yaml",
        "a-long-float-before",
    ],
)
def test_long_numbers_in_any_form_are_a_problem_at_their_line(tmp_path, name, text, said):
    """A negative number of 4,300 digits was refused as "a number of 4300 digits: at
    most 4300 are read"; one in hex crashed check and serve with a traceback; the
    line was the first run of digits, inside a string too."""
    write(tmp_path / name, text)
    result = check(tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [f"{tmp_path}/{said}"]


def test_an_unknown_key_read_as_a_long_number_is_said_by_its_count_of_digits(tmp_path):
    text = "segments:\n  - begin: 0\n    end: 1\n    content: hi\n    ? " + "9" * 4000
    write(tmp_path / "scenarios" / "a.yaml", text + "\n    : 1\n")
    result = check(tmp_path)
    assert result.returncode == 1, result.stderr
    assert "unknown key (an integer of 4000 digits); allowed:" in result.stdout
    assert len(result.stdout) < 500, result.stdout


def test_a_long_number_in_a_problem_is_said_by_its_count_of_digits(tmp_path):
    write(
        tmp_path / "scenarios" / "a.yaml",
        f"segments:\n  - {{begin: 0, end: 1, content: hi, partials: {'7' * 4_000}}}\n",
    )
    result = check(tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.endswith("got an integer of 4000 digits\n"), result.stdout


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


ONE_SCENARIO = "segments:\n  - {begin: 0, end: 1, content: Hi.}\n"


def check_here(directory: Path) -> tuple[int, str, str]:
    """``checker.run`` in this process (a subprocess each is slow): exit code, out, err."""
    out, err = StringIO(), StringIO()
    code = checker.run(directory, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _fixtures_with(root: Path, where: str) -> None:
    """A good fixtures directory at ``root``, and ``where`` (a folder if it ends in
    ``/``, else a file holding a scenario) placed in it."""
    if where == "scenarios":  # a file in place of the folder: rules.yaml makes it fixtures
        write(root / "rules.yaml", "[]\n")
    else:
        write(root / "scenarios" / "one.yaml", ONE_SCENARIO)
    if where == "rules.yml":
        write(root / "rules.yaml", "[]\n")
    if where.endswith("/"):
        (root / where).mkdir(parents=True)
    else:
        write(root / where, ONE_SCENARIO)


# id -> (what is placed beside a good scenarios/one.yaml, the entry reported, its problem)
UNREAD = {
    "a-folder-in-scenarios": (
        "scenarios/cardiology/echo-visit.yaml",
        "scenarios/cardiology",
        "not read: scenario files go directly in scenarios/, not in a folder in it "
        "(start its name with a dot to keep it there unread)",
    ),
    "a-scenario-folder": (
        "scenario/misplaced.yaml",
        "scenario",
        "not read: scenario files are read from scenarios/ only",
    ),
    "a-file-named-scenarios": (
        "scenarios",
        "scenarios",
        "not read: scenarios/ must be a folder, holding one file per scenario",
    ),
    "rules-in-capitals": (
        "RULES.yaml",
        "RULES.yaml",
        "not read: the file must be named rules.yaml",
    ),
    "rules-yml-beside-rules-yaml": (
        "rules.yml",
        "rules.yml",
        "not read: rules.yaml, beside it, is read instead",
    ),
    "a-space-before-the-name": (
        "scenarios/ good.yaml",
        "scenarios/ good.yaml",
        "the scenario name ' good' (the file's name) has spaces at its start or end, which "
        "every rule or --scenario naming it would have to repeat: rename the file",
    ),
    "a-space-after-the-name": (
        "scenarios/good .yml",
        "scenarios/good .yml",
        "the scenario name 'good ' (the file's name) has spaces at its start or end",
    ),
}


# Files not read that may be there on purpose (a golden transcript, notes): a note each.
NOTED = {
    "another-suffix-in-scenarios": (
        "scenarios/visit.txt",
        "scenarios/visit.txt",
        "not read: a scenario file's name ends in .yaml, .yml or .json (start its name with "
        "a dot to keep it there unread)",
    ),
    "no-suffix-in-scenarios": (
        "scenarios/visit",
        "scenarios/visit",
        "not read: a scenario file's name ends in .yaml, .yml or .json",
    ),
    "a-scenario-at-the-top": (
        "toplevel.yaml",
        "toplevel.yaml",
        "not read: scenario files go in scenarios/; here, only rules.yaml and resources.yaml "
        "are read (start its name with a dot to keep it there unread)",
    ),
    "json-at-the-top": (
        "visit.json",
        "visit.json",
        "not read: scenario files go in scenarios/",
    ),
}


@pytest.mark.parametrize(("where", "reported", "message"), NOTED.values(), ids=NOTED)
def test_a_file_not_read_that_may_be_there_on_purpose_is_noted_and_check_passes(
    tmp_path, where, reported, message
):
    _fixtures_with(tmp_path, where)
    code, out, _ = check_here(tmp_path)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2, out
    assert lines[0].startswith(f"note: {tmp_path / reported}: {message}"), out
    assert lines[1].startswith("OK: 1 scenario (one)"), out


@pytest.mark.parametrize(("where", "reported", "message"), NOTED.values(), ids=NOTED)
def test_start_up_logs_a_file_not_read_as_check_notes_it_and_starts(
    tmp_path, caplog, where, reported, message
):
    from emulator.server import Settings, build_backend

    fixtures = tmp_path / "fixtures"
    _fixtures_with(fixtures, where)
    settings = Settings(fixtures=fixtures, state_dir=tmp_path / "state")
    with caplog.at_level(logging.WARNING, logger="medscribe"):
        build_backend(settings).close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith(f"{fixtures / reported}: {message}") for w in warnings), warnings


@pytest.mark.parametrize(("where", "reported", "message"), UNREAD.values(), ids=UNREAD)
def test_a_file_the_emulator_will_not_read_is_a_problem_naming_it(
    tmp_path, where, reported, message
):
    """A scenario in a folder under scenarios/, beside it, or under another suffix was
    not read, and check said OK: the scenario was unknown only when a rule named it."""
    _fixtures_with(tmp_path, where)
    code, out, _ = check_here(tmp_path)
    lines = out.splitlines()
    assert code == 1 and len(lines) == 1, out
    assert lines[0].startswith(f"{tmp_path / reported}: {message}"), out


@pytest.mark.parametrize(("where", "reported", "message"), UNREAD.values(), ids=UNREAD)
def test_start_up_refuses_a_file_it_will_not_read_as_check_does(tmp_path, where, reported, message):
    from emulator.errors import ConfigError
    from emulator.server import Settings, build_backend

    fixtures = tmp_path / "fixtures"
    _fixtures_with(fixtures, where)
    settings = Settings(fixtures=fixtures, state_dir=tmp_path / "state")
    with pytest.raises(ConfigError) as error:
        build_backend(settings).close()
    assert f"{fixtures / reported}: {message}" in str(error.value)


@pytest.mark.parametrize(
    "where",
    [
        "scenarios/.gitkeep",
        "scenarios/.draft.yaml",
        "scenarios/one.yaml~",
        "scenarios/#one.yaml#",
        ".hidden.yaml",
        ".git/",
        "README.md",
        "audio/",
        "scenarios/later/",
        "scenarios/audio/visit.wav",
        "scenario/",
        "Scenario/visit.wav",
    ],
)
def test_hidden_files_backups_and_other_files_at_the_top_are_no_problem(tmp_path, where):
    """Hidden files keep a folder in git or a draft unread, and editors leave backups
    as a file is edited: none is a scenario someone expects read."""
    _fixtures_with(tmp_path, where)
    code, out, _ = check_here(tmp_path)
    assert (code, out) == (0, "OK: 1 scenario (one), 0 rules\n")


def test_the_ok_line_names_the_scenarios_it_loaded(tmp_path):
    for name in ("b-visit.yaml", "a-visit.json", "Visit.YAML"):
        write(tmp_path / "scenarios" / name, '{"segments": []}\n')
    code, out, _ = check_here(tmp_path)
    assert (code, out) == (0, "OK: 3 scenarios (Visit, a-visit, b-visit), 0 rules\n")


def test_the_ok_line_names_the_first_ten_scenarios_and_counts_the_rest(tmp_path):
    for index in range(13):
        write(tmp_path / "scenarios" / f"s{index:02d}.yaml", "{}\n")
    code, out, _ = check_here(tmp_path)
    names = ", ".join(f"s{index:02d}" for index in range(10))
    assert (code, out) == (0, f"OK: 13 scenarios ({names} and 3 more), 0 rules\n")


def test_a_scenario_name_that_could_be_misread_in_the_ok_line_is_quoted(tmp_path):
    write(tmp_path / "scenarios" / "visit, part 2.yaml", "{}\n")
    write(tmp_path / "scenarios" / "intake.yaml", "{}\n")
    code, out, _ = check_here(tmp_path)
    assert (code, out) == (0, "OK: 2 scenarios (intake, 'visit, part 2'), 0 rules\n")


def test_a_scenarios_folder_given_for_the_fixtures_directory_names_its_parent(tmp_path):
    write(tmp_path / "fx" / "scenarios" / "one.yaml", ONE_SCENARIO)
    folder = tmp_path / "fx" / "scenarios"
    code, out, err = check_here(folder)
    assert (code, out) == (2, "")
    assert err == (
        f"error: {folder}: not a fixtures directory (no scenarios/, rules.yaml or "
        f"resources.yaml): it holds scenario files: give its parent, {tmp_path / 'fx'}\n"
    )


def test_a_scenarios_folder_given_as_dot_names_its_parent(tmp_path):
    write(tmp_path / "fx" / "scenarios" / "one.yaml", ONE_SCENARIO)
    result = subprocess.run(
        [sys.executable, "-m", "emulator", "check", "."],
        cwd=tmp_path / "fx" / "scenarios",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.endswith(f": give its parent, {(tmp_path / 'fx').resolve()}\n")


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        (
            "fx/scenarios/one.yaml",
            ": give the fixtures directory holding its scenarios/ folder, {tmp}/fx",
        ),
        ("fx/rules.yaml", ": give the fixtures directory holding it, {tmp}/fx"),
        (
            "one.yaml",
            ": give a fixtures directory, a folder holding scenarios/ (one file per scenario), "
            "rules.yaml and resources.yaml, each optional",
        ),
    ],
    ids=["a-scenario-file", "the-rules-file", "a-scenario-file-outside-fixtures"],
)
def test_a_fixture_file_given_for_the_fixtures_directory_says_what_to_give(tmp_path, given, hint):
    write(tmp_path / "fx" / "scenarios" / "one.yaml", ONE_SCENARIO)
    write(tmp_path / "fx" / "rules.yaml", "[]\n")
    write(tmp_path / "one.yaml", ONE_SCENARIO)
    code, _, err = check_here(tmp_path / given)
    assert code == 2
    assert err == f"error: {tmp_path / given}: a file, not a directory{hint.format(tmp=tmp_path)}\n"


def test_start_up_names_the_parent_of_a_scenarios_folder_given_for_fixtures(tmp_path):
    from emulator.errors import ConfigError
    from emulator.server import Settings, build_backend

    write(tmp_path / "fx" / "scenarios" / "one.yaml", ONE_SCENARIO)
    settings = Settings(fixtures=tmp_path / "fx" / "scenarios", state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match=f": give its parent, {re.escape(str(tmp_path))}/fx$"):
        build_backend(settings)


def test_a_directory_with_a_scenario_folder_only_says_to_name_it_scenarios(tmp_path):
    write(tmp_path / "scenario" / "one.yaml", ONE_SCENARIO)
    code, _, err = check_here(tmp_path)
    assert code == 2
    assert err.endswith(": scenario files are read from scenarios/, not scenario/\n")
