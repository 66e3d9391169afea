"""Problems: what is wrong with a scenario or rule file, where, collected all at once.

Validation reports every problem of every file at once, each as
``file:line: field: message`` (:class:`Problem`), inside one
:class:`ScenarioError` (a :class:`~emulator.errors.ConfigError`). A
:class:`Checker` collects the problems of one source, finding each field's line
in the line map the file reader (:mod:`emulator.documents`) fills, and checks
the basic types (a mapping with known keys, a number, an integer, a string),
its messages saying what was found instead (:func:`describe`). An integer the
reader read from zero-padded digits is a :class:`PaddedInt`, taken as its text
where text is expected (:func:`as_written`). Used by the scenario, rule,
post-stream script and resource validators alike; no I/O.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches

from .errors import ConfigError

# PaddedInt and as_written are left out: emulator.scenario re-exports every name
# listed, for the names that moved here from it, and these never were there.
__all__ = [
    "FieldPath",
    "Problem",
    "ScenarioError",
    "Checker",
    "render_path",
    "shown",
    "describe",
    "number_text",
    "counted",
]

#: A location inside a document: keys and list indexes from the root.
FieldPath = tuple[str | int, ...]


class PaddedInt(int):
    """An integer YAML read from digits with a leading zero (``0800``, ``-010``,
    ``08_00``), which keeps them as written in ``text``.

    It is a number (``begin: 010`` is 10 s), but YAML 1.1 read ``0800`` as text,
    so a text field written so (a ``content``, a name, a tag value) still
    loads: :meth:`Checker.string` and :func:`as_written` take it as its text.
    ``str`` and ``repr`` give the text too, so a message shows what the author
    wrote; arithmetic, comparison, hashing and JSON see the number.
    """

    text: str

    @classmethod
    def read(cls, text: str) -> PaddedInt:
        """Return the integer ``text`` (ASCII digits, a sign, ``_``) writes, in decimal."""
        number = cls(text.replace("_", ""))
        number.text = text
        return number

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def as_written(value: object) -> object:
    """Return ``value``'s text as written when it is a :class:`PaddedInt`, else ``value``:
    for a validator reading a text field without :meth:`Checker.string`."""
    return value.text if isinstance(value, PaddedInt) else value


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
    if isinstance(value, int) and not isinstance(value, bool):
        text = number_text(value)  # a long one by its count of digits
        return text if text[0] in "-0123456789" else f"({text})"
    return repr(value)


def counted(count: int, noun: str) -> str:
    """``1 rule``, ``2 rules``: a count and its noun, plural unless one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def number_text(value: int) -> str:
    """An integer as a problem says it got one: past 30 digits, by its count of
    digits (a file may hold one of 4,300)."""
    try:
        text = str(value)
    except ValueError:  # past int()'s digits (the file readers refuse one first)
        return "an integer of thousands of digits"
    return text if len(text) <= 30 else f"an integer of {len(text.lstrip('-'))} digits"


