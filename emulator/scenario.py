"""Scenario data: what a session will say, and when it will fail.

A scenario is pure data (moto's fixtures): a list of transcript segments placed
on the audio clock and a list of faults placed on the same clock. The session
state machine (:mod:`emulator.session`) replays it; this module only describes,
loads and validates it.

The file and inline form::

    description: "optional free text"
    segments:
      - {channel: 0, begin: 0.0, end: 2.5, content: "Hello.", partials: 1}
    faults:
      - {at: 10.0, exception: internalFailureException, message: "..."}
      - {at: 20.0, disconnect: true}
    note: {...}                 # optional: the post-stream artifacts' content,
    afterVisitSummary: [...]    # see emulator.notescript
    artifacts: {...}

Validation reports every problem of every file at once, each as
``file:line: field: message`` (:class:`Problem`), inside one
:class:`ScenarioError`.
"""

from __future__ import annotations

import datetime
import json
import math
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Protocol

import yaml

from .errors import ConfigError
from .events import OUTPUT_EXCEPTIONS
from .notescript import POST_STREAM_KEYS, PostStreamScript, validate_post_stream
from .validation import SURROGATE_ESCAPE

__all__ = [
    "Segment",
    "Fault",
    "Scenario",
    "ScenarioLike",
    "FAULT_EXCEPTIONS",
    "MAX_PARTIALS",
    "MAX_AUDIO_SECONDS",
    "past_the_limit",
    "can_have_partials",
    "scenario_name",
    "SCENARIO_SUFFIXES",
    "Problem",
    "ScenarioError",
    "Checker",
    "FieldPath",
    "describe",
    "read_document",
    "validate_scenario",
    "parse_scenario",
    "load_scenario_file",
    "load_scenario_dir",
]

#: In-stream exceptions a fault may raise: the output-stream union members,
#: :data:`emulator.events.OUTPUT_EXCEPTIONS` under the name a scenario uses.
FAULT_EXCEPTIONS = OUTPUT_EXCEPTIONS

#: Each partial is one more event on the wire; a client needs a few to exercise
#: its partial-result handling, and dozens per utterance only flood the stream.
MAX_PARTIALS = 50

#: The longest session the emulator plays: two hours of audio, over all its streams.
#: The one definition of the limit: ``emulator.synthetic.MAX_AUDIO_SECONDS`` and
#: ``emulator.session.MAX_SESSION_AUDIO_SECONDS`` are aliases of it.
MAX_AUDIO_SECONDS = 7200.0

#: File suffixes :func:`load_scenario_dir` reads, in the order it prefers them.
SCENARIO_SUFFIXES = (".yaml", ".yml", ".json")

_SCENARIO_KEYS = ("description", "segments", "faults", *POST_STREAM_KEYS)
_SEGMENT_KEYS = ("channel", "begin", "end", "content", "partials")
#: A transcript event's bytes beside its content (ids, offsets, channel, flags).
_RESULT_OVERHEAD = 512
#: The largest event payload the SDK's decoder takes (16 MiB; the event-stream
#: format allows 24): a longer result fails the client's stream.
MAX_RESULT_PAYLOAD = 16 * 1024 * 1024
_FAULT_KEYS = ("at", "exception", "disconnect", "message")

# Shape names users are likely to write instead of the stream member names.
_FAULT_HINTS = {
    "validationexception": "validationException",
    "internalserverexception": "internalFailureException",
    "internalfailureexception": "internalFailureException",
}


def can_have_partials(content: str) -> bool:
    """Whether ``content`` has a partial text: a visible proper prefix, which a
    content of one character as a reader sees it (a letter with its accents, an
    emoji with its skin tone, a flag; spaces and invisible characters aside)
    does not."""
    start = visible_start(content)
    return len(character_ends(content.rstrip(), start, limit=2)) > 1


def visible_start(text: str) -> int:
    """Where ``text``'s first visible character starts: after any spaces and
    invisible format characters (a zero-width space, a BOM, a word joiner);
    ``len(text)`` when it has none."""
    index = 0
    while index < len(text) and (
        text[index].isspace() or unicodedata.category(text[index]) == "Cf"
    ):
        index += 1
    return index


