"""Documents: YAML and JSON files read into data, with the line of every field.

:func:`read_document` reads one file for any validator (scenarios, rules,
resources), filling its :class:`~emulator.problems.Checker`'s line map and
reporting what cannot be read (not UTF-8, invalid YAML or JSON, duplicate keys)
as problems, and recording how each text value was written (quoted, plain or a
block scalar) for the hints. YAML is read as PyYAML's YAML 1.1 but for
integers with a leading zero, which are decimal (``010`` is 10), as in YAML 1.2,
and keep the text they were written as (a :class:`~emulator.problems.PaddedInt`):
a text field written ``0800``, which YAML 1.1 read as text, still reads as that.
:func:`load_scenario_file` and :func:`load_scenario_dir` read scenario files into
:class:`~emulator.scenario.Scenario` s. The only module that imports ``yaml``: the
data model and the session do not need the parser.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from .problems import (
    Checker,
    FieldPath,
    PaddedInt,
    Problem,
    ScenarioError,
    render_path,
    shown,
)
from .scenario import (
    RESERVED_NAME,
    SCENARIO_SUFFIXES,
    Scenario,
    scenario_name,
    validate_scenario,
)
from .validation import SURROGATE_ESCAPE

__all__ = [
    "SCENARIO_SUFFIXES",
    "read_document",
    "load_scenario_file",
    "load_scenario_dir",
    "scenario_files",
]


class _Walk:
    """What :func:`_walk` has seen: every node it has descended into, the style
    each text value was written in (see :attr:`Checker.styles`), and the mappings
    written in flow style (see :attr:`Checker.flow`).

    An alias (``*name``) is the same node as its anchor: its lines are recorded
    once, under the path that reached it first, and a later path through it
    gets the alias's own line. Walking every path instead let a few hundred
    bytes of aliases of aliases name billions of values, and take gigabytes.
    """

    def __init__(self, text: str) -> None:
        self.walked: set[int] = set()
        self.text = text
        self.styles: dict[FieldPath, str] = {}
        self.flow: set[FieldPath] = set()


_STR_TAG = "tag:yaml.org,2002:str"

#: A block scalar's header: ``|`` or ``>``, then its chomping (``-`` strips the
#: final line break, ``+`` keeps every one, none keeps one) and indentation
#: indicators, in either order.
_BLOCK_HEADER = re.compile(r"[|>][-+1-9]{0,2}")

#: A node's properties, an anchor and a tag in either order, each followed by
#: white space; group 1 is the tag (``!!str``, ``!<tag:yaml.org,2002:str>``).
_PROPERTIES = re.compile(r"(?:&\S+\s+)?(?:(!\S*)\s+)?(?:&\S+\s+)?")


def _style(node: yaml.ScalarNode, text: str) -> str:
    """How a text value was written: ``""`` plain, a quote, a block scalar's header,
    or, for a plain one, the tag that makes it text (``!!str``)."""
    style = node.style or ""  # libyaml says "" for plain, PyYAML None
    if not style:
        # The node keeps no tag as written: read it from the source. Its mark is at
        # its anchor or tag if it has one; a plain value itself starts with neither.
        properties = _PROPERTIES.match(text, node.start_mark.index)
        if properties is not None and properties.group(1):
            return properties.group(1)
    if style in ("|", ">"):
        # The node keeps no chomping indicator: read the header from the source.
        # Its mark is at the node's tag or anchor if it has one, before the header.
        header = _BLOCK_HEADER.search(text, node.start_mark.index)
        if header is not None:
            return header.group()
    return style


def _walk(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    dupes: list[tuple[int, FieldPath, str]],
    walk: _Walk,
) -> None:
    """Record the 1-based line of every key and item under ``node``, duplicate keys,
    and the style of every text value (each node once: see :class:`_Walk`)."""
    if id(node) in walk.walked:  # an alias of a node walked already (or recursive)
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
            walk.styles.setdefault(path, "*" + _style(node, walk.text))
        return
    walk.walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        if node.flow_style:
            walk.flow.add(path)
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
    elif isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        walk.styles[path] = _style(node, walk.text)


_INT_TAG = "tag:yaml.org,2002:int"

#: PyYAML's YAML 1.1 integer, but for ``0[0-7_]+`` (octal): any run of digits is
#: decimal, as in YAML 1.2. An author zero-pads times to line columns up
#: (``begin: 010``), and 1.1 played that at 8 s, and read ``08`` as text.
_INT_RESOLVER = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?[0-9][0-9_]*
    |[-+]?0x[0-9a-fA-F_]+
    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""",
    re.X,
)