def describe(value: object) -> str:
    """Return a short, user-facing description of a parsed value, for 'got ...'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        text = number_text(value)  # past 30 digits, "an integer of N digits"
        return f"a number ({text})" if text[0] in "-0123456789" else f"a number: {text}"
    if isinstance(value, float):
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


def _unquoted_text_hint(value: object, *, yaml: bool) -> str:
    """For a value read as something else where text was meant, how to keep it text
    (``yaml``: the source was YAML, which reads more words unquoted as booleans)."""
    if isinstance(value, bool) and yaml:
        return (
            ": YAML reads an unquoted yes, no, on, off, true or false as a boolean; "
            'quote the text, as in content: "Yes"'
        )
    if isinstance(value, bool | int | float | datetime.date):
        return ": quote it to keep it text"
    return ""


#: A float in e-notation as YAML 1.1 reads one (PyYAML's float resolver): with a
#: '.' in the mantissa and a sign in the exponent.
_YAML_E_FLOAT = re.compile(r"[-+]?[0-9][0-9_]*\.[0-9_]*[eE][-+][0-9]+|\.[0-9_]+[eE][-+][0-9]+")


def _plain_text_reason(value: str) -> str:
    """Why YAML reads ``value``, which float() reads, as text even written plainly
    (no quotes, no tag), and how to write it; empty when it reads it as a number."""
    text = value.strip().lower().lstrip("+-")
    if "e" in text and not _YAML_E_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 takes 1e3 and 1.0e3 as text: e-notation needs a '.' and a sign there.
        return (
            f"{value.strip()!r}: YAML reads e-notation as a number only with a '.' and a "
            "sign, as 1.0e+3; or write the number in full"
        )
    if text.startswith(".") and value[:1] in "+-":
        return (
            f"{value!r}: YAML reads a sign right before the '.' as text: write "
            f"{value[0]}0{value[1:]}"
        )
    return ""


def _numeric_text_hint(value: object, *, yaml: bool, style: str | None) -> str:
    """For text that reads as a number, why it is text and how to write it as a
    number. ``style`` is how YAML text was written (see :attr:`Checker.styles`;
    None when unknown); JSON text is always quoted."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    text = value.strip().lower().lstrip("+-")
    if text in ("inf", "infinity", "nan"):
        return ""  # not a finite number, quoted or not
    if not yaml:
        return " (it is quoted: write the number without quotes)"
    if not value.isascii():
        # float() reads any Unicode digit and strips any space; YAML neither.
        return (
            f" ({ascii(value)} holds characters other than ASCII digits, such as full-width "
            "digits or a non-breaking space, which YAML reads as text: write it with 0-9 only)"
        )
    plain = _plain_text_reason(value)
    alias = style is not None and style.startswith("*")
    written = style[1:] if style is not None and alias else style
    if written in ("'", '"'):
        how = "an alias of a quoted value" if alias else "quoted"
        fix = "write the number without quotes"
    elif written and written[0] == "!":
        how = f"{'an alias of a value ' if alias else ''}tagged {written}, which makes it text"
        fix = "drop the tag"
    elif written and written[0] in "|>":
        how = f"{'an alias of ' if alias else 'written as '}a block of text after {written!r}"
        fix = "write the number after the ':'"
    elif plain:
        return f" ({plain})"
    elif written is None:
        # Not known (a value merged in with '<<'): quoted or tagged, as plain it is a number.
        return " (YAML reads it as text: write the number without quotes or a tag)"
    else:
        return " (YAML reads it as text: write the number in digits, as 1.5)"
    where = " where its anchor (&) is set" if alias else ""
    also = f"; even then, {plain}" if plain else ""
    return f" (it is {how}: {fix}{where}{also})"


def _transcript_text(path: FieldPath) -> bool:
    """Whether ``path`` is a field a client receives as transcript text: a
    segment's ``content`` or a scripted partial text (``segments[i].partials[j]``)."""
    if len(path) >= 3 and path[-1] == "content":
        return isinstance(path[-2], int) and path[-3] == "segments"
    return (
        len(path) >= 4
        and isinstance(path[-1], int)
        and path[-2] == "partials"
        and isinstance(path[-3], int)
        and path[-4] == "segments"
    )


