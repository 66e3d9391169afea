"""YAML's traps in scenario and rule files: zero-padded integers, numbers read as
text, indentation slips and the line break a block scalar keeps."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from emulator.documents import load_scenario_dir, load_scenario_file, read_document
from emulator.notescript import Summary
from emulator.problems import Checker, PaddedInt
from emulator.rules import RuleError, load_rules_file, parse_rule
from emulator.scenario import ScenarioError

from .support import new_session_id, pcm_tone, run_check, run_session, running_emulator

REPO = Path(__file__).resolve().parent.parent


def _write(folder: Path, text: str, name: str = "x.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _read(tmp_path: Path, text: str) -> tuple[object, list[str]]:
    """The data :func:`read_document` reads from ``text``, and its problems as printed."""
    checker = Checker("x.yaml")
    _, data = read_document(_write(tmp_path, text), checker)
    return data, [str(problem) for problem in checker.problems]


def _problems(tmp_path: Path, text: str) -> list[str]:
    """The problems :func:`load_scenario_file` reports for ``text``, as printed."""
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario_file(path)
    return [str(problem).removeprefix(f"{path}") for problem in info.value.problems]


# --------------------------------------------------------------------------- F1: integers


def test_a_zero_padded_time_is_read_in_decimal_not_as_octal(tmp_path: Path):
    """``begin: 010`` is 10 s (YAML 1.1 read 8), and ``08``/``09`` are numbers."""
    scenario = load_scenario_file(
        _write(
            tmp_path,
            """
            segments:
              - {channel: 0, begin: 010, end: 014, content: "What brings you in?"}
              - {channel: 1, begin: 08, end: 09, content: "My knee."}
            faults:
              - {at: 017, disconnect: true}
            """,
        )
    )
    assert [(s.begin, s.end) for s in scenario.segments] == [(8.0, 9.0), (10.0, 14.0)]
    assert [f.at for f in scenario.faults] == [17.0]


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("010", PaddedInt.read("010")),
        ("-010", PaddedInt.read("-010")),
        ("+007", PaddedInt.read("+007")),
        ("08", PaddedInt.read("08")),
        ("0_10", PaddedInt.read("0_10")),
        ("00", PaddedInt.read("00")),
        ("0", 0),
        ("10", 10),
        ("1_000", 1000),
        ("0x1A", 26),
        ("0b101", 5),
        ("1:30", 90),  # YAML 1.1's sexagesimal, kept
        ("0o17", "0o17"),  # not an integer in YAML 1.1, kept as text
        ("010.5", 10.5),
        ("1.0e+3", 1000.0),
        ("1e3", "1e3"),
        ("'010'", "010"),
        ("!!str 010", "010"),
        ("!!int 010", PaddedInt.read("010")),
        ("yes", True),
        ("2024-01-02", __import__("datetime").date(2024, 1, 2)),
    ],
)
def test_only_zero_padded_integers_read_differently(tmp_path: Path, written: str, read: object):
    """Every other scalar is read as YAML 1.1 reads it; a zero-padded integer keeps
    its text as written."""
    data, problems = _read(tmp_path, f"value: {written}\n")
    assert problems == []
    assert data == {"value": read}
    assert type(data["value"]) is type(read)  # type: ignore[index]
    assert repr(data["value"]) == repr(read)  # type: ignore[index]


def test_reading_a_document_leaves_yaml_itself_as_it_was(tmp_path: Path):
    """The decimal reading is the emulator's loader's own: PyYAML's loaders, which
    other code in the process uses, still read 010 as YAML 1.1 does."""
    data, _ = _read(tmp_path, "value: 010\n")
    assert data == {"value": 10}
    assert yaml.safe_load("value: 010") == {"value": 8}
    assert yaml.load("value: 010", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) == {
        "value": 8
    }


def test_a_rules_file_inline_scenario_reads_zero_padded_times_in_decimal(tmp_path: Path):
    path = _write(
        tmp_path,
        """
        - scenario:
            segments:
              - {begin: 010, end: 012, content: "Ten to twelve."}
            faults:
              - {at: 020, exception: internalFailureException}
        """,
        "rules.yaml",
    )
    (rule,) = load_rules_file(path, scenarios={})
    assert rule.scenario is not None
    assert [(s.begin, s.end) for s in rule.scenario.segments] == [(10.0, 12.0)]
    assert [f.at for f in rule.scenario.faults] == [20.0]


async def test_the_sdk_receives_a_zero_padded_segment_at_its_decimal_time(tmp_path: Path):
    """Through the real SDK, a scenario file's ``begin: 010, end: 012`` final is
    offset 10-12 s (it was 8-10)."""
    from emulator.sdk import make_client
    from emulator.server import Settings

    (tmp_path / "fixtures" / "scenarios").mkdir(parents=True)
    _write(
        tmp_path / "fixtures" / "scenarios",
        """
        segments:
          - {channel: 0, begin: 010, end: 012, content: "Ten to twelve.", partials: 0}
        """,
        "padded.yaml",
    )
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path / "state",
        fixtures=tmp_path / "fixtures",
        scenario="padded",
    )
    with running_emulator(settings) as running:
        async with await make_client(
            endpoint_url=running.endpoint_url, ca_file=running.ca_file
        ) as client:
            result = await run_session(
                client, new_session_id(), audio=pcm_tone(13.0), chunk_bytes=32000
            )
    assert result.error is None, result.error
    assert [(s.content, s.audio_begin_offset, s.audio_end_offset) for s in result.finals] == [
        ("Ten to twelve.", 10.0, 12.0)
    ]


# --------------------------------------------------------------------------- F2: numbers as text


@pytest.mark.parametrize(
    ("written", "hint"),
    [
        ("'1.5'", "(it is quoted: write the number without quotes)"),
        ('"10"', "(it is quoted: write the number without quotes)"),
        ("+.5", "('+.5': YAML reads a sign right before the '.' as text: write +0.5)"),
        (
            "\uff11\uff10",
            "('\\uff11\\uff10' holds characters other than ASCII digits, such as full-width "
            "digits or a non-breaking space, which YAML reads as text: write it with 0-9 only)",
        ),
        (
            "|\n              10",
            "(it is written as a block of text after '|': write the number after the ':')",
        ),
        ("!!str 10", "(it is tagged !!str, which makes it text: drop the tag)"),
        (
            "!<tag:yaml.org,2002:str> 10",
            "(it is tagged !<tag:yaml.org,2002:str>, which makes it text: drop the tag)",
        ),
        ('"1.0e+3"', "(it is quoted: write the number without quotes)"),
        (
            "'1e3'",
            "(it is quoted: write the number without quotes; even then, '1e3': YAML reads "
            "e-notation as a number only with a '.' and a sign, as 1.0e+3; or write the "
            "number in full)",
        ),
    ],
)
def test_a_number_read_as_text_is_called_quoted_only_when_it_is(
    tmp_path: Path, written: str, hint: str
):
    problems = _problems(
        tmp_path,
        f"""
        segments:
          - content: "Hi."
            end: 20
            begin: {written}
        """,
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith(":4: segments[0].begin: must be a number, got a string (")
    assert problems[0].endswith(hint), problems[0]


def test_an_alias_of_text_is_told_how_its_anchor_is_written(tmp_path: Path):
    """``*t`` names the value written at ``&t``: the alias itself is neither quoted
    nor plain, and the hint says what makes the value it names text."""
    assert _problems(
        tmp_path,
        """
        segments:
          - {content: "One.", begin: 0, end: &t "1.5"}
          - {content: "Two.", begin: *t, end: 20}
          - {content: "Three.", begin: &e 1e3, end: 2000}
          - {content: "Four.", begin: *e, end: 2000}
        """,
    ) == [
        ":2: segments[0].end: must be a number, got a string ('1.5') (it is quoted: write "
        "the number without quotes)",
        ":3: segments[1].begin: must be a number, got a string ('1.5') (it is an alias of a "
        "quoted value: write the number without quotes where its anchor (&) is set)",
        ":4: segments[2].begin: must be a number, got a string ('1e3') ('1e3': YAML reads "
        "e-notation as a number only with a '.' and a sign, as 1.0e+3; or write the number "
        "in full)",
        ":5: segments[3].begin: must be a number, got a string ('1e3') ('1e3': YAML reads "
        "e-notation as a number only with a '.' and a sign, as 1.0e+3; or write the number "
        "in full)",
    ]


def test_unquoted_08_and_09_are_numbers_not_quoted_text(tmp_path: Path):
    """YAML 1.1 kept ``08`` as text, which was then reported as quoted."""
    path = _write(
        tmp_path,
        """
        segments:
          - {channel: 0, begin: 08, end: 09, content: "Eight to nine."}
        """,
    )
    assert [(s.begin, s.end) for s in load_scenario_file(path).segments] == [(8.0, 9.0)]


def test_a_zero_padded_integer_where_text_is_expected_is_that_text(tmp_path: Path):
    """YAML 1.1 read ``0800`` (8 is no octal digit) as the text '0800', and such a
    scenario loaded: a text field still reads it as written, zeros, sign and '_' kept."""
    scenario = load_scenario_file(
        _write(
            tmp_path,
            """
            description: 0089
            segments:
              - {channel: 01, begin: 00, end: 01, content: 0800}
              - {channel: 0, begin: 1, end: 2, content: "0800 hours", partials: [0800, "0800 h"]}
              - {channel: 0, begin: 2, end: 3, content: -08_00}
            faults:
              - {at: 02, exception: internalFailureException, message: 0911}
            """,
        )
    )
    assert scenario.description == "0089"
    assert [s.content for s in scenario.segments] == ["0800", "0800 hours", "-08_00"]
    assert scenario.segments[1].partial_texts == ("0800", "0800 h")
    assert [f.message for f in scenario.faults] == ["0911"]
    # A number field keeps the number only: no text rides along into the model.
    assert [type(s.channel) for s in scenario.segments] == [int, int, int]
    assert (scenario.segments[0].begin, scenario.segments[0].end) == (0.0, 1.0)


def test_a_rules_file_reads_a_zero_padded_text_as_written(tmp_path: Path):
    path = _write(
        tmp_path,
        """
        - error: {type: ThrottlingException, message: 0800}
        """,
        "rules.yaml",
    )
    (rule,) = load_rules_file(path, scenarios={})
    assert rule.error == ("ThrottlingException", "0800")


def test_resources_rules_and_note_scripts_read_zero_padded_text_as_written(tmp_path: Path):
    """A domain named 0089, a tag 09, a rule's scenario 0800 and a note's section and
    summary: each loaded as the text YAML 1.1 read before zero-padded integers became
    decimal."""
    from emulator.resources import load_resources_file

    resources = _write(
        tmp_path,
        """
        domains:
          - domainId: dom-0123456789abcdefghij
            name: 0089
            tags: {ward: 09, 0007: bond}
        """,
        "resources.yaml",
    )
    (domain,) = load_resources_file(resources)
    assert (domain.name, dict(domain.tags)) == ("0089", {"ward": "09", "0007": "bond"})
    scenario = load_scenario_file(
        _write(
            tmp_path,
            """
            segments:
              - {begin: 0, end: 1, content: Hello.}
            note:
              CHIEF_COMPLAINT:
                - 0800
            """,
            "0800.yaml",
        )
    )
    rules = _write(tmp_path, "- scenario: 0800\n", "rules.yaml")
    (rule,) = load_rules_file(rules, scenarios={"0800": scenario})
    assert rule.scenario is scenario
    assert scenario.post_stream.note == (("CHIEF_COMPLAINT", (Summary(text="0800"),)),)


def test_a_refused_zero_padded_integer_is_shown_as_written(tmp_path: Path):
    """A message quotes ``01`` and ``0800``, not the 1 and 800 they read as, so the
    author finds them; an integer with no leading zero is still no text."""
    assert _problems(
        tmp_path,
        """
        segments:
          - {begin: 0, end: 1, content: 800}
        faults:
          - {at: 0, disconnect: 01}
        0800: x
        """,
    ) == [
        ":2: segments[0].content: must be a string, got a number (800): quote it to keep it text",
        ":4: faults[0].disconnect: must be true (omit it for an exception fault), got a "
        "number (01)",
        ":5: 0800: unknown key 0800; allowed: description, segments, faults, note, "
        "afterVisitSummary, artifacts",
    ]


# --------------------------------------------------------------------------- F3: indentation

INDENTATION = {
    "key-indented-less": (
        """
        segments:
          - channel: 0
            begin: 1.0
            end: 2.0
          content: "Hello there."
        """,
        ":5: invalid YAML: key 'content' is indented less than the key above it 'end' "
        "(line 4): the keys of one mapping start in the same column",
    ),
    "key-indented-less-than-its-first-sibling": (
        """
        segments:
          - channel: 0
           begin: 1.0
        """,
        ":3: invalid YAML: key 'begin' is indented less than the key above it 'channel' "
        "(line 2): the keys of one mapping start in the same column",
    ),
    "key-indented-more": (
        """
        segments:
          - channel: 0
            begin: 1.0
            end: 2.0
              content: "Hello there."
        """,
        ":5: invalid YAML: key 'content' is indented more than the key above it 'end' "
        "(line 4), so YAML reads it as more of that key's value: the keys of one mapping "
        "start in the same column",
    ),
    "top-level-key-between-levels": (
        """
        segments:
          - {begin: 1.0, end: 2.0, content: "One."}
         faults: []
        """,
        ":3: invalid YAML: key 'faults' is indented more than the key 'segments' (line 1): "
        "the keys of one mapping start in the same column",
    ),
    "list-item-indented-less": (
        """
        segments:
          - {begin: 1.0, end: 2.0, content: "One."}
         - {begin: 3.0, end: 4.0, content: "Two."}
        """,
        ":3: invalid YAML: this list item is indented less than the item above it (line 2, "
        "its '-' in column 3): the items of one list start in the same column",
    ),
    "list-item-in-its-parent-key-column": (
        """
        segments:
          - {begin: 1.0, end: 2.0, content: "One."}
        - {begin: 3.0, end: 4.0, content: "Two."}
        """,
        ":3: invalid YAML: this list item is indented less than the item above it (line 2, "
        "its '-' in column 3): the items of one list start in the same column",
    ),
    "colon-in-an-unquoted-value": (
        """
        segments:
          - begin: 1.0
            end: 2.0
            content: Dr. Smith: how are you?
        """,
        ":4: invalid YAML: a value that is not quoted holds ': ' (a colon and a space), which "
        "YAML reads as the start of a key: quote the value",
    ),
}


@pytest.mark.parametrize(("text", "expected"), INDENTATION.values(), ids=INDENTATION.keys())
def test_an_indentation_slip_is_reported_as_one_not_as_parser_tokens(
    tmp_path: Path, text: str, expected: str
):
    assert _problems(tmp_path, text) == [expected]


def test_check_reports_an_indentation_slip_with_its_file_and_line(tmp_path: Path):
    (tmp_path / "scenarios").mkdir()
    _write(tmp_path / "scenarios", INDENTATION["key-indented-less"][0], "visit.yaml")
    result = run_check(tmp_path)
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first == f"{tmp_path / 'scenarios' / 'visit.yaml'}{INDENTATION['key-indented-less'][1]}"


# --------------------------------------------------------------------------- F4: block scalars


def test_a_block_scalar_content_keeping_its_line_break_is_a_problem(tmp_path: Path):
    problems = _problems(
        tmp_path,
        """
        segments:
          - begin: 1.0
            end: 2.0
            content: |
              The patient reports a cough.
          - begin: 2.5
            end: 3.5
            content: >
              Folded text
              over two lines.
          - begin: 4.0
            end: 5.0
            content: "Fine."
            partials:
              - "Fi"
              - |2
                 Fin
        """,
    )
    assert problems == [
        ":4: segments[0].content: ends with the line break that '|' keeps, which the client "
        "would receive at the end of the text: write '|-' to drop it",
        ":8: segments[1].content: ends with the line break that '>' keeps, which the client "
        "would receive at the end of the text: write '>-' to drop it",
        ":16: segments[2].partials[1]: ends with the line break that '|2' keeps, which the "
        "client would receive at the end of the text: write '|2-' to drop it",
    ]


def test_a_line_break_asked_for_is_kept(tmp_path: Path):
    """``|-``/``>-`` drop the break; ``|+`` and a quoted ``\\n`` ask for it."""
    scenario = load_scenario_file(
        _write(
            tmp_path,
            """
            description: |
              Not sent to a client: its line break is harmless.
            segments:
              - begin: 1.0
                end: 2.0
                content: |-
                  The patient reports a cough.
              - begin: 2.0
                end: 3.0
                content: >-
                  Folded text
                  over two lines.
              - begin: 3.0
                end: 4.0
                content: |+
                  Kept on purpose.
              - {begin: 4.0, end: 5.0, content: "Two lines:\\nsecond.\\n"}
            """,
        )
    )
    assert [s.content for s in scenario.segments] == [
        "The patient reports a cough.",
        "Folded text over two lines.",
        "Kept on purpose.\n",
        "Two lines:\nsecond.\n",
    ]


def test_a_rules_file_inline_scenario_reports_a_kept_line_break_at_its_path(tmp_path: Path):
    path = _write(
        tmp_path,
        """
        - scenario:
            segments:
              - begin: 1.0
                end: 2.0
                content: |
                  Hello.
        """,
        "rules.yaml",
    )
    with pytest.raises(RuleError) as info:
        load_rules_file(path, scenarios={})
    assert [str(p) for p in info.value.problems] == [
        f"{path}:5: [0].scenario.segments[0].content: ends with the line break that '|' "
        "keeps, which the client would receive at the end of the text: write '|-' to drop it"
    ]


def test_check_and_start_up_report_a_kept_line_break_alike(tmp_path: Path):
    """``check`` prints the problem that loading the directory raises."""
    (tmp_path / "scenarios").mkdir()
    _write(
        tmp_path / "scenarios",
        """
        segments:
          - begin: 1.0
            end: 2.0
            content: >
              Hello.
        """,
        "visit.yaml",
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario_dir(tmp_path)
    (problem,) = info.value.problems
    assert problem.line == 4 and problem.field == "segments[0].content"
    assert problem.message.startswith("ends with the line break that '>' keeps")
    result = run_check(tmp_path)
    assert result.returncode == 1
    assert f"visit.yaml:4: segments[0].content: {problem.message}" in result.stdout, result.stdout


# --------------------------------------------------------------------------- keys nested too deep


def test_only_a_block_mapping_key_an_enclosing_mapping_takes_is_asked_about_indentation(
    tmp_path: Path,
):
    """Braces, not indentation, put a key in a YAML flow mapping ``{...}``."""
    session = "11111111-1111-1111-1111-111111111111"
    path = _write(
        tmp_path,
        f"""
        - match:
            sessionId: {session}
            scenario: synthetic
        - {{match: {{sessionId: {session}, scenario: synthetic}}}}
        """,
        "rules.yaml",
    )
    with pytest.raises(RuleError) as info:
        load_rules_file(path, scenarios={})
    allowed = "allowed: sessionId, domainId, subscriptionId, operation"
    assert [str(p).removeprefix(str(path)) for p in info.value.problems if "match" in p.field] == [
        f":3: [0].match.scenario: unknown key 'scenario' (a rule takes it: is it indented too "
        f"far?); {allowed}",
        f":4: [1].match.scenario: unknown key 'scenario' (a rule takes it: is it nested one "
        f"level too deep?); {allowed}",
    ]


def test_a_json_file_key_an_enclosing_mapping_takes_is_not_asked_about_indentation(
    tmp_path: Path,
):
    path = _write(
        tmp_path,
        '[{"match": {"sessionId": "11111111-1111-1111-1111-111111111111",\n'
        '            "scenario": "synthetic"}}]\n',
        "rules.json",
    )
    with pytest.raises(RuleError) as info:
        load_rules_file(path, scenarios={})
    assert str(info.value.problems[1]).removeprefix(str(path)) == (
        ":2: [0].match.scenario: unknown key 'scenario' (a rule takes it: is it nested one "
        "level too deep?); allowed: sessionId, domainId, subscriptionId, operation"
    )


def test_a_request_body_key_nested_too_deep_says_how_many_levels():
    """A request's JSON body has no indentation; the key sits two mappings too deep
    (in a segment of the rule's inline scenario)."""
    body = {"scenario": {"segments": [{"begin": 0, "end": 1, "content": "x", "times": 2}]}}
    with pytest.raises(RuleError) as info:
        parse_rule(body, scenarios={})
    assert [str(p) for p in info.value.problems] == [
        "<request>: scenario.segments[0].times: unknown key 'times' (a rule takes it: is it "
        "nested 2 levels too deep?); allowed: channel, begin, end, content, partials"
    ]
