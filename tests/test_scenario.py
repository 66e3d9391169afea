"""Scenario files: the schema, its validation messages, and the shipped fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emulator.documents import load_scenario_dir, load_scenario_file
from emulator.errors import ConfigError
from emulator.scenario import (
    MAX_PARTIALS,
    Fault,
    Scenario,
    ScenarioError,
    Segment,
    meant_scenario,
    parse_scenario,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _problems(path: Path) -> list:
    with pytest.raises(ScenarioError) as info:
        load_scenario_file(path)
    return info.value.problems


# id -> (file text, expected field, expected line, fragment of the message)
INVALID = {
    "unknown-top-level-key": (
        """
        segmentz: []
        """,
        "segmentz",
        1,
        "unknown key 'segmentz' (did you mean 'segments'?); allowed: description, segments, faults",
    ),
    "unknown-segment-key": (
        """
        segments:
          - begin: 0
            end: 1
            content: hi
            speaker: 1
        """,
        "segments[0].speaker",
        5,
        "unknown key 'speaker'; allowed: channel, begin, end, content, partials",
    ),
    "top-level-key-indented-under-a-segment": (
        """
        segments:
          - begin: 0
            end: 1
            content: hi
            faults:
              - {at: 0.5, disconnect: true}
        """,
        "segments[0].faults",
        5,
        "unknown key 'faults' (a scenario takes it: is it indented too far?); "
        "allowed: channel, begin, end, content, partials",
    ),
    "channel-is-bool": (
        """
        segments:
          - {channel: true, begin: 0, end: 1, content: hi}
        """,
        "segments[0].channel",
        2,
        "must be an integer, got a boolean (true)",
    ),
    "channel-out-of-range": (
        """
        segments:
          - {channel: 2, begin: 0, end: 1, content: hi}
        """,
        "segments[0].channel",
        2,
        "must be 0 or 1, got 2",
    ),
    "begin-is-string": (
        """
        segments:
          - begin: "zero"
            end: 1
            content: hi
        """,
        "segments[0].begin",
        2,
        "must be a number, got a string ('zero')",
    ),
    "begin-in-e-notation-yaml-reads-as-text": (
        """
        segments:
          - {begin: 0, end: 1e3, content: hi}
        """,
        "segments[0].end",
        2,
        "must be a number, got a string ('1e3') ('1e3': YAML reads e-notation as a number "
        "only with a '.' and a sign, as 1.0e+3; or write the number in full)",
    ),
    "begin-quoted": (
        """
        segments:
          - {begin: "1", end: 2, content: hi}
        """,
        "segments[0].begin",
        2,
        "must be a number, got a string ('1') (it is quoted: write the number without quotes)",
    ),
    "begin-is-bool": (
        """
        segments:
          - {begin: false, end: 1, content: hi}
        """,
        "segments[0].begin",
        2,
        "must be a number, got a boolean (false)",
    ),
    "begin-is-nan": (
        """
        segments:
          - {begin: .nan, end: 1, content: hi}
        """,
        "segments[0].begin",
        2,
        "must be a finite number",
    ),
    "begin-negative": (
        """
        segments:
          - {begin: -1, end: 1, content: hi}
        """,
        "segments[0].begin",
        2,
        "must be >= 0, got -1.0",
    ),
    "end-not-after-begin": (
        """
        segments:
          - {begin: 0, end: 1, content: a}
          - {begin: 1, end: 2, content: b}
          - begin: 3.0
            end: 2.5
            content: c
        """,
        "segments[2].end",
        5,
        "must be greater than begin (3.0), got 2.5",
    ),
    "end-equal-to-begin": (
        """
        segments:
          - {begin: 2, end: 2, content: a}
        """,
        "segments[0].end",
        2,
        "must be greater than begin (2.0), got 2.0",
    ),
    "end-missing": (
        """
        segments:
          - {begin: 0, content: hi}
        """,
        "segments[0]",
        2,
        "missing required key 'end'",
    ),
    "content-missing": (
        """
        segments:
          - {begin: 0, end: 1}
        """,
        "segments[0]",
        2,
        "missing required key 'content'",
    ),
    "content-blank": (
        """
        segments:
          - {begin: 0, end: 1, content: "   "}
        """,
        "segments[0].content",
        2,
        "must not be empty",
    ),
    "content-not-string": (
        """
        segments:
          - {begin: 0, end: 1, content: 42}
        """,
        "segments[0].content",
        2,
        "must be a string, got a number (42)",
    ),
    "partials-negative": (
        """
        segments:
          - {begin: 0, end: 1, content: hi, partials: -1}
        """,
        "segments[0].partials",
        2,
        "must be >= 0, got -1",
    ),
    "partials-over-cap": (
        f"""
        segments:
          - {{begin: 0, end: 1, content: hi, partials: {MAX_PARTIALS + 1}}}
        """,
        "segments[0].partials",
        2,
        f"must be at most {MAX_PARTIALS} (each partial is one more event",
    ),
    "partials-not-integer": (
        """
        segments:
          - {begin: 0, end: 1, content: hi, partials: 1.5}
        """,
        "segments[0].partials",
        2,
        "must be an integer, got a number (1.5)",
    ),
    "partial-texts-empty-list": (
        """
        segments:
          - {begin: 0, end: 1, content: hi, partials: []}
        """,
        "segments[0].partials",
        2,
        "is an empty list: give the partials' texts, or 0 for none",
    ),
    "partial-text-not-a-string": (
        """
        segments:
          - {begin: 0, end: 1, content: hi there, partials: [hi, 2]}
        """,
        "segments[0].partials[1]",
        2,
        "must be a string, got a number (2): quote it to keep it text",
    ),
    "partial-text-invisible": (
        """
        segments:
          - {begin: 0, end: 1, content: hi there, partials: ["\u200b"]}
        """,
        "segments[0].partials[0]",
        2,
        "must show a visible character: '\\u200b' holds only invisible characters and spaces",
    ),
    "partial-texts-over-cap": (
        f"""
        segments:
          - {{begin: 0, end: 1, content: hi, partials: {["x"] * (MAX_PARTIALS + 1)}}}
        """,
        "segments[0].partials",
        2,
        f"holds {MAX_PARTIALS + 1} texts: at most {MAX_PARTIALS} (each partial is one more event",
    ),
    "partials-of-one-character": (
        """
        segments:
          - {begin: 0, end: 1, content: " I ", partials: 2}
        """,
        "segments[0].partials",
        2,
        "content ' I ' is one character, so no partial text can come before it",
    ),
    "segment-begin-past-two-hours": (
        """
        segments:
          - {begin: 600, end: 3400, content: in seconds}
          - {begin: 7200, end: 9000, content: in milliseconds?}
        """,
        "segments[1].begin",
        3,
        "is 7200 s, past the 7200 s (2 hours) of audio a session can carry: the segment is "
        "never heard (times are in seconds, not milliseconds)",
    ),
    "segment-copied": (
        """
        segments:
          - {channel: 1, begin: 1, end: 2, content: Copied line.}
          - {channel: 1, begin: 1.0, end: 2.0, content: Copied line., partials: 0}
        """,
        "segments[1]",
        3,
        "is a copy of segments[0] (the same channel, begin, end and content): its final would "
        "reach the client twice; remove one",
    ),
    "fault-past-two-hours": (
        """
        faults:
          - {at: 7200.5, disconnect: true}
        """,
        "faults[0].at",
        2,
        "past the 7200 s (2 hours) of audio a session can carry: the fault never fires",
    ),
    "fault-after-the-first-exception": (
        """
        faults:
          - {at: 12, disconnect: true}
          - {at: 10.5, exception: internalFailureException, message: first}
          - {at: 10.5, exception: validationException, message: second}
        """,
        "faults[0].at",
        2,
        "never fires: the internalFailureException at 10.5 s (faults[1]) fails the session first",
    ),
    "fault-at-the-time-of-an-exception-listed-before-it": (
        """
        faults:
          - {at: 10.5, exception: internalFailureException, message: first}
          - {at: 10.5, disconnect: true}
        """,
        "faults[1].at",
        3,
        "never fires: the internalFailureException at 10.5 s (faults[0])",
    ),
    "segments-not-list": (
        """
        segments: {begin: 0}
        """,
        "segments",
        1,
        "must be a list, got a mapping",
    ),
    "segment-not-mapping": (
        """
        segments:
          - hello
        """,
        "segments[0]",
        2,
        "a segment must be a mapping, got a string ('hello')",
    ),
    "description-not-string": (
        """
        description: [a]
        """,
        "description",
        1,
        "must be a string, got a list",
    ),
    "fault-at-negative": (
        """
        faults:
          - {at: -0.5, disconnect: true}
        """,
        "faults[0].at",
        2,
        "must be >= 0, got -0.5",
    ),
    "fault-at-missing": (
        """
        faults:
          - {disconnect: true}
        """,
        "faults[0]",
        2,
        "missing required key 'at'",
    ),
    "fault-with-both": (
        """
        faults:
          - {at: 1, exception: validationException, disconnect: true}
        """,
        "faults[0]",
        2,
        "exactly one of 'exception' or 'disconnect', got both",
    ),
    "fault-with-neither": (
        """
        faults:
          - {at: 1, message: boom}
        """,
        "faults[0]",
        2,
        "exactly one of 'exception' or 'disconnect', got neither",
    ),
    "fault-unknown-exception": (
        """
        faults:
          - {at: 1, exception: InternalServerException}
        """,
        "faults[0].exception",
        2,
        "must be one of validationException, internalFailureException "
        "(did you mean 'internalFailureException'?), got 'InternalServerException'",
    ),
    "fault-disconnect-false": (
        """
        faults:
          - {at: 1, disconnect: false}
        """,
        "faults[0].disconnect",
        2,
        "must be true (omit it for an exception fault), got a boolean (false)",
    ),
    "fault-disconnect-with-a-message": (  # accepted and dropped, it told nobody
        """
        faults:
          - {at: 1, disconnect: true, message: the client should see this}
        """,
        "faults[0].message",
        2,
        "a disconnect has no message: the stream is reset and the client gets no exception "
        "(omit it, or script an exception fault instead)",
    ),
    "fault-message-not-string": (
        """
        faults:
          - {at: 1, exception: validationException, message: 7}
        """,
        "faults[0].message",
        2,
        "must be a string, got a number (7)",
    ),
    "fault-unknown-key": (
        """
        faults:
          - {at: 1, disconnect: true, after: 2}
        """,
        "faults[0].after",
        2,
        "unknown key 'after'; allowed: at, exception, disconnect, message",
    ),
    "top-level-not-mapping": (
        """
        - segments
        """,
        "",
        1,
        "a scenario must be a mapping, got a list",
    ),
    "duplicate-key": (
        """
        segments: []
        faults: []
        segments: []
        """,
        "segments",
        3,
        "duplicate key (first at line 1)",
    ),
    "yaml-syntax-error": (
        """
        segments:
          - {begin: 0, end: 1, content: "unterminated}
        """,
        "",
        3,
        "invalid YAML",
    ),
    "empty-file": (
        """
        # nothing here
        """,
        "",
        None,
        "the file is empty",
    ),
}


@pytest.mark.parametrize(("text", "field", "line", "fragment"), INVALID.values(), ids=INVALID)
def test_invalid_scenario_names_file_line_and_field(tmp_path, text, field, line, fragment):
    """Each validation rule reports its problem with the file, line and field."""
    path = _write(tmp_path, text)
    problems = _problems(path)
    found = [p for p in problems if p.field == field and fragment in p.message]
    assert found, [str(p) for p in problems]
    assert found[0].file == str(path)
    assert found[0].line == line


def test_partials_and_a_fault_time_exactly_at_their_limits_are_accepted(tmp_path):
    """50 partials, and a fault at 7200 s (the 2 hours a session can carry), are in
    bounds: only one partial more, or a fault past 7200 s, is a problem (above)."""
    path = _write(
        tmp_path,
        f"""
        segments:
          - {{begin: 0, end: 9, content: a sentence long enough to cut, partials: {MAX_PARTIALS}}}
        faults:
          - {{at: 7200, disconnect: true}}
        """,
    )
    scenario = load_scenario_file(path)
    assert scenario.segments[0].partials == MAX_PARTIALS == 50
    assert scenario.faults == (Fault(at=7200.0, disconnect=True),)


def test_only_an_exact_copy_of_a_segment_is_a_problem_not_an_overlap(tmp_path):
    """The same times on one channel with another content, or the same line on the
    other channel or at other times, are no copy: in single-channel use one channel
    carries both speakers. The copy names the first writing, not the nearest."""
    path = _write(
        tmp_path,
        """
        segments:
          - {begin: 1, end: 2, content: Hello.}
          - {begin: 1, end: 2, content: Hi.}
          - {begin: 1.5, end: 3, content: Hello.}
          - {channel: 1, begin: 1, end: 2, content: Hello.}
          - {begin: 1, end: 2.5, content: Hello.}
          - {begin: 1, end: 2, content: Hello., partials: 3}
          - {begin: 1, end: 2, content: Hello.}
        """,
    )
    problems = [(p.field, p.line, p.message.split(" (")[0]) for p in _problems(path)]
    assert problems == [
        ("segments[5]", 7, "is a copy of segments[0]"),
        ("segments[6]", 8, "is a copy of segments[0]"),
    ]


def test_a_segment_ending_past_two_hours_is_accepted_as_one_beyond_the_audio_is(tmp_path):
    """Its final is sent, its end cut to 7200 s, when the session ends at the limit
    (END_OF_SESSION with 7200 s of audio), as any segment under way at the end of
    the audio is. A segment begun past the limit is a problem, its begin's."""
    path = _write(
        tmp_path,
        """
        segments:
          - {begin: 7199, end: 9000, content: Over.}
          - {begin: 7300, end: 7301, content: Late.}
        """,
    )
    assert [p.field for p in _problems(path)] == ["segments[1].begin"]


def test_a_stored_script_keeps_its_copied_segment():
    """A session's script, accepted when it started, is not refused for what only an
    author is told of: it still plays."""
    copied = {"begin": 1, "end": 2, "content": "Twice."}
    data = {"segments": [copied, copied]}
    with pytest.raises(ScenarioError) as error:
        parse_scenario(data, name="x")
    assert [p.field for p in error.value.problems] == ["segments[1]"]
    assert len(parse_scenario(data, name="x", stored=True).segments) == 2


def test_scripted_partial_texts_are_kept_as_written_and_survive_a_round_trip():
    """A list of texts, revisions included, is the partials: as many as texts, even
    for a one-character content, and a stored script rebuilds the same segment."""
    data = {
        "segments": [
            {"begin": 0, "end": 2, "content": "The patient.", "partials": ["The pay", "The pa"]},
            {"begin": 3, "end": 4, "content": "I", "partials": ["Eye"]},
        ]
    }
    scenario = parse_scenario(data, name="x")
    first, second = scenario.segments
    assert (first.partials, first.partial_texts) == (2, ("The pay", "The pa"))
    assert (second.partials, second.partial_texts) == (1, ("Eye",))
    stored = {"segments": [segment.to_json() for segment in scenario.segments]}
    assert stored["segments"][0]["partials"] == ["The pay", "The pa"]
    assert parse_scenario(stored, name="x", stored=True).segments == scenario.segments


def test_problem_renders_as_file_line_field_message(tmp_path):
    """A problem reads `file:line: field: message`, as in the issue's example."""
    path = _write(
        tmp_path,
        """
        segments:
          - {begin: 0, end: 1, content: a}
          - {begin: 3.0, end: 2.5, content: b}
        """,
    )
    (problem,) = _problems(path)
    assert str(problem) == f"{path}:3: segments[1].end: must be greater than begin (3.0), got 2.5"


def test_every_problem_of_a_file_is_reported_one_per_line(tmp_path):
    """All problems of a file are collected, and the error message lists one per line."""
    path = _write(
        tmp_path,
        """
        extra: 1
        segments:
          - {channel: 5, begin: 0, end: 1, content: a}
          - {begin: 2, end: 1, content: ""}
        faults:
          - {at: 1}
        """,
    )
    with pytest.raises(ScenarioError) as info:
        load_scenario_file(path)
    fields = [p.field for p in info.value.problems]
    assert fields == [
        "extra",
        "segments[0].channel",
        "segments[1].end",
        "segments[1].content",
        "faults[0]",
    ]
    assert str(info.value).splitlines() == [str(p) for p in info.value.problems]
    assert isinstance(info.value, ConfigError)


def test_segments_are_sorted_by_begin_after_loading(tmp_path):
    """Segments given out of order come back sorted by begin, ties in file order."""
    path = _write(
        tmp_path,
        """
        segments:
          - {begin: 5, end: 6, content: c}
          - {begin: 0, end: 1, content: a}
          - {begin: 2, end: 3, content: b1}
          - {begin: 2, end: 4, content: b2, channel: 1}
        """,
    )
    scenario = load_scenario_file(path)
    assert [s.content for s in scenario.segments] == ["a", "b1", "b2", "c"]
    assert isinstance(scenario.segments, tuple)
    assert list(scenario.iter_segments()) == list(scenario.segments)


def test_loaded_scenario_is_named_after_file_stem_with_defaults(tmp_path):
    """A file's scenario is named after its stem; channel 0 and one partial by default."""
    path = _write(
        tmp_path,
        """
        description: demo
        segments:
          - {begin: 0, end: 1.5, content: hi}
        """,
        name="my-scenario.yml",
    )
    scenario = load_scenario_file(path)
    assert scenario == Scenario(
        name="my-scenario",
        description="demo",
        segments=(Segment(channel=0, begin=0.0, end=1.5, content="hi", partials=1),),
    )


def test_exception_fault_without_message_gets_a_default_message():
    """An exception fault without a message gets one naming the exception and time."""
    scenario = parse_scenario({"faults": [{"at": 2, "exception": "validationException"}]}, name="n")
    assert scenario.faults == (
        Fault(at=2.0, exception="validationException", message=scenario.faults[0].message),
    )
    assert "validationException" in scenario.faults[0].message


def test_inline_scenario_problems_raise_config_error_without_lines():
    """An invalid inline scenario raises a ConfigError naming `<inline>` and the field."""
    with pytest.raises(ConfigError) as info:
        parse_scenario({"segments": [{"begin": 1, "end": 0, "content": "x"}]}, name="inline")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == ("<inline>", None, "segments[0].end")
    assert str(problem) == "<inline>: segments[0].end: must be greater than begin (1.0), got 0.0"


def test_scenario_json_form_round_trips():
    """`Scenario.to_json()` parses back to an equal scenario."""
    scenario = load_scenario_file(FIXTURES / "scenarios" / "internal-failure-midstream.yaml")
    again = parse_scenario(scenario.to_json(), name=scenario.name)
    assert again == scenario


def test_json_scenario_file_loads_and_reports_lines(tmp_path):
    """JSON scenario files load, and their problems carry lines too."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"segments": [{"begin": 0, "end": 1, "content": "hi"}]}))
    assert load_scenario_file(good).segments[0].content == "hi"
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "segments": [\n    {"begin": 0, "end": 1, "content": ""}\n  ]\n}\n')
    (problem,) = _problems(bad)
    assert (problem.line, problem.field) == (3, "segments[0].content")


def test_invalid_json_reports_the_parser_line(tmp_path):
    """A JSON syntax error is reported with the line the parser gives."""
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "segments": [,]\n}\n')
    (problem,) = _problems(bad)
    assert problem.line == 2
    assert problem.message.startswith("invalid JSON")


def test_scenario_dir_collects_problems_of_all_files(tmp_path):
    """Loading a directory reports the problems of every file in one error."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    _write(folder, "segments: [{begin: 0, end: 1, content: ok}]\n", "good.yaml")
    _write(folder, "segments: [{begin: 1, end: 0, content: a}]\n", "bad1.yaml")
    _write(folder, "faults: [{at: -1, disconnect: true}]\n", "bad2.yml")
    with pytest.raises(ScenarioError) as info:
        load_scenario_dir(tmp_path)
    assert {(Path(p.file).name, p.field) for p in info.value.problems} == {
        ("bad1.yaml", "segments[0].end"),
        ("bad2.yml", "faults[0].at"),
    }


def _only_problem(tmp_path: Path, files: dict[str, str]):
    """The one problem load_scenario_dir finds in a scenarios folder holding ``files``."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name, text in files.items():
        _write(folder, text, name)
    with pytest.raises(ScenarioError) as info:
        load_scenario_dir(tmp_path)
    (problem,) = info.value.problems
    return problem


def test_scenario_dir_rejects_the_same_name_in_two_formats(tmp_path):
    """Two files with the same stem (x.yaml and x.json) are a problem."""
    files = {"x.json": '{"segments": []}\n', "x.yaml": "segments: []\n"}
    problem = _only_problem(tmp_path, files)
    assert "duplicate scenario name 'x'" in problem.message


def test_scenario_dir_refuses_a_file_taking_the_generated_visits_name(tmp_path):
    """`synthetic` is the generated visit, as the default and in rules: a file of that
    name could never be chosen, so it is a problem naming the file."""
    files = {"synthetic.yaml": "segments: []\n", "visit.yaml": "segments: []\n"}
    problem = _only_problem(tmp_path, files)
    assert Path(problem.file).name == "synthetic.yaml"
    assert "may not be named 'synthetic'" in problem.message and "rename" in problem.message


def test_scenario_dir_reads_only_scenario_files(tmp_path):
    """Other files are ignored; a missing scenarios folder gives no scenarios."""
    assert load_scenario_dir(tmp_path) == {}
    folder = tmp_path / "scenarios"
    folder.mkdir()
    _write(folder, "not a scenario", "README.md")
    _write(folder, "segments: []\n", "quiet.yaml")
    assert list(load_scenario_dir(tmp_path)) == ["quiet"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channel": 2, "begin": 0, "end": 1, "content": "x"},
        {"begin": 1, "end": 1, "content": "x"},
        {"begin": 0, "end": 1, "content": " "},
        {"begin": 0, "end": 1, "content": "x", "partials": -1},
    ],
    ids=["channel", "end-before-begin", "blank-content", "negative-partials"],
)
def test_segment_built_in_code_rejects_impossible_values(kwargs):
    """Segment refuses values no loader would accept."""
    with pytest.raises(ValueError):
        Segment(**kwargs)


def test_fault_built_in_code_needs_exactly_one_action():
    """Fault refuses both or neither of exception and disconnect."""
    with pytest.raises(ValueError):
        Fault(at=1, exception="validationException", disconnect=True)
    with pytest.raises(ValueError):
        Fault(at=1)


def test_scenario_built_in_code_sorts_segments_and_faults():
    """A Scenario built in code keeps segments by begin and faults by at."""
    scenario = Scenario(
        name="n",
        segments=(Segment(begin=3, end=4, content="b"), Segment(begin=1, end=2, content="a")),
        faults=(Fault(at=5, disconnect=True), Fault(at=1, exception="validationException")),
    )
    assert [s.content for s in scenario.segments] == ["a", "b"]
    assert [f.at for f in scenario.faults] == [1, 5]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shipped() -> dict[str, Scenario]:
    return load_scenario_dir(FIXTURES)


def test_every_shipped_fixture_loads_with_a_description(shipped):
    """Every file in fixtures/scenarios loads and describes itself."""
    files = {p.stem for p in (FIXTURES / "scenarios").iterdir() if p.suffix in (".yaml", ".json")}
    assert set(shipped) == files
    assert {
        "primary-care-visit",
        "telehealth-two-channel",
        "internal-failure-midstream",
        "disconnect-midstream",
    } <= files
    assert all(s.description for s in shipped.values())


def test_primary_care_fixture_is_one_channel_of_60_to_90_seconds(shipped):
    """primary-care-visit: single channel, 60-90 s, several segments with partials."""
    scenario = shipped["primary-care-visit"]
    assert {s.channel for s in scenario.segments} == {0}
    assert 60 <= scenario.segments[-1].end <= 90
    assert sum(s.partials >= 2 for s in scenario.segments) >= 3
    assert scenario.faults == ()


def test_telehealth_fixture_uses_both_channels_with_overlap(shipped):
    """telehealth-two-channel: both channels, and speech overlapping across them."""
    segments = shipped["telehealth-two-channel"].segments
    assert {s.channel for s in segments} == {0, 1}
    overlaps = [
        (a, b)
        for a in segments
        for b in segments
        if a.channel != b.channel and a.begin < b.begin < a.end
    ]
    assert overlaps


def test_internal_failure_fixture_fails_at_about_ten_seconds(shipped):
    """internal-failure-midstream: segments before an internalFailureException near 10 s."""
    scenario = shipped["internal-failure-midstream"]
    (fault,) = scenario.faults
    assert fault.exception == "internalFailureException" and 8 <= fault.at <= 12
    assert sum(s.end <= fault.at for s in scenario.segments) >= 2


def test_disconnect_fixture_resets_midstream(shipped):
    """disconnect-midstream: segments, then a disconnect fault."""
    scenario = shipped["disconnect-midstream"]
    (fault,) = scenario.faults
    assert fault.disconnect and fault.exception is None
    assert any(s.end <= fault.at for s in scenario.segments)


def test_a_one_character_segment_gets_no_partial_by_default(tmp_path: Path) -> None:
    """A partial is a shorter, non-blank prefix of its final: "I" has none, so the
    default of one partial does not apply to it (an explicit one is a problem)."""
    path = tmp_path / "one.yaml"
    path.write_text(
        "segments:\n  - {begin: 0, end: 1, content: I}\n  - {begin: 1, end: 2, content: Ok}\n"
    )
    scenario = load_scenario_file(path)
    assert [segment.partials for segment in scenario.segments] == [0, 1]


@pytest.mark.parametrize(
    ("content", "partials", "first_partial"),
    [
        ("\U0001f44d\U0001f3fd", 0, None),  # thumbs up, a skin tone: one character
        ("\U0001f1fa\U0001f1f8", 0, None),  # a flag: two regional indicators
        ("e\u0301", 0, None),  # e and a combining accent
        ("\u200bx", 0, None),  # a zero-width space, then one letter
        ("\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7", 1, "\U0001f1fa\U0001f1f8"),  # flags
        ("e\u0301te\u0301", 1, "e\u0301"),  # the partial keeps its accent
        (
            "\U0001f468\u200d\U0001f469\u200d\U0001f467x",
            1,
            "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        ),
        ("\u0e19\u0e49\u0e33\u0e19\u0e49\u0e33", 1, "\u0e19\u0e49\u0e33"),  # Thai, SARA AM
        ("\u1112\u1161\u11ab\u1112\u1161\u11ab", 1, "\u1112\u1161\u11ab"),  # Hangul jamo
    ],
    ids=[
        "skin-tone",
        "flag",
        "accent",
        "zero-width",
        "two-flags",
        "accented",
        "family",
        "thai",
        "hangul-jamo",
    ],
)
def test_a_partial_is_cut_between_characters_as_a_reader_sees_them(
    tmp_path: Path, content: str, partials: int, first_partial: str | None
) -> None:
    """Partials were cut by code point: "\U0001f1fa" of a flag, a thumb without its
    skin tone, "e" without its accent, a partial of only a zero-width space; and
    such a one-character content got a partial by default."""
    from emulator.session import _prefix

    path = tmp_path / "one.json"
    path.write_text(json.dumps({"segments": [{"begin": 0, "end": 1, "content": content}]}))
    (segment,) = load_scenario_file(path).segments
    assert segment.partials == partials
    if first_partial is not None:
        assert _prefix(content, 1, 1) == first_partial


def test_note_indexes_count_every_segment_written_even_one_with_problems(tmp_path):
    """A note index is into the file's segments: one bad segment is its own problem,
    not also an index "out of range" for the next segment's (which named a count of
    2 for a file of 3); with no segments the message says there are none."""
    path = _write(
        tmp_path,
        """
        segments:
          - {begin: 0, end: -1, content: a}
          - {begin: 1, end: 2, content: b}
          - {begin: 2, end: 3, content: c}
        note:
          PLAN: [{text: Rest., segments: [2]}]
        """,
    )
    assert [(p.field, p.line) for p in _problems(path)] == [("segments[0].end", 2)]
    path = _write(
        tmp_path,
        """
        faults: [{at: 1, disconnect: true}]
        note:
          PLAN: [{text: Rest., segments: [0]}]
        """,
    )
    [problem] = _problems(path)
    assert problem.field == "note.PLAN[0].segments[0]"
    assert problem.message == (
        "must be the index of one of the scenario's segments, but it has none, got 0"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "segments:\n  - {begin: 0, end: 1, content: Yes}\n",
            2,
            "segments[0].content: must be a string, got a boolean (true): YAML reads an "
            "unquoted yes, no, on, off, true or false as a boolean; quote the text, as in "
            'content: "Yes"',
        ),
        (
            "segments:\n  - {begin: 0, end: 1, content: 98.6}\n",
            2,
            "segments[0].content: must be a string, got a number (98.6): quote it to keep it text",
        ),
        (
            "segments:\n  - {begin: 0, end: 1, content: 2024-01-01}\n",
            2,
            "segments[0].content: must be a string, got a date (2024-01-01): quote it to keep "
            "it text",
        ),
    ],
    ids=["yes", "number", "date"],
)
def test_text_yaml_reads_as_another_type_is_told_to_be_quoted(tmp_path, text, line, message):
    path = tmp_path / "a.yaml"
    path.write_text(text)
    [problem] = _problems(path)
    assert (problem.line, f"{problem.field}: {problem.message}") == (line, message)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("content", True, "must be a string, got a boolean (true): quote it to keep it text"),
        ("content", 120, "must be a string, got a number (120): quote it to keep it text"),
        (
            "end",
            "1e3",
            "must be a number, got a string ('1e3') (it is quoted: write the number without "
            "quotes)",
        ),
    ],
    ids=["boolean", "number", "e-notation"],
)
def test_json_is_given_json_hints_not_yamls(tmp_path, field, value, message):
    """An inline scenario posted as JSON, or a .json file, was told how YAML reads an
    unquoted yes or 1e3: JSON reads both as the text they are."""
    segment = {"begin": 0, "end": 1, "content": "hi", field: value}
    with pytest.raises(ScenarioError) as inline:
        parse_scenario({"segments": [segment]}, name="x")
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"segments": [segment]}))
    for problems in (inline.value.problems, _problems(path)):
        [problem] = problems
        assert (problem.field, problem.message) == (f"segments[0].{field}", message)


@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (
            "segments:\n  - {begin: 0, end: 1, content: caf\u00e9}\n".encode("latin-1"),
            2,
            "is not UTF-8: byte 0xe9 cannot be read as UTF-8 (save the file as UTF-8)",
        ),
        (
            "segments: []\n".encode("utf-16"),
            None,
            "is UTF-16 text: save it as UTF-8",
        ),
        (
            "segments: []\n".encode("utf-16-le"),  # no byte order mark
            1,
            "invalid YAML: holds NUL characters: if it is UTF-16 text, save it as UTF-8",
        ),
        (
            b'segments:\n  - {begin: 0, end: 1, content: "a\x01b"}\n',
            2,
            "invalid YAML: character U+0001 is not allowed in YAML (a control character or "
            "a noncharacter): remove it, or write it as an escape in a double-quoted string",
        ),
    ],
    ids=["latin-1", "utf-16", "utf-16-without-a-mark", "control-character"],
)
def test_an_unreadable_file_is_one_problem_with_its_line_saying_what_to_do(
    tmp_path, data, line, message
):
    """Once the codec's words with a byte offset, or YAML's over two lines with a
    character position: one line each, on the line of the culprit."""
    path = tmp_path / "a.yaml"
    path.write_bytes(data)
    [problem] = _problems(path)
    assert (problem.line, problem.field, problem.message) == (line, "", message)
    assert "\n" not in str(problem)


def test_a_json_file_with_an_escaped_emoji_keeps_its_line_numbers(tmp_path):
    """json.dump escapes an emoji as a surrogate pair, which YAML (where the lines come
    from) cannot read: the problems then had no line."""
    path = tmp_path / "a.json"
    path.write_text(
        '{"segments": [\n  {"begin": 0, "end": 1, "content": "\\ud83d\\ude00"},\n'
        '  {"begin": 3, "end": 2, "content": "b"}\n]}\n'
    )
    [problem] = _problems(path)
    assert (problem.line, problem.field) == (3, "segments[1].end")


def test_a_json_text_with_half_a_surrogate_pair_is_a_problem_naming_it(tmp_path):
    """check passed it, and the transcript artifact then failed to encode it."""
    path = tmp_path / "a.json"
    path.write_text('{"segments": [\n  {"begin": 0, "end": 1, "content": "Hi \\ud83d there"}\n]}\n')
    [problem] = _problems(path)
    assert (problem.line, problem.field) == (2, "segments[0].content")
    assert problem.message == (
        "holds half of a UTF-16 surrogate pair (\\ud83d): write the character itself, "
        "or both halves of its pair"
    )


def test_a_byte_order_mark_is_read_past_in_json_and_yaml(tmp_path):
    for name, text in [("a.json", '{"segments": []}'), ("b.yaml", "segments: []\n")]:
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert load_scenario_file(path).segments == ()


def test_a_stored_script_rebuilds_without_the_checks_that_only_help_an_author():
    """A session's script is stored as accepted, perhaps by an earlier version: one
    with a one-character segment written with the then default of one partial, or a
    fault after the exception (README's own example until today), must still rebuild
    for its artifacts and a resumed stream; a new file or rule with them is refused."""
    script = {
        "segments": [{"channel": 0, "begin": 0.0, "end": 1.0, "content": "A", "partials": 1}],
        "faults": [
            {"at": 10.0, "exception": "internalFailureException", "message": "x"},
            {"at": 20.0, "disconnect": True},
            {"at": 9000.0, "disconnect": True},
        ],
    }
    with pytest.raises(ScenarioError) as info:
        parse_scenario(script, name="new")
    assert len(info.value.problems) == 4
    scenario = parse_scenario(script, name="stored", stored=True)
    assert scenario.segments[0].partials == 0 and len(scenario.faults) == 3


def test_a_scenario_file_name_that_is_not_utf8_is_a_problem(tmp_path):
    """Its name is the scenario's, in rules, sessions and listings: one no JSON can carry
    made the admin API's session list a 500 for every client."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "visit\udcff.yaml").write_text("segments: []\n")
    (folder / "fine.yaml").write_text("segments: []\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario_dir(tmp_path)
    [problem] = info.value.problems
    assert problem.message == "the file name is not UTF-8: rename the file"
    assert str(problem).encode("utf-8").endswith(b"visit\\udcff.yaml: " + problem.message.encode())


def test_problems_naming_half_a_surrogate_pair_print(tmp_path):
    """A JSON key with an escaped half pair: check died printing its problem."""
    path = tmp_path / "a.json"
    path.write_text('{"segments": [{"begin": 0, "end": 1, "content": "a", "partia\\ud800ls": 1}]}')
    [problem] = _problems(path)
    assert "partia\\ud800ls" in str(problem)
    str(problem).encode("utf-8")  # printable


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.json", '{"segments": []}'.encode("utf-16-le"), "invalid JSON: holds NUL characters"),
        ("a.yaml", "segments: []\n".encode("utf-32"), "is UTF-32 text: save it as UTF-8"),
    ],
    ids=["json-utf-16-without-a-mark", "utf-32"],
)
def test_other_encodings_are_named(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    [problem] = _problems(path)
    assert problem.message.startswith(message)


def test_a_content_whose_result_could_not_be_sent_is_a_problem(tmp_path: Path) -> None:
    """Past the event-stream limit (24 MiB), the emulator could not encode the
    segment's transcript event, and every session with it failed with a
    validationException blaming the client's input."""
    path = tmp_path / "huge.json"
    content = "a" * (16 * 1024 * 1024)  # the SDK reads no payload past 16 MiB
    path.write_text(json.dumps({"segments": [{"begin": 0, "end": 1, "content": content}]}))
    (problem,) = _problems(path)
    assert problem.field == "segments[0].content"
    assert problem.message.startswith(f"is {len(content)} characters, about ")
    assert "-byte payload the SDK's decoder reads, so no client could take its result" in (
        problem.message
    )


def test_the_session_and_the_data_model_load_without_the_yaml_parser():
    """The sans-IO session imports the scenario data model; only the file reader
    (emulator.documents) imports yaml, so the session never loads it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    code = "import sys, emulator.session, emulator.scenario; print('yaml' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "False"


def test_names_moved_out_of_the_scenario_module_are_still_importable_from_it():
    """Every name the split moved to graphemes or problems is the same object in
    emulator.scenario, and listed in its __all__ (the file reader's are
    emulator.documents' alone: importing them here would load yaml)."""
    import emulator.documents
    import emulator.graphemes
    import emulator.problems
    import emulator.scenario

    for name in emulator.documents.__all__:
        assert name not in emulator.scenario.__all__, name
    for module in (emulator.graphemes, emulator.problems):
        for name in module.__all__:
            if name in ("render_path", "number_text", "counted"):
                continue  # from emulator.problems only (the last two came after the split)
            assert getattr(emulator.scenario, name) is getattr(module, name), name
            assert name in emulator.scenario.__all__, name
    with pytest.raises(AttributeError, match="no attribute 'read_documents'"):
        emulator.scenario.read_documents  # noqa: B018


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("visit.yaml", "visit"),
        ("Visit.YML", "visit"),
        ("VISIT", "visit"),
        ("vist", "visit"),
        ("followup.v3", "followup.v2"),  # no file suffix: the nearest spelling
        ("followup.JSON", "followup"),
        ("nothing-like-it", None),
    ],
)
def test_the_scenario_meant_by_an_unknown_name(given, meant):
    """Only a scenario file's suffix is dropped: ``followup.v3`` was taken for
    ``followup``, where ``followup.v2`` is nearer."""
    assert meant_scenario(given, ["visit", "followup", "followup.v2"]) == meant


def test_the_suffixes_a_meant_name_drops_are_the_scenario_files_ones():
    from emulator import scenario
    from emulator.documents import SCENARIO_SUFFIXES

    assert scenario.SCENARIO_SUFFIXES == SCENARIO_SUFFIXES