def character_ends(text: str, start: int = 0, *, limit: int | None = None) -> list[int]:
    """The index after each character of ``text[start:]`` as a reader sees it: a
    simplified grapheme cluster (Unicode UAX #29), which keeps combining marks,
    variation selectors, emoji modifiers and tags with the character before
    them, a zero-width joiner with what it joins, a consonant after a virama
    with the consonant before it (a conjunct), and regional indicators in pairs
    (a flag). A partial cut between two of these showed a character the speaker
    did not say ("🇺" of "🇺🇸", "👍" of "👍🏽", "e" of a decomposed "é", "क्" of
    "क्ष"). With ``limit``, the first ``limit`` only.
    """
    ends: list[int] = []
    index = start
    while index < len(text) and (limit is None or len(ends) < limit):
        code = ord(text[index])
        index += 1
        if (
            _regional_indicator(code)
            and index < len(text)
            and _regional_indicator(ord(text[index]))
        ):
            index += 1  # the pair is one flag
        while index < len(text):
            following = text[index]
            if following == "\u200d" and index + 1 < len(text):
                index += 2  # the joiner and what it joins
            elif _extends(following) or _conjoins(text[index - 1], following):
                index += 1
            else:
                break
        ends.append(index)
    return ends


def _regional_indicator(code: int) -> bool:
    return 0x1F1E6 <= code <= 0x1F1FF


def _conjoins(before: str, character: str) -> bool:
    """Whether ``character`` continues a conjunct: a letter of the script of the
    virama ``before`` it (canonical combining class 9), as in "क्ष" (UAX #29
    GB9c, Unicode 15.1). GB9c names six Indic viramas; any virama is taken
    here, Khmer's coeng and Myanmar's stacker among them (CLDR joins those
    too): a cut this misses shows a dead consonant, while one it removes only
    leaves a partial a character shorter or longer. The virama's 128-code-point
    block stands for its script (each shares one with its consonants), so a
    Latin letter after a Devanagari virama stays a character of its own.
    """
    return (
        unicodedata.combining(before) == 9
        and ord(before) >> 7 == ord(character) >> 7
        and character.isalpha()
    )


def _extends(character: str) -> bool:
    """Whether ``character`` belongs to the character before it."""
    code = ord(character)
    return (
        unicodedata.category(character) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= code <= 0xE007F  # tags (subdivision flags)
        or 0xE0100 <= code <= 0xE01EF
        or code == 0x200D  # a joiner at the end
        or code in (0x0E33, 0x0EB3)  # Thai and Lao SARA AM (spacing marks)
        or 0x1160 <= code <= 0x11FF  # Hangul vowel and final jamo: one syllable
        or 0xD7B0 <= code <= 0xD7FB
    )