class Checker:
    """Collects :class:`Problem` s for one source, resolving lines from a line map."""

    def __init__(self, source: str, lines: Mapping[FieldPath, int] | None = None) -> None:
        self.source = source
        self.lines: Mapping[FieldPath, int] = lines or {}
        self.problems: list[Problem] = []
        #: The keys each mapping checked so far takes, and what it is, by path: an
        #: unknown key that an enclosing mapping takes was likely indented too far.
        self._mappings: dict[FieldPath, tuple[Sequence[str], str]] = {}
        #: Also report what can only be an author's mistake (a time no session
        #: reaches, a fault that never fires, partials a content cannot have).
        #: Off for a script a session already holds (see parse_scenario): one
        #: stored by an earlier version must still rebuild.
        self.authoring = True
        #: Whether the source is YAML (set by the file reader), whose hints differ:
        #: a request's JSON body, or a .json file, reads ``yes`` and ``1e3`` as text.
        self.yaml = False
        #: How each text value of the file was written, by path (set by the file
        #: reader): ``""`` plain, ``"'"`` or ``'"'`` quoted, or a block scalar's
        #: header (``"|"``, ``">-"``, ``"|2+"``...); a plain value tagged ``!!str``
        #: is its tag as written; an alias (``*name``) of a text value is ``"*"`` and
        #: that value's style. Absent: not known (no file, or a value inside an
        #: aliased or merged mapping).
        self.styles: Mapping[FieldPath, str] = {}
        #: The paths of the mappings written in YAML's flow style, ``{...}`` (set by
        #: the file reader): no indentation places a key in one.
        self.flow: Collection[FieldPath] = frozenset()

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
        self._mappings[path] = (allowed, what)
        for key in value:
            if key not in allowed:
                near = get_close_matches(str(key)[:100], allowed, n=1)
                hint = self._misplaced(key, path) or (
                    f" (did you mean {near[0]!r}?)" if near else ""
                )
                name = shown(key, 61) if isinstance(key, int) else str(key)
                name = name if len(name) <= 64 else name[:64] + "..."
                self.add(
                    (*path, name),
                    f"unknown key {shown(key)}{hint}; allowed: {', '.join(allowed)}",
                )
        return value

    def _misplaced(self, key: object, path: FieldPath) -> str:
        """A hint for ``key``, unknown at ``path``, when a mapping that holds this one
        takes it: ``faults:`` indented under the last segment was told only that a
        segment has no such key. Empty otherwise."""
        for depth in range(len(path) - 1, -1, -1):
            enclosing = self._mappings.get(path[:depth])
            if enclosing is not None and key in enclosing[0]:
                if self.yaml and path not in self.flow:
                    return f" ({enclosing[1]} takes it: is it indented too far?)"
                # JSON, or YAML's {...}: braces, not indentation, nest it.
                between = sum(
                    depth < len(inner) < len(path) and path[: len(inner)] == inner
                    for inner in self._mappings
                )
                levels = "one level" if between == 0 else f"{between + 1} levels"
                return f" ({enclosing[1]} takes it: is it nested {levels} too deep?)"
        return ""

    def number(self, value: object, path: FieldPath) -> float | None:
        """Return ``value`` as a finite float, or ``None`` after reporting why not."""
        # YAML's true/false are Python bools, which are ints: refuse them explicitly.
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint = _numeric_text_hint(value, yaml=self.yaml, style=self.styles.get(path))
            self.add(path, f"must be a number, got {describe(value)}{hint}")
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
        return int(value)  # a PaddedInt's text is no part of the number

    def string(self, value: object, path: FieldPath, *, non_empty: bool = False) -> str | None:
        """Return ``value`` if it is a string (non-blank if asked), or ``None`` after
        reporting. A :class:`PaddedInt` is taken as its text as written (``0800``)."""
        value = as_written(value)
        if not isinstance(value, str):
            hint = _unquoted_text_hint(value, yaml=self.yaml)
            self.add(path, f"must be a string, got {describe(value)}{hint}")
            return None
        if non_empty and not value.strip():
            self.add(path, "must not be empty")
            return None
        style = self.styles.get(path, "")
        if style[:1] in ("|", ">") and "-" not in style and "+" not in style:
            if value.endswith("\n") and _transcript_text(path):
                # The client would get it as the text's last character (a quoted
                # "\n" or '|+' says it is meant; a bare '|' or '>' rarely does).
                self.add(
                    path,
                    f"ends with the line break that '{style}' keeps, which the client would "
                    f"receive at the end of the text: write '{style}-' to drop it",
                )
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
