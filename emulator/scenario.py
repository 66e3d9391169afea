"""Scenario data: what a session will say, and when it will fail.

A scenario is pure data (moto's fixtures): a list of transcript segments placed
on the audio clock and a list of faults placed on the same clock. The session
state machine (:mod:`emulator.session`) replays it; this module only describes
and validates it. Reading files is :mod:`emulator.documents`' part, the
problems validation reports are :mod:`emulator.problems`', and where a partial
text may be cut is :mod:`emulator.graphemes`'.

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

The text helpers and the problem reporting are importable from here too; the
file reader is :mod:`emulator.documents`' alone (it imports yaml, which the
session, importing this module, never loads).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Protocol

from .events import OUTPUT_EXCEPTIONS
from .graphemes import can_have_partials, character_ends, character_start, visible_start
from .notescript import POST_STREAM_KEYS, PostStreamScript, validate_post_stream
from .problems import (
    Checker,
    FieldPath,
    Problem,
    ScenarioError,
    describe,
    number_text,
    shown,
)

__all__ = [
    "Segment",
    "Fault",
    "Scenario",
    "ScenarioLike",
    "FAULT_EXCEPTIONS",
    "MAX_PARTIALS",
    "MAX_AUDIO_SECONDS",
    "RESERVED_NAME",
    "past_the_limit",
    "scenario_name",
    "meant_scenario",
    "validate_scenario",
    "parse_scenario",
    # Re-exported from emulator.graphemes.
    "can_have_partials",
    "visible_start",
    "character_ends",
    "character_start",
    # Re-exported from emulator.problems.
    "Problem",
    "ScenarioError",
    "Checker",
    "FieldPath",
    "describe",
    "shown",
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    """One utterance: ``content`` spoken on ``channel`` from ``begin`` to ``end`` seconds.

    ``partials`` partial results precede the final one (none for a one-character
    content, which has no partial text; the file loader calls asking for one a
    problem). Their texts are prefixes of ``content``, growing word by word,
    unless ``partial_texts`` scripts them: then there are as many partials as
    texts, each sent as it is, which may revise earlier words as a recognizer
    does ("The pay" before "The patient"). Raises :class:`ValueError`
    when built with impossible values (the loaders report those as problems first).
    """

    channel: int = 0
    begin: float
    end: float
    content: str
    partials: int = 1
    partial_texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.channel not in (0, 1):
            raise ValueError(f"channel must be 0 or 1, got {self.channel!r}")
        if not 0 <= self.begin < self.end:
            raise ValueError(f"need 0 <= begin < end, got {self.begin!r}..{self.end!r}")
        if visible_start(self.content) == len(self.content):
            # Spaces and zero-width characters only: a transcript of nothing.
            raise ValueError("content must not be empty or only invisible characters")
        if self.partial_texts:
            if any(visible_start(text) == len(text) for text in self.partial_texts):
                raise ValueError("a partial text must show a visible character")
            object.__setattr__(self, "partials", len(self.partial_texts))
        if not 0 <= self.partials <= MAX_PARTIALS:
            raise ValueError(f"partials must be 0..{MAX_PARTIALS}, got {self.partials!r}")
        if self.partials and not self.partial_texts and not can_have_partials(self.content):
            object.__setattr__(self, "partials", 0)  # it has no partial text to send

    def to_json(self) -> dict[str, object]:
        """Return the segment in its file form."""
        return {
            "channel": self.channel,
            "begin": self.begin,
            "end": self.end,
            "content": self.content,
            "partials": list(self.partial_texts) if self.partial_texts else self.partials,
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
        # The index of each segment's first writing, by what the client hears of it.
        firsts: dict[tuple[int, float, float, str], int] = {}
        for index, raw in enumerate(raw_segments):
            segment = _segment(raw, (*path, "segments", index), checker)
            if segment is not None:
                segments.append(segment)
                if checker.authoring:
                    _copied(segment, index, firsts, (*path, "segments", index), checker)

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


def _copied(
    segment: Segment,
    index: int,
    firsts: dict[tuple[int, float, float, str], int],
    path: FieldPath,
    checker: Checker,
) -> None:
    """Report ``segment`` when an earlier one (noted in ``firsts``) has its
    channel, times and content: a line pasted twice, whose final the client
    gets twice, under two segment ids. Overlaps are no problem: one channel
    may carry several speakers."""
    key = (segment.channel, segment.begin, segment.end, segment.content)
    first = firsts.setdefault(key, index)
    if first != index:
        checker.add(
            path,
            f"is a copy of segments[{first}] (the same channel, begin, end and content): "
            "its final would reach the client twice; remove one",
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
            checker.add((*path, "channel"), f"must be 0 or 1, got {number_text(value)}")
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
    texts: tuple[str, ...] = ()
    scripted = item.get("partials")
    if isinstance(scripted, list):
        texts = _partial_texts(scripted, (*path, "partials"), checker)
        partials = len(texts)
    elif "partials" in item:
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
                f"it to 0, got {number_text(value)}",
            )
        elif value is not None and value < 0:
            checker.add((*path, "partials"), f"must be >= 0, got {number_text(value)}")
        elif value is not None and value > MAX_PARTIALS:
            checker.add(
                (*path, "partials"),
                f"must be at most {MAX_PARTIALS} (each partial is one more event; more only "
                f"floods the client), got {number_text(value)}",
            )
        elif value is not None:
            partials = value
    if len(checker.problems) > before or begin is None or end is None or content is None:
        return None
    return Segment(
        channel=channel,
        begin=begin,
        end=end,
        content=content,
        partials=partials,
        partial_texts=texts,
    )


def _partial_texts(raw: list[object], path: FieldPath, checker: Checker) -> tuple[str, ...]:
    """The scripted texts of a segment's partials, each reported where it breaks a
    rule; an empty tuple when any does (or the list is empty: give 0 for none)."""
    before = len(checker.problems)
    if not raw:
        checker.add(path, "is an empty list: give the partials' texts, or 0 for none")
    elif len(raw) > MAX_PARTIALS:
        checker.add(
            path,
            f"holds {len(raw)} texts: at most {MAX_PARTIALS} (each partial is one more "
            "event; more only floods the client)",
        )
    texts = []
    for index, value in enumerate(raw[:MAX_PARTIALS]):
        text = checker.string(value, (*path, index), non_empty=True)
        if text is None:
            continue
        if visible_start(text) == len(text):
            checker.add(
                (*path, index),
                f"must show a visible character: {shown(text)} holds only invisible "
                "characters and spaces",
            )
        elif len(text) * 12 + _RESULT_OVERHEAD > MAX_RESULT_PAYLOAD:
            checker.add((*path, index), "is too long for a transcript event the SDK reads")
        texts.append(text)
    return tuple(texts) if len(checker.problems) == before else ()


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


# --------------------------------------------------------------------------- parsing


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


def meant_scenario(value: str, known: Iterable[str]) -> str | None:
    """The name in ``known`` that ``value``, an unknown scenario name, most likely
    meant, or None: the name without a scenario file's suffix (``visit.yaml``),
    the same name in another case (``Visit``), else the nearest spelling of its
    first 100 characters. Names are compared in NFC (see :func:`scenario_name`).

    Each known name is read a fixed number of times, whatever ``value``'s length:
    it runs in the event loop, for the admin API's refusals too.
    """
    names = {scenario_name(name): name for name in known}
    folded: dict[str, str] = {}
    for name in names:
        folded.setdefault(name.casefold(), name)
    value = scenario_name(value[:_MEANT_LIMIT])
    stem, dot, suffix = value.rpartition(".")
    tries = [value]
    if dot and f".{suffix.casefold()}" in SCENARIO_SUFFIXES:
        tries.append(stem)
    for given in tries:
        if given in names:
            return names[given]
        if (match := folded.get(given.casefold())) is not None:
            return names[match]
    near = get_close_matches(value[:100], list(names), n=1)
    return names[near[0]] if near else None


#: File suffixes :func:`emulator.documents.load_scenario_dir` reads, in the order it
#: prefers them; a name given as its file's (``visit.yaml``) drops one. Exported
#: by emulator.documents, the file reader, as its own.
SCENARIO_SUFFIXES = (".yaml", ".yml", ".json")

#: How much of an unknown name :func:`meant_scenario` reads: no scenario's name
#: is longer than a file name may be (255 bytes).
_MEANT_LIMIT = 256


#: The generated visit's name, which a scenario file cannot take: it would never
#: be chosen. Defined here, as :mod:`emulator.synthetic` imports this module (and
#: not the file reader, :mod:`emulator.documents`, which refuses the name);
#: :data:`emulator.synthetic.SYNTHETIC_NAME` is an alias of it.
RESERVED_NAME = "synthetic"