def character_start(text: str, index: int, start: int = 0) -> int:
    """The start of the character (see :func:`character_ends`) holding
    ``text[index]``, not before ``start``: where a cut near ``index`` may go,
    found by looking back a few code points, not by walking the text (a
    partial of a long text without spaces, at each partial)."""
    while index > start:
        if (
            _extends(text[index])
            or text[index - 1] == "\u200d"
            or _conjoins(text[index - 1], text[index])
        ):
            index -= 1
            continue
        if _regional_indicator(ord(text[index])):
            # In a run of indicators, pairs from its start make the flags.
            first = index
            while first > start and _regional_indicator(ord(text[first - 1])):
                first -= 1
            if (index - first) % 2:
                index -= 1
        break
    return index


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    """One utterance: ``content`` spoken on ``channel`` from ``begin`` to ``end`` seconds.

    ``partials`` partial results precede the final one (none for a one-character
    content, which has no partial text; the file loader calls asking for one a
    problem). Raises :class:`ValueError`
    when built with impossible values (the loaders report those as problems first).
    """

    channel: int = 0
    begin: float
    end: float
    content: str
    partials: int = 1

    def __post_init__(self) -> None:
        if self.channel not in (0, 1):
            raise ValueError(f"channel must be 0 or 1, got {self.channel!r}")
        if not 0 <= self.begin < self.end:
            raise ValueError(f"need 0 <= begin < end, got {self.begin!r}..{self.end!r}")
        if visible_start(self.content) == len(self.content):
            # Spaces and zero-width characters only: a transcript of nothing.
            raise ValueError("content must not be empty or only invisible characters")
        if not 0 <= self.partials <= MAX_PARTIALS:
            raise ValueError(f"partials must be 0..{MAX_PARTIALS}, got {self.partials!r}")
        if self.partials and not can_have_partials(self.content):
            object.__setattr__(self, "partials", 0)  # it has no partial text to send

    def to_json(self) -> dict[str, object]:
        """Return the segment in its file form."""
        return {
            "channel": self.channel,
            "begin": self.begin,
            "end": self.end,
            "content": self.content,
            "partials": self.partials,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Fault:
    """At audio time ``at``: raise ``exception`` in-stream, or reset the stream.

    Raises :class:`ValueError` unless exactly one of ``exception`` and
    ``disconnect`` is set and ``exception`` is one of :data:`FAULT_EXCEPTIONS`.
    """

    at: float
    exception: str | None = None
    message: str = ""
    disconnect: bool = False

    def __post_init__(self) -> None:
        if self.at < 0:
            raise ValueError(f"at must be >= 0, got {self.at!r}")
        if (self.exception is None) == (not self.disconnect):
            raise ValueError("a fault needs exactly one of exception or disconnect")
        if self.exception is not None and self.exception not in FAULT_EXCEPTIONS:
            raise ValueError(f"exception must be one of {FAULT_EXCEPTIONS}")

    def to_json(self) -> dict[str, object]:
        """Return the fault in its file form."""
        if self.disconnect:
            return {"at": self.at, "disconnect": True}
        return {"at": self.at, "exception": self.exception, "message": self.message}


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    """A named, finite script. ``segments`` is kept sorted by ``begin`` and ``faults`` by ``at``.

    Equal begins keep their given order (the sort is stable). ``post_stream``
    scripts the post-stream artifacts (None: derive them from the transcript).
    """

    name: str
    segments: tuple[Segment, ...] = ()
    faults: tuple[Fault, ...] = field(default=())
    description: str = ""
    post_stream: PostStreamScript | None = None

    def __post_init__(self) -> None:
        # The session replays segments in begin order; sorting here keeps that true
        # for scenarios built in code as well as loaded ones.
        object.__setattr__(self, "segments", tuple(sorted(self.segments, key=_begin)))
        object.__setattr__(self, "faults", tuple(sorted(self.faults, key=_at)))

    def iter_segments(self) -> Iterator[Segment]:
        """Return an iterator over the segments in begin order (as synthetic scenarios do)."""
        return iter(self.segments)

    def to_json(self) -> dict[str, object]:
        """Return the scenario in its file/inline form (without the name)."""
        out: dict[str, object] = {}
        if self.description:
            out["description"] = self.description
        out["segments"] = [s.to_json() for s in self.segments]
        out["faults"] = [f.to_json() for f in self.faults]
        if self.post_stream is not None:
            out.update(self.post_stream.to_json())
        return out


def _begin(segment: Segment) -> float:
    return segment.begin


def _at(fault: Fault) -> float:
    return fault.at


class ScenarioLike(Protocol):
    """What the session needs of a scenario: :class:`Scenario` and synthetic ones alike."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def faults(self) -> tuple[Fault, ...]: ...

    def iter_segments(self) -> Iterator[Segment]: ...


# --------------------------------------------------------------------------- problems

#: A location inside a document: keys and list indexes from the root.
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    """One thing wrong with a scenario or rule: where (file, line, field) and what."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.field}: " if self.field else f"{where}: "
        text += self.message
        if not text.isascii():
            # A file name or JSON key may hold half a surrogate pair (a file name
            # not in UTF-8, an escape): shown escaped, as no output can encode it.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        return text


class ScenarioError(ConfigError):
    """One or more scenario (or rule) problems; ``problems`` lists them all.

    The message is the problems, one per line, by file and line (as ``check``
    lists them); problems of one line in the order found.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=lambda p: (p.file, p.line or 0))
        super().__init__("\n".join(str(p) for p in self.problems))


def render_path(path: FieldPath) -> str:
    """Return ``("segments", 2, "end")`` as ``segments[2].end``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def shown(value: object, limit: int = 64) -> str:
    """``repr(value)``, a long text cut short: a message quoting what a client sent
    stays readable however much it sent."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return repr(value)


def describe(value: object) -> str:
    """Return a short, user-facing description of a parsed value, for 'got ...'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value!r})"