class _TooManyDigits(ValueError):
    """An integer of more digits than ``int()`` reads: said so, with the limit,
    rather than Python's advice to raise it (``sys.set_int_max_str_digits()``).
    ``digits`` is None for one written in hex, octal or binary (not counted)."""

    def __init__(self, digits: int | None) -> None:
        limit = sys.get_int_max_str_digits()
        count = f"more than {limit}" if digits is None else str(digits)
        super().__init__(f"a number of {count} digits: numbers of at most {limit} digits are read")


class _TooManyDigitsInYaml(yaml.constructor.ConstructorError):
    """:class:`_TooManyDigits` in a YAML file, with its place."""


def _json_int(text: str) -> int:
    """``json.loads``'s ``parse_int``, raising :class:`_TooManyDigits`."""
    digits = len(text) - text.startswith("-")
    if digits > sys.get_int_max_str_digits():
        raise _TooManyDigits(digits)
    return int(text)


#: A JSON string or a number: where an integer too long is (not in a string,
#: nor a float's fraction or exponent).
_STRING_OR_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?')


def _line_of_long_number(text: str) -> int | None:
    """The line of the first number in JSON ``text`` past ``int()``'s digits
    (runs of digits inside strings skipped), or None."""
    limit = sys.get_int_max_str_digits()
    for found in _STRING_OR_NUMBER.finditer(text):
        token = found[0].lstrip("-")
        if token[:1].isdigit() and token.isdigit() and len(token) > limit:
            return text.count("\n", 0, found.start()) + 1
    return None


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A zero-padded integer in decimal, keeping its text (a :class:`PaddedInt`);
    any other as YAML 1.1 reads it (``0b``, ``0x``, sexagesimal ``1:30``). One of
    more decimal digits than ``int()`` reads or writes is refused with its place:
    written in hex or binary, it is read, but no message could show it."""
    written = loader.construct_scalar(node)
    text = written.replace("_", "")
    digits = text[1:] if text[:1] in ("+", "-") else text
    limit = sys.get_int_max_str_digits()
    if len(digits) > limit and digits.isdigit():
        raise _TooManyDigitsInYaml(None, None, str(_TooManyDigits(len(digits))), node.start_mark)
    if len(digits) > 1 and digits[0] == "0" and digits.isascii() and digits.isdigit():
        return PaddedInt.read(written)
    try:
        value: int = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except ValueError as error:  # a part of 1:30 past the digits: int() refused it
        if "Exceeds the limit" not in str(error):
            raise
        raise _TooManyDigitsInYaml(None, None, str(_TooManyDigits(None)), node.start_mark) from None
    if value.bit_length() > 3 * limit and abs(value) >= 10**limit:  # 3.32 bits a digit
        raise _TooManyDigitsInYaml(None, None, str(_TooManyDigits(None)), node.start_mark)
    return value


def _decimal_ints(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """A subclass of ``base`` reading zero-padded integers as decimal; ``base``,
    and so every other user of yaml in the process, is left as it is."""
    loader: type[yaml.SafeLoader] = type(f"Decimal{base.__name__}", (base,), {})
    loader.yaml_implicit_resolvers = {
        first: [(tag, _INT_RESOLVER if tag == _INT_TAG else pattern) for tag, pattern in resolvers]
        for first, resolvers in base.yaml_implicit_resolvers.items()
    }
    loader.add_constructor(_INT_TAG, _construct_int)  # copies the table for the subclass
    return loader


#: libyaml's parser when PyYAML has it: twice as fast on a large fixture. Its
#: errors are terser, so a file it refuses is parsed again by the pure-Python
#: one to say why (see :func:`_yaml_problem`).
_FAST_LOADER: type[yaml.SafeLoader] = _decimal_ints(getattr(yaml, "CSafeLoader", yaml.SafeLoader))
_PURE_LOADER = (
    _FAST_LOADER if _FAST_LOADER.__mro__[1] is yaml.SafeLoader else _decimal_ints(yaml.SafeLoader)
)


def _compose(
    text: str, loader_class: type[yaml.SafeLoader] = _FAST_LOADER
) -> tuple[yaml.Node | None, yaml.SafeLoader]:
    loader = loader_class(text)
    return loader.get_single_node(), loader


def _yaml_problem(text: str, error: Exception) -> Exception:
    """The pure-Python parser's account of ``error`` in ``text`` (its messages
    say what was expected and what was found), or ``error`` itself."""
    if _FAST_LOADER is _PURE_LOADER:
        return error
    try:
        node, loader = _compose(text, _PURE_LOADER)
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


#: PyYAML's accounts of a key or list item whose indentation is off: "?" is its
#: name for a key, which no file shows.
_MISALIGNED = {
    "expected <block end>, but found '?'": "key",
    "expected <block end>, but found '<block mapping start>'": "key",
    "expected '<document start>', but found '<block mapping start>'": "key",
    "expected <block end>, but found '-'": "item",
    "expected <block end>, but found '<block sequence start>'": "item",
    "expected '<document start>', but found '<block sequence start>'": "item",
}


def _outline(line: str) -> tuple[int, int | None]:
    """Where a line's key (or value) starts, and its list item's '-' if it has one."""
    dash = None
    column = len(line) - len(line.lstrip(" "))
    while line.startswith("-", column) and line[column + 1 : column + 2] in (" ", ""):
        dash = column if dash is None else dash
        column += 1
        column += len(line) - column - len(line[column:].lstrip(" "))
    return column, dash


def _key_text(line: str, column: int) -> str:
    """The key a line holds from ``column`` (its text up to ': '), or its text, cut short."""
    rest = line[column:].rstrip()
    key, colon, _ = rest.partition(": ")
    if not colon and rest.endswith(":"):
        key, colon = rest[:-1], ":"
    if not colon or rest.startswith(("{", "[")):
        key = rest
    return shown(key.strip(), 40)


def _content_rows(rows: list[str], row: int) -> Iterator[int]:
    """The rows above ``row`` that hold more than spaces or a comment, nearest first."""
    for above in range(row - 1, -1, -1):
        stripped = rows[above].lstrip(" ")
        if stripped and not stripped.startswith("#"):
            yield above


def _line_up(rows: list[str], row: int, column: int, *, item: bool) -> tuple[int, int] | None:
    """The line above ``row`` that a key (or list item, ``item``) at ``column``
    most likely belongs with: of the previous line and the lines that open what
    it is nested in, the one starting nearest ``column`` (the nearest one on a tie).
    Returns its 0-based row and the column its key (or item's '-') starts at, or None."""
    best: tuple[int, int] | None = None
    ceiling = None
    for above in _content_rows(rows, row):
        key_column, dash = _outline(rows[above])
        if ceiling is not None and key_column >= ceiling:
            continue  # nested deeper than a line already passed: not an enclosing one
        ceiling = key_column
        start = dash if item else key_column
        if start is not None and start != column:
            if best is None or abs(start - column) < abs(best[1] - column):
                best = (above, start)
        if key_column == 0:
            break
    return best


def _indentation_problem(text: str, problem: str, mark: yaml.Mark) -> str | None:
    """What PyYAML's account ``problem`` at ``mark`` means when a key or list item
    is indented less or more than the ones it belongs with (its own messages name
    tokens: "expected <block end>, but found '?'"), or None when it is not that."""
    rows = text.splitlines()
    if mark.line >= len(rows):
        return None
    line = rows[mark.line]
    previous = next(_content_rows(rows, mark.line), None)
    if problem in _MISALIGNED:
        item = _MISALIGNED[problem] == "item"
        if line.startswith("?", mark.column):
            return None  # an explicit '? key': PyYAML's name is the file's
        target = _line_up(rows, mark.line, mark.column, item=item)
        if target is None:
            return None
        above, column = target
        way = "less" if mark.column < column else "more"
        where = " above it" if above == previous else ""
        if item:
            return (
                f"this list item is indented {way} than the item{where} (line {above + 1}, "
                f"its '-' in column {column + 1}): the items of one list start in the same "
                "column"
            )
        return (
            f"key {_key_text(line, mark.column)} is indented {way} than the key{where} "
            f"{_key_text(rows[above], column)} (line {above + 1}): the keys of one "
            "mapping start in the same column"
        )
    if problem == "mapping values are not allowed here":
        column, _ = _outline(line)
        if ": " in line[column : mark.column]:
            return (
                "a value that is not quoted holds ': ' (a colon and a space), which YAML "
                "reads as the start of a key: quote the value"
            )
        if previous is None:
            return None
        above_column, _ = _outline(rows[previous])
        if above_column >= column:
            return None
        return (
            f"key {_key_text(line, column)} is indented more than the key above it "
            f"{_key_text(rows[previous], above_column)} (line {previous + 1}), so YAML "
            "reads it as more of that key's value: the keys of one mapping start in the "
            "same column"
        )
    return None


def _read_text(path: Path, text: str, checker: Checker) -> tuple[bool, object]:
    lines: dict[FieldPath, int] = {}
    dupes: list[tuple[int, FieldPath, str]] = []
    walk = _Walk(text)
    data: object = None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, parse_int=_json_int)
        except _TooManyDigits as exc:
            at = _line_of_long_number(text)
            checker.problems.append(
                Problem(file=checker.source, line=at, field="", message=str(exc))
            )
            return False, None
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
            _walk(node, (), lines, dupes, walk)
    else:
        try:
            node, loader = _compose(text)
            try:
                if node is not None:
                    # Walk before constructing: the constructor flattens merge keys in place.
                    lines[()] = node.start_mark.line + 1
                    _walk(node, (), lines, dupes, walk)
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
                problem_mark = getattr(problem, "problem_mark", None)
                mark = problem_mark or getattr(problem, "context_mark", None)
                line = None if mark is None else mark.line + 1
                reason = getattr(problem, "problem", None) or str(problem)
                if reason == "found invalid Unicode character escape code" and mark is not None:
                    reason = _surrogate_escape_problem(text, mark.index) or reason
                elif isinstance(problem_mark, yaml.Mark):
                    reason = _indentation_problem(text, reason, problem_mark) or reason
            # Valid YAML past what is read is not said to be invalid.
            said = f"invalid YAML: {reason}"
            if isinstance(problem, _TooManyDigitsInYaml):
                said = reason
            checker.problems.append(Problem(file=checker.source, line=line, field="", message=said))
            return False, None
    checker.lines = lines
    checker.styles = walk.styles
    checker.flow = walk.flow
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
    entries = _named_as_scenarios(folder)
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


def _named_as_scenarios(folder: Path) -> list[Path]:
    """The entries of ``folder`` named as scenario files (a scenario suffix, not
    hidden by a leading dot), sorted; none when ``folder`` is no directory."""
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.suffix.lower() in SCENARIO_SUFFIXES and not p.name.startswith(".")
        )
    except OSError:
        return []


def scenario_files(folder: Path) -> list[Path]:
    """The scenario files :func:`load_scenario_dir` reads from ``folder`` (its
    ``scenarios/``, or any folder asked about), sorted; none when it is no directory."""
    return [p for p in _named_as_scenarios(folder) if p.is_file()]
