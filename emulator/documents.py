"""Documents: YAML and JSON files read into data, with the line of every field.

:func:`read_document` reads one file for any validator (scenarios, rules,
resources), filling its :class:`~emulator.problems.Checker`'s line map and
reporting what cannot be read (not UTF-8, invalid YAML or JSON, duplicate keys)
as problems. :func:`load_scenario_file` and :func:`load_scenario_dir` read
scenario files into :class:`~emulator.scenario.Scenario` s. The only module
that imports ``yaml``: the data model and the session do not need the parser.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .problems import Checker, FieldPath, Problem, ScenarioError, render_path
from .scenario import RESERVED_NAME, Scenario, scenario_name, validate_scenario
from .validation import SURROGATE_ESCAPE

__all__ = [
    "SCENARIO_SUFFIXES",
    "read_document",
    "load_scenario_file",
    "load_scenario_dir",
]

#: File suffixes :func:`load_scenario_dir` reads, in the order it prefers them.
SCENARIO_SUFFIXES = (".yaml", ".yml", ".json")


class _Walk:
    """What :func:`_walk` has seen: every node it has descended into.

    An alias (``*name``) is the same node as its anchor: its lines are recorded
    once, under the path that reached it first, and a later path through it
    gets the alias's own line. Walking every path instead let a few hundred
    bytes of aliases of aliases name billions of values, and take gigabytes.
    """

    def __init__(self) -> None:
        self.walked: set[int] = set()


def _walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    dupes: list[tuple[int, FieldPath, str]],
    walk: _Walk,
) -> None:
    """Record the 1-based line of every key and item under ``node``, and duplicate keys
    (each node once: see :class:`_Walk`)."""
    if id(node) in walk.walked:  # an alias of a node walked already (or recursive)
        return
    walk.walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dupes.append((line, (*path, key), f"duplicate key (first at line {seen[key]})"))
            else:
                seen[key] = line
                lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, dupes, walk)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, dupes, walk)


#: libyaml's parser when PyYAML has it: twice as fast on a large fixture. Its
#: errors are terser, so a file it refuses is parsed again by the pure-Python
#: one to say why (see :func:`_yaml_problem`).
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(
    text: str, loader_class: type[yaml.SafeLoader] = _FAST_LOADER
) -> tuple[yaml.Node | None, yaml.SafeLoader]:
    loader = loader_class(text)
    return loader.get_single_node(), loader


def _yaml_problem(text: str, error: Exception) -> Exception:
    """The pure-Python parser's account of ``error`` in ``text`` (its messages
    say what was expected and what was found), or ``error`` itself."""
    if _FAST_LOADER is yaml.SafeLoader:
        return error
    try:
        node, loader = _compose(text, yaml.SafeLoader)
        try:
            if node is not None:
                loader.construct_document(node)
        finally:
            loader.dispose()
    except (yaml.YAMLError, ValueError) as pure:
        return pure
    return error


def read_document(path: Path, checker: Checker) -> tuple[bool, object]:
    """Read a YAML or JSON file; return ``(ok, data)`` and fill ``checker.lines``.

    Unreadable or unparsable files add a problem (with the parser's line) and
    return ``(False, None)``. Files ending ``.json`` are parsed as JSON; lines
    then come from YAML's composer when it can read the text, else are absent.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        checker.add((), f"cannot read file: {exc}")
        return False, None
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark is no part of the text
    except UnicodeDecodeError as exc:
        checker.problems.append(_not_utf8(checker.source, raw, exc))
        return False, None
    checker.yaml = path.suffix.lower() != ".json"
    try:
        return _read_text(path, text, checker)
    except RecursionError:
        checker.add((), "nested too deeply (hundreds of levels): flatten it")
    return False, None


def _not_utf8(source: str, raw: bytes, error: UnicodeDecodeError) -> Problem:
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return Problem(file=source, line=None, field="", message="is UTF-32 text: save it as UTF-8")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Problem(file=source, line=None, field="", message="is UTF-16 text: save it as UTF-8")
    line = raw.count(b"\n", 0, error.start) + 1
    return Problem(
        file=source,
        line=line,
        field="",
        message=f"is not UTF-8: byte 0x{raw[error.start]:02x} cannot be read as UTF-8 "
        "(save the file as UTF-8)",
    )


def _reader_problem(text: str, error: yaml.reader.ReaderError) -> tuple[int, str]:
    """The line and one-line account of a character YAML does not allow."""
    line = text.count("\n", 0, error.position) + 1
    code = error.character if isinstance(error.character, int) else ord(error.character)
    if code == 0:
        return line, "holds NUL characters: if it is UTF-16 text, save it as UTF-8"
    return line, (
        f"character U+{code:04X} is not allowed in YAML (a control "
        "character or a noncharacter): remove it, or write it as an escape in a "
        "double-quoted string"
    )


def _surrogate_escape_problem(text: str, index: int) -> str | None:
    """Why the escape at ``index`` (where libyaml stops, after its ``\\u``) is
    refused when it is half of a UTF-16 surrogate pair, or None: JSON's escape
    of an astral character (as ``json.dumps`` writes 😀), which YAML 1.1 does
    not read; the parser's own message said neither which escape nor what to
    write instead.
    """
    first = SURROGATE_ESCAPE.search(text, max(0, index - 2), index + 6)
    if first is None:
        return None
    high = int(first.group()[2:], 16)
    second = SURROGATE_ESCAPE.match(text, first.end())
    low = int(second.group()[2:], 16) if second else 0
    if high < 0xDC00 and second and low >= 0xDC00:
        code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        return (
            f"holds JSON's escape of U+{code:04X} as a UTF-16 surrogate pair "
            f"({first.group()}{second.group()}), which YAML does not read: write the "
            f"character itself, or \\U{code:08X}"
        )
    return (
        f"holds half of a UTF-16 surrogate pair ({first.group()}), which YAML does not "
        "read: write the character itself, or its escape as \\U and eight hex digits"
    )


def _read_text(path: Path, text: str, checker: Checker) -> tuple[bool, object]:
    lines: dict[FieldPath, int] = {}
    dupes: list[tuple[int, FieldPath, str]] = []
    data: object = None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            nul = "\0" in text
            checker.problems.append(
                Problem(
                    file=checker.source,
                    line=None if nul else exc.lineno,
                    field="",
                    message="invalid JSON: holds NUL characters: if it is UTF-16 text, save it "
                    "as UTF-8"
                    if nul
                    else f"invalid JSON: {exc.msg}",
                )
            )
            return False, None
        try:
            # Lines only: an emoji escaped as a surrogate pair (as json.dump writes
            # it) is valid JSON that YAML cannot read, so it is read as another
            # character here; the data is json.loads's.
            node, loader = _compose(SURROGATE_ESCAPE.sub(r"\\u0078", text))
            loader.dispose()
        except yaml.YAMLError:
            node = None  # valid JSON that YAML 1.1 cannot read: report without lines
        if node is not None:
            lines[()] = node.start_mark.line + 1
            _walk(node, (), lines, dupes, _Walk())
    else:
        try:
            node, loader = _compose(text)
            try:
                if node is not None:
                    # Walk before constructing: the constructor flattens merge keys in place.
                    lines[()] = node.start_mark.line + 1
                    _walk(node, (), lines, dupes, _Walk())
                    data = loader.construct_document(node)
            finally:
                loader.dispose()
        except (yaml.YAMLError, ValueError) as error:
            # ValueError: an explicit tag the value cannot satisfy, such as !!int "x".
            problem = _yaml_problem(text, error)
            line: int | None
            if isinstance(problem, yaml.reader.ReaderError):
                line, reason = _reader_problem(text, problem)
            else:
                mark = getattr(problem, "problem_mark", None) or getattr(
                    problem, "context_mark", None
                )
                line = None if mark is None else mark.line + 1
                reason = getattr(problem, "problem", None) or str(problem)
                if reason == "found invalid Unicode character escape code" and mark is not None:
                    reason = _surrogate_escape_problem(text, mark.index) or reason
            checker.problems.append(
                Problem(file=checker.source, line=line, field="", message=f"invalid YAML: {reason}")
            )
            return False, None
    checker.lines = lines
    for line, where, message in dupes:
        checker.problems.append(
            Problem(file=checker.source, line=line, field=render_path(where), message=message)
        )
    return True, data


# --------------------------------------------------------------------------- scenario files


def _load(path: Path, checker: Checker, name: str | None = None) -> Scenario | None:
    before = len(checker.problems)
    ok, data = read_document(path, checker)
    if not ok:
        return None
    if data is None:
        checker.add(
            (),
            "the file is empty: write the scenario's 'segments' and 'faults' (or '{}' for a "
            "session that hears nothing)",
        )
        return None
    # Duplicate keys found while reading are problems too, so count from before it.
    scenario = validate_scenario(
        data, name=scenario_name(path.stem) if name is None else name, checker=checker
    )
    return scenario if len(checker.problems) == before else None


def load_scenario_file(path: str | Path) -> Scenario:
    """Load one scenario file (YAML, or JSON by ``.json`` suffix), named after its
    stem (in NFC, see :func:`scenario_name`).

    Raises :class:`ScenarioError` listing every problem with file, line and field.
    """
    path = Path(path)
    checker = Checker(str(path))
    scenario = _load(path, checker)
    if scenario is None:
        raise ScenarioError(checker.problems)
    return scenario


def load_scenario_dir(directory: str | Path) -> dict[str, Scenario]:
    """Load every ``*.yaml``/``*.yml``/``*.json`` in ``<directory>/scenarios/``, by name.

    A name is its file's stem in NFC (see :func:`scenario_name`). Returns ``{}``
    when there is no ``scenarios`` folder. Problems of all files (including two
    files with the same name, or names that differ only in normalisation) are
    collected and raised together as one :class:`ScenarioError`.
    """
    folder = Path(directory) / "scenarios"
    if not folder.is_dir():
        return {}
    scenarios: dict[str, Scenario] = {}
    origin: dict[str, Path] = {}
    problems: list[Problem] = []
    entries = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in SCENARIO_SUFFIXES and not p.name.startswith(".")
    )
    files = [p for p in entries if p.is_file()]
    for path in entries:
        if not path.is_file():  # a directory named like a scenario file: not one
            checker = Checker(str(path))
            checker.add((), "is not a file: a scenario is one file in scenarios/")
            problems.extend(checker.problems)
    for path in files:
        checker = Checker(str(path))
        try:
            path.stem.encode("utf-8")
        except UnicodeEncodeError:
            # Its name would be the scenario's, in every rule, session and
            # listing: one that no JSON can carry broke the admin API's.
            checker.add((), "the file name is not UTF-8: rename the file")
            problems.extend(checker.problems)
            continue
        name = scenario_name(path.stem)
        if name in origin:
            other = origin[name]
            why = ""
            if other.stem != path.stem:
                # Shown escaped: on screen the two names look the same.
                why = (
                    f" (the file names {ascii(path.name)} and {ascii(other.name)} differ only "
                    "in Unicode normalisation, and a scenario name is matched in NFC: remove "
                    "or rename one)"
                )
            checker.add((), f"duplicate scenario name {name!r}: also defined by {other}{why}")
            problems.extend(checker.problems)
            continue
        origin[name] = path
        if name == RESERVED_NAME:
            checker.add(
                (),
                f"a scenario may not be named {RESERVED_NAME!r}: that name is the generated "
                "visit's (the default scenario, and what rules name it by); rename the file",
            )
            problems.extend(checker.problems)
            continue
        scenario = _load(path, checker, name)
        problems.extend(checker.problems)
        if scenario is not None:
            scenarios[scenario.name] = scenario
    if problems:
        raise ScenarioError(problems)
    return scenarios