def _unquoted_text_hint(value: object) -> str:
    """For a value YAML read as something else where text was meant, how to keep it text."""
    if isinstance(value, bool):
        return (
            ": YAML reads an unquoted yes, no, on, off, true or false as a boolean; "
            'quote the text, as in content: "Yes"'
        )
    if isinstance(value, int | float | datetime.date):
        return ": quote it to keep it text"
    return ""


def _numeric_text_hint(value: object) -> str:
    """For text that reads as a number (YAML 1.1 takes ``1e3`` and ``1.0e3`` as
    text: e-notation needs a '.' and a sign there), how to write it as one."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    text = value.strip().lower().lstrip("+-")
    if text in ("inf", "infinity", "nan"):
        return ""  # not a finite number, quoted or not
    if "e" not in text:
        return " (it is quoted: write the number without quotes)"
    return (
        f" ({value.strip()!r}: YAML reads e-notation as a number only with a '.' and a "
        "sign, as 1.0e+3; or write the number in full)"
    )


class Checker:
    """Collects :class:`Problem` s for one source, resolving lines from a line map."""

    def __init__(self, source: str, lines: Mapping[FieldPath, int] | None = None) -> None:
        self.source = source
        self.lines: Mapping[FieldPath, int] = lines or {}
        self.problems: list[Problem] = []
        #: Also report what can only be an author's mistake (a time no session
        #: reaches, a fault that never fires, partials a content cannot have).
        #: Off for a script a session already holds (see parse_scenario): one
        #: stored by an earlier version must still rebuild.
        self.authoring = True

    def line(self, path: FieldPath) -> int | None:
        """Return the line of ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def add(self, path: FieldPath, message: str) -> None:
        self.problems.append(
            Problem(
                file=self.source, line=self.line(path), field=render_path(path), message=message
            )
        )

    def mapping(
        self, value: object, path: FieldPath, *, allowed: Sequence[str], what: str
    ) -> dict[str, object] | None:
        """Return ``value`` if it is a mapping with only ``allowed`` keys, reporting otherwise."""
        if not isinstance(value, dict):
            self.add(path, f"{what} must be a mapping, got {describe(value)}")
            return None
        for key in value:
            if key not in allowed:
                near = get_close_matches(str(key)[:100], allowed, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                name = str(key) if len(str(key)) <= 64 else str(key)[:64] + "..."
                self.add(
                    (*path, name),
                    f"unknown key {shown(key)}{hint}; allowed: {', '.join(allowed)}",
                )
        return value

    def number(self, value: object, path: FieldPath) -> float | None:
        """Return ``value`` as a finite float, or ``None`` after reporting why not."""
        # YAML's true/false are Python bools, which are ints: refuse them explicitly.
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(path, f"must be a number, got {describe(value)}{_numeric_text_hint(value)}")
            return None
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float: far out of every range here
            self.add(path, "must be a finite number, got an integer of over 308 digits")
            return None
        if not math.isfinite(number):
            self.add(path, f"must be a finite number, got {value!r}")
            return None
        return number

    def integer(self, value: object, path: FieldPath) -> int | None:
        """Return ``value`` if it is an integer (not a bool), or ``None`` after reporting."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, f"must be an integer, got {describe(value)}")
            return None
        return value

    def string(self, value: object, path: FieldPath, *, non_empty: bool = False) -> str | None:
        """Return ``value`` if it is a string (non-blank if asked), or ``None`` after reporting."""
        if not isinstance(value, str):
            self.add(path, f"must be a string, got {describe(value)}{_unquoted_text_hint(value)}")
            return None
        if non_empty and not value.strip():
            self.add(path, "must not be empty")
            return None
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                # JSON can escape half a surrogate pair; no text can hold one.
                half = value[error.start]
                self.add(
                    path,
                    f"holds half of a UTF-16 surrogate pair (\\u{ord(half):04x}): write the "
                    "character itself, or both halves of its pair",
                )
                return None
        return value


# --------------------------------------------------------------------------- reading


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
            exc = _yaml_problem(text, error)
            if isinstance(exc, yaml.reader.ReaderError):
                line, reason = _reader_problem(text, exc)
            else:
                mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
                line = None if mark is None else mark.line + 1
                reason = getattr(exc, "problem", None) or str(exc)
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


# --------------------------------------------------------------------------- validation


def validate_scenario(
    data: object, *, name: str, checker: Checker, path: FieldPath = ()
) -> Scenario | None:
    """Check ``data`` (the parsed file or inline form) and build a :class:`Scenario`.

    Every problem found is added to ``checker``, with fields relative to ``path``.
    Returns the scenario, or ``None`` when any problem was found in it.
    """
    before = len(checker.problems)
    top = checker.mapping(data, path, allowed=_SCENARIO_KEYS, what="a scenario")
    if top is None:
        return None
    description = ""
    if "description" in top:
        description = checker.string(top["description"], (*path, "description")) or ""

    segments: list[Segment] = []
    raw_segments = top.get("segments", [])
    if not isinstance(raw_segments, list):
        checker.add((*path, "segments"), f"must be a list, got {describe(raw_segments)}")
    else:
        for index, raw in enumerate(raw_segments):
            segment = _segment(raw, (*path, "segments", index), checker)
            if segment is not None:
                segments.append(segment)

    faults: list[Fault] = []
    raw_faults = top.get("faults", [])
    if not isinstance(raw_faults, list):
        checker.add((*path, "faults"), f"must be a list, got {describe(raw_faults)}")
    else:
        failing: tuple[int, Fault] | None = None  # the first exception to fire
        for index, raw in enumerate(raw_faults):
            fault = _fault(raw, (*path, "faults", index), checker)
            if fault is not None:
                faults.append(fault)
                if fault.exception is not None and (failing is None or fault.at < failing[1].at):
                    failing = (index, fault)
        if failing is not None and checker.authoring:
            _dead_faults(raw_faults, failing, (*path, "faults"), checker)

    # Indexes count the file's segments, a segment with problems of its own included:
    # counting the valid ones only called a good index out of range.
    written = len(raw_segments) if isinstance(raw_segments, list) else 0
    post_stream = validate_post_stream(top, path, checker, segment_count=written)

    if len(checker.problems) > before:
        return None
    return Scenario(
        name=name,
        segments=tuple(segments),
        faults=tuple(faults),
        description=description,
        post_stream=post_stream,
    )


def _dead_faults(
    raw_faults: list[object], failing: tuple[int, Fault], path: FieldPath, checker: Checker
) -> None:
    """Report the faults after the first exception, which fails the session: they
    never fire (as with a fault at the same time listed after it)."""
    first, fault = failing
    for index, raw in enumerate(raw_faults):
        at = raw.get("at") if isinstance(raw, dict) else None
        if index == first or not isinstance(at, int | float) or isinstance(at, bool):
            continue
        if at > fault.at or (at == fault.at and index > first):
            checker.add(
                (*path, index, "at"),
                f"never fires: the {fault.exception} at {fault.at:g} s (faults[{first}]) "
                "fails the session first",
            )


def _seconds_text(seconds: float) -> str:
    """``7200000`` for 7200000.0 (``:g`` gives 7.2e+06), ``7200.5`` for 7200.5."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def past_the_limit(seconds: float, consequence: str) -> str:
    """The problem of an audio time past what a session can carry."""
    return (
        f"is {_seconds_text(seconds)} s, past the {MAX_AUDIO_SECONDS:g} s (2 hours) of audio "
        f"a session can carry: {consequence} (times are in seconds, not milliseconds)"
    )


def _required(item: Mapping[str, object], key: str, path: FieldPath, checker: Checker) -> bool:
    if key in item:
        return True
    checker.add(path, f"missing required key {key!r}")
    return False


def _segment(raw: object, path: FieldPath, checker: Checker) -> Segment | None:
    item = checker.mapping(raw, path, allowed=_SEGMENT_KEYS, what="a segment")
    if item is None:
        return None
    before = len(checker.problems)
    channel = 0
    if "channel" in item:
        value = checker.integer(item["channel"], (*path, "channel"))
        if value is not None and value not in (0, 1):
            checker.add((*path, "channel"), f"must be 0 or 1, got {value}")
        channel = value if value in (0, 1) else 0
    begin = end = None
    if _required(item, "begin", path, checker):
        begin = checker.number(item["begin"], (*path, "begin"))
        if begin is not None and begin < 0:
            checker.add((*path, "begin"), f"must be >= 0, got {begin}")
            begin = None
        elif begin is not None and begin >= MAX_AUDIO_SECONDS and checker.authoring:
            checker.add((*path, "begin"), past_the_limit(begin, "the segment is never heard"))
    if _required(item, "end", path, checker):
        end = checker.number(item["end"], (*path, "end"))
        if end is not None and begin is not None and end <= begin:
            checker.add((*path, "end"), f"must be greater than begin ({begin}), got {end}")
    content = None
    if _required(item, "content", path, checker):
        content = checker.string(item["content"], (*path, "content"), non_empty=True)
    if content is not None and visible_start(content) == len(content):
        checker.add((*path, "content"), _invisible_problem(content))
        content = None
    if content is not None and len(content) * 12 + _RESULT_OVERHEAD > MAX_RESULT_PAYLOAD:
        # Its result could not be sent, or read (the emulator's own output, once
        # blamed on the client's input), escaped as it is sent.
        size = len(json.dumps(content)) + _RESULT_OVERHEAD
        if size > MAX_RESULT_PAYLOAD:
            checker.add(
                (*path, "content"),
                f"is {len(content)} characters, about {size} bytes as its transcript "
                f"event: past the {MAX_RESULT_PAYLOAD}-byte payload the SDK's decoder "
                "reads, so no client could take its result",
            )
            content = None
    # A one-character content has no partial text: by default it gets none.
    partials = 1 if content is None or can_have_partials(content) else 0
    if "partials" in item:
        value = checker.integer(item["partials"], (*path, "partials"))
        if (
            value is not None
            and value > 0
            and content is not None
            and partials == 0
            and checker.authoring
        ):
            checker.add(
                (*path, "partials"),
                f"content {content!r} is one character, so no partial text can come before "
                f"it (a partial is a shorter prefix of the final): remove partials or set "
                f"it to 0, got {value}",
            )
        elif value is not None and value < 0:
            checker.add((*path, "partials"), f"must be >= 0, got {value}")
        elif value is not None and value > MAX_PARTIALS:
            checker.add(
                (*path, "partials"),
                f"must be at most {MAX_PARTIALS} (each partial is one more event; more only "
                f"floods the client), got {value}",
            )
        elif value is not None:
            partials = value
    if len(checker.problems) > before or begin is None or end is None or content is None:
        return None
    return Segment(channel=channel, begin=begin, end=end, content=content, partials=partials)


def _invisible_problem(content: str) -> str:
    """The problem of a content of spaces and format characters only (text
    pasted from a web page or a word processor carries them), which
    :meth:`str.strip` keeps: its final would show nothing, as an empty one."""
    names = []
    for character in dict.fromkeys(content):
        if not character.isspace():
            name = unicodedata.name(character, "a format character")
            names.append(f"U+{ord(character):04X} {name}")
    return (
        f"must not be empty: {shown(content)} holds only invisible characters "
        f"({', '.join(names[:3])}) and spaces, so its result would show nothing: write "
        "the words, or remove the segment"
    )


def _fault(raw: object, path: FieldPath, checker: Checker) -> Fault | None:
    item = checker.mapping(raw, path, allowed=_FAULT_KEYS, what="a fault")
    if item is None:
        return None
    before = len(checker.problems)
    at = None
    if _required(item, "at", path, checker):
        at = checker.number(item["at"], (*path, "at"))
        if at is not None and at < 0:
            checker.add((*path, "at"), f"must be >= 0, got {at}")
        elif at is not None and at > MAX_AUDIO_SECONDS and checker.authoring:
            checker.add((*path, "at"), past_the_limit(at, "the fault never fires"))
    has_exception = "exception" in item
    disconnect = False
    if "disconnect" in item:
        value = item["disconnect"]
        if value is not True:
            checker.add(
                (*path, "disconnect"),
                f"must be true (omit it for an exception fault), got {describe(value)}",
            )
        disconnect = value is True
    exception = None
    if has_exception and "disconnect" in item:
        checker.add(path, "a fault needs exactly one of 'exception' or 'disconnect', got both")
    elif not has_exception and "disconnect" not in item:
        checker.add(path, "a fault needs exactly one of 'exception' or 'disconnect', got neither")
    elif has_exception:
        exception = checker.string(item["exception"], (*path, "exception"))
        if exception is not None and exception not in FAULT_EXCEPTIONS:
            near = _FAULT_HINTS.get(exception.lower())
            hint = f" (did you mean {near!r}?)" if near else ""
            checker.add(
                (*path, "exception"),
                f"must be one of {', '.join(FAULT_EXCEPTIONS)}{hint}, got {exception!r}",
            )
    message = ""
    if "message" in item and "disconnect" in item and not has_exception:
        # Accepted and dropped, it told the author nothing: a reset carries no message.
        checker.add(
            (*path, "message"),
            "a disconnect has no message: the stream is reset and the client gets no "
            "exception (omit it, or script an exception fault instead)",
        )
    elif "message" in item:
        message = checker.string(item["message"], (*path, "message")) or ""
    if len(checker.problems) > before or at is None:
        return None
    if exception is not None and not message:
        # An empty message gives the client's exception nothing to show.
        message = f"Emulated {exception} at {at:g} s of audio"
    return Fault(at=at, exception=exception, message=message, disconnect=disconnect)


# --------------------------------------------------------------------------- loading


def parse_scenario(
    data: object, *, name: str, source: str = "<inline>", stored: bool = False
) -> Scenario:
    """Validate an already-parsed scenario (e.g. inline JSON) and return it as ``name``.

    ``stored``: the script of a session, accepted when it started, perhaps by an
    earlier version; only what would make it unplayable is checked (see
    :attr:`Checker.authoring`). Raises :class:`ScenarioError` (a
    :class:`ConfigError`) listing every problem.
    """
    checker = Checker(source)
    checker.authoring = not stored
    scenario = validate_scenario(data, name=name, checker=checker)
    if scenario is None:
        raise ScenarioError(checker.problems)
    return scenario


def scenario_name(name: str) -> str:
    """``name`` as scenarios are keyed and looked up: in Unicode NFC.

    A file name from a macOS volume, or from a tar or git checkout made on
    one, is in NFD ("me\u0301dica"); the same name typed in a rule, or for
    ``--scenario``, is in NFC ("m\u00e9dica"). The two look the same, and
    an exact look-up refused one while suggesting the other.
    """
    return name if name.isascii() else unicodedata.normalize("NFC", name)


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


#: The generated visit's name, which a scenario file cannot take: it would never
#: be chosen. Defined here, as :mod:`emulator.synthetic` imports this module;
#: :data:`emulator.synthetic.SYNTHETIC_NAME` is an alias of it.
RESERVED_NAME = "synthetic"


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
