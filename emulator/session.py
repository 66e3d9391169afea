"""One listening session: the input-event state machine, the audio clock and the replay.

Sans-IO: the session is fed decoded inner event-stream messages with
:meth:`ScribeSession.receive_event` and speaks only through the injected
``send`` callable (output events from :mod:`emulator.events`). It never touches
sockets, ASGI or asyncio.

Rules it keeps (from the service model and the user guide):

* the first event is a ``configurationEvent``, and only the first;
* audio is ``audioEvent`` (base64 JSON) or ``binaryAudioEvent`` (raw payload),
  at most 32,000 bytes of audio each;
* ``sessionControlEvent`` ``END_OF_SESSION`` ends the session: nothing may follow;
* transcript results are released by the audio clock, never ahead of it;
* a session carries at most :data:`~emulator.scenario.MAX_AUDIO_SECONDS` of audio in all.

Every change of :attr:`ScribeSession.state` goes through :data:`TRANSITIONS`:
the input events, and the session's own events (:data:`INTERNAL_EVENTS`) for
what ends a stream otherwise (the input closing, a timeout, a failure, a
scripted disconnect).

A stream that continues a paused session is built with the paused one's
:class:`SessionProgress`: its clock starts where the other stopped, segments
already finished are not replayed, segments under way go on from their last
partial, and faults that fired do not fire again.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import heapq
import itertools
import math
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .audio import MAX_AUDIO_CHUNK_BYTES, PcmClock, make_clock
from .errors import ValidationException
from .events import OutputEvent, StreamException, StreamReset, TranscriptResult
from .eventstream import Message, describe_header_value, quote_text
from .graphemes import character_ends, character_start, visible_start
from .scenario import MAX_AUDIO_SECONDS, Fault, Segment
from .validation import (
    AUDIO_CHUNK_START,
    AUDIO_CHUNK_STOP,
    Configuration,
    StreamRequest,
    audio_event_size,
    parse_audio_event,
    parse_configuration_event,
    parse_session_control_event,
)

__all__ = [
    "CUT_OFF",
    "SessionState",
    "ScribeSession",
    "ScenarioSource",
    "SessionProgress",
    "SessionStats",
    "INPUT_EVENT_TYPES",
    "INTERNAL_EVENTS",
    "AUDIO_EVENTS",
    "TRANSITIONS",
    "FINISHED_STATES",
    "MAX_SESSION_AUDIO_SECONDS",
    "segment_id",
    "describe_duration",
]

#: The service's limit on one listening session's audio, over all its streams: an
#: alias of :data:`emulator.scenario.MAX_AUDIO_SECONDS`, the one definition.
MAX_SESSION_AUDIO_SECONDS = MAX_AUDIO_SECONDS


#: The pause reason of a stream whose client reset it or lost its connection
#: (or the server closed it: an emulator stopping says so instead).
CUT_OFF = "the stream was reset or its connection closed"


class SessionState(enum.Enum):
    """Where one stream of a session is: :data:`TRANSITIONS` moves it."""

    AWAITING_CONFIGURATION = "AWAITING_CONFIGURATION"
    STREAMING = "STREAMING"
    #: END_OF_SESSION received: finals sent, nothing more may arrive.
    COMPLETED = "COMPLETED"
    #: An in-stream exception (bad input or a scripted fault) ended the stream.
    FAILED = "FAILED"
    #: Input closed without END_OF_SESSION, or a scripted disconnect.
    PAUSED = "PAUSED"

    # Members are singletons, so identity hashing is exact; Enum's own __hash__
    # is a Python call, made for every TRANSITIONS lookup (one per audio event).
    __hash__ = object.__hash__


#: The input stream's union members (MedicalScribeInputStream in the model).
INPUT_EVENT_TYPES = frozenset(
    {"configurationEvent", "audioEvent", "binaryAudioEvent", "sessionControlEvent"}
)

#: The session's own events, beside the input's: ``inputClosed`` (the input
#: ended without END_OF_SESSION), ``timeout`` (no input for the idle timeout),
#: ``fail`` (an in-stream exception) and ``disconnect`` (a scripted one).
INTERNAL_EVENTS = frozenset({"inputClosed", "timeout", "fail", "disconnect"})

_S = SessionState
#: (state, input or internal event type) -> next state. An input event whose pair
#: is missing is a protocol error, explained by :data:`_REFUSALS`; an internal
#: event's, a bug of the session.
TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (_S.AWAITING_CONFIGURATION, "configurationEvent"): _S.STREAMING,
    # Inlined by ScribeSession.receive_audio_event's fast path: audio is taken
    # only while STREAMING, and leaves the state as it is.
    (_S.STREAMING, "audioEvent"): _S.STREAMING,
    (_S.STREAMING, "binaryAudioEvent"): _S.STREAMING,
    # Applied once the audio before END_OF_SESSION is counted, and only if that
    # left the session STREAMING: a fault it made due (FAILED or PAUSED), or the
    # audio limit it passed (FAILED), is the stream's outcome instead.
    (_S.STREAMING, "sessionControlEvent"): _S.COMPLETED,
    # The input ending without END_OF_SESSION, or the client going quiet, pauses
    # the session: a new stream may resume it.
    (_S.AWAITING_CONFIGURATION, "inputClosed"): _S.PAUSED,
    (_S.STREAMING, "inputClosed"): _S.PAUSED,
    (_S.AWAITING_CONFIGURATION, "timeout"): _S.PAUSED,
    (_S.STREAMING, "timeout"): _S.PAUSED,
    # An exception fails the stream from any state but FAILED (where a second one
    # is not sent): ScribeSession.fail is the caller's report of an error, which
    # need not check the state first.
    (_S.AWAITING_CONFIGURATION, "fail"): _S.FAILED,
    (_S.STREAMING, "fail"): _S.FAILED,
    (_S.COMPLETED, "fail"): _S.FAILED,
    (_S.PAUSED, "fail"): _S.FAILED,
    # Scripted faults fall due on the audio clock, which runs only while STREAMING.
    (_S.STREAMING, "disconnect"): _S.PAUSED,
}

_REFUSALS: dict[SessionState, str] = {
    _S.AWAITING_CONFIGURATION: (
        "{event} received before configurationEvent: the first event of a stream "
        "must be a configurationEvent"
    ),
    _S.STREAMING: "{event} received after the configurationEvent: only one is allowed per stream",
    _S.COMPLETED: "{event} received after END_OF_SESSION: the session has ended",
    _S.FAILED: "{event} received after the stream failed",
    _S.PAUSED: "{event} received after the input stream was closed",
}

#: Events that carry audio: the JSON one is base64, the binary one raw.
AUDIO_EVENTS = frozenset({"audioEvent", "binaryAudioEvent"})


class ScenarioSource(Protocol):
    """What the session replays: segments in begin order, and faults."""

    # Read-only: the scenarios are frozen dataclasses.
    @property
    def name(self) -> str: ...

    @property
    def faults(self) -> tuple[Fault, ...]: ...

    def iter_segments(self) -> Iterator[Segment]: ...


@dataclass(slots=True)
class _Active:
    """A segment whose begin the clock has passed, and how far it was released."""

    segment: Segment
    index: int  # its place in the scenario, which also names it (see segment_id)
    segment_id: str
    released: int = 0  # partials sent so far
    cuts: _Cuts | None = None  # where its partial texts end, made at its first partial


@dataclass(slots=True)
class SessionStats:
    """What one stream received (counted by the session) and sent (counted as the
    stream sends it, by :meth:`emulator.record.SessionRecord.output_sent`)."""

    events_received: dict[str, int] = field(default_factory=dict)
    audio_bytes: int = 0
    results_sent: int = 0
    partials_sent: int = 0
    finals_sent: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionProgress:
    """How far a session got: what a stream resuming it continues from.

    ``audio_seconds`` is the session's audio clock; ``next_segment`` the index
    (in the scenario's begin order) of the first segment not yet begun;
    ``active`` the segments begun but not finalised, as ``(index, partials
    released)``; ``fired_faults`` the indexes (in ``at`` order) of faults that
    fired. Raises :class:`ValueError` for impossible values.
    """

    audio_seconds: float = 0.0
    next_segment: int = 0
    active: tuple[tuple[int, int], ...] = ()
    fired_faults: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.audio_seconds < 0 or self.next_segment < 0:
            raise ValueError("audio_seconds and next_segment must be >= 0")
        bad = [pair for pair in self.active if not 0 <= pair[0] < self.next_segment or pair[1] < 0]
        if bad:
            raise ValueError(f"active segments {self.active} must lie before {self.next_segment}")

    def to_json(self) -> dict[str, object]:
        """Return the progress as a JSON-ready mapping (the form :meth:`from_json` reads)."""
        return {
            "audioSeconds": self.audio_seconds,
            "nextSegment": self.next_segment,
            "active": [list(pair) for pair in self.active],
            "firedFaults": list(self.fired_faults),
        }

    @classmethod
    def from_json(cls, data: object) -> SessionProgress:
        """Return the progress :meth:`to_json` wrote; raises :class:`ValueError` otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"session progress must be a JSON object, got {type(data).__name__}")
        try:
            return cls(
                audio_seconds=float(data["audioSeconds"]),
                next_segment=int(data["nextSegment"]),
                active=tuple((int(i), int(r)) for i, r in data["active"]),
                fired_faults=tuple(int(i) for i in data["firedFaults"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"invalid session progress: {error!r}") from None


#: The states in which a session takes no more input (:attr:`ScribeSession.finished`).
#: A tuple of three: ``in`` finds a member by identity before any hashing or
#: ``__eq__`` (the stream's pump asks once per DATA frame).
FINISHED_STATES = (_S.COMPLETED, _S.FAILED, _S.PAUSED)


class ScribeSession:
    """The state machine of one StartMedicalScribeListeningSession stream.

    ``scenario_for`` is called once, with the validated configuration, to pick
    what is replayed (it may raise :class:`ValidationException` to refuse the
    configuration). ``send`` receives every output event in order; ``on_audio``,
    when given, every audio chunk accepted, before the clock reads it, as
    ``on_audio(data, base64)``: the audio bytes, or (``base64`` true) the
    validated base64 text of an ``audioEvent``'s chunk, left undecoded.
    ``resume`` continues a paused session from its :class:`SessionProgress`;
    ``stats``, when given, is counted on (a session's totals over its streams).
    """

    def __init__(
        self,
        *,
        request: StreamRequest,
        scenario_for: Callable[[Configuration], ScenarioSource],
        send: Callable[[OutputEvent], None],
        resume: SessionProgress | None = None,
        on_audio: Callable[[bytes, bool], None] | None = None,
        max_audio_seconds: float = MAX_SESSION_AUDIO_SECONDS,
        stats: SessionStats | None = None,
    ) -> None:
        self.request = request
        self.state = SessionState.AWAITING_CONFIGURATION  # TRANSITIONS' start; _move changes it
        self.configuration: Configuration | None = None
        self.scenario: ScenarioSource | None = None
        self.stats = stats if stats is not None else SessionStats()
        self.resumed = resume is not None
        #: Whether a configurationEvent was accepted: until then the stream has
        #: changed nothing of the session.
        self.configured = False
        #: Why the stream paused the session, for the log (set with PAUSED).
        self.pause_reason: str | None = None
        self._resume = resume or SessionProgress()
        self._base = self._resume.audio_seconds
        # _base plus the clock's seconds, kept as the clock moves: the journal
        # reads it for every audio event (two property calls, 7% of one).
        self._now = self._base
        self._scenario_for = scenario_for
        self._send = send
        self._on_audio = on_audio
        self._max_audio = max_audio_seconds
        self._clock: _Clock | None = None
        self._counts_bytes = False  # the clock is a PcmClock: base64 audio needs no decode
        self._segments: Iterator[Segment] = iter(())
        self._next_segment: Segment | None = None
        self._next_index = self._resume.next_segment
        self._active: list[_Active] = []
        # This stream's finalised segments, by id: what withdraw() may set back.
        self._finalised: dict[str, _Active] = {}
        self._faults: list[tuple[int, Fault]] = []
        # Audio time before which _advance has nothing to release (see _next_release).
        self._wake_at = -math.inf
        self._fired: set[int] = set(self._resume.fired_faults)

    # -- public ------------------------------------------------------------

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio of the whole session: earlier streams' and this one's."""
        return self._now

    def progress(self) -> SessionProgress:
        """Return how far the session got, for a later stream to resume from."""
        if not self.configured:  # nothing moved (a refused configuration included)
            return self._resume
        return SessionProgress(
            audio_seconds=self.audio_seconds,
            next_segment=self._next_index,
            active=tuple((active.index, active.released) for active in self._active),
            fired_faults=tuple(sorted(self._fired)),
        )

    def withdraw(self, results: Sequence[TranscriptResult]) -> bool:
        """Take back ``results``, made by this session but never sent (held by a
        chaos pause when the stream closed), so that a stream resuming the session
        sends them again: its :meth:`progress` goes back to before the first of
        them of each segment. Results of a segment come in order (its partials,
        then its final), so the last ones of a segment are the ones not sent.
        A completed or failed session is never resumed: it is left as it is, and
        False says so (the caller keeps the results some other way).
        """
        if self.state in (_S.COMPLETED, _S.FAILED):
            return False
        withdrawn: dict[str, int] = {}
        for result in results:
            withdrawn[result.segment_id] = withdrawn.get(result.segment_id, 0) + 1
        by_id = {active.segment_id: active for active in self._active}
        for segment_id, count in withdrawn.items():
            active = by_id.get(segment_id)
            if active is None and (active := self._finalised.pop(segment_id, None)) is not None:
                count -= 1  # its final, and the partials before it
                self._active.append(active)
            if active is not None:
                active.released = max(0, active.released - count)
        self._active.sort(key=lambda active: active.index)
        return True

    @property
    def finished(self) -> bool:
        """True once no more input is accepted (completed, failed or paused)."""
        return self.state in FINISHED_STATES

    def receive_event(self, message: Message) -> None:
        """Apply one inner input event.

        Raises :class:`ValidationException` when the event is not acceptable now;
        the caller reports it in-stream and calls :meth:`fail`.
        """
        event_type = _event_type(message)
        self._accept(event_type)
        if event_type == "configurationEvent":
            configuration = parse_configuration_event(message.payload)
            self._move(event_type)
            self._configure(configuration)
        elif event_type in AUDIO_EVENTS:
            # (STREAMING, audio) -> STREAMING: nothing to move.
            self._receive_audio_payload(event_type, message.payload)
        else:
            parse_session_control_event(message.payload)
            self._end_of_session()

    def receive_audio_event(self, event_type: str, payload: bytes) -> None:
        """:meth:`receive_event` for an ``audioEvent`` or ``binaryAudioEvent`` with
        this payload.

        For a caller that has read the event type already, e.g. with
        :func:`emulator.eventstream.sdk_audio_event`; same effects, same errors.
        """
        # The per-frame path, flattened: a streaming session with a PCM clock
        # takes the SDK's audio event in one call instead of five (_accept,
        # _receive_audio_payload, _receive_audio and the clock's), each of which
        # cost about a thousand instructions of an event's 68k. Anything this
        # does not take goes the general way below, with its checks and errors.
        # The state check is TRANSITIONS' (STREAMING, audioEvent / binaryAudioEvent)
        # -> STREAMING entries, inlined: no lookup, and no state to move.
        if self.state is _S.STREAMING and self._counts_bytes:
            base64 = event_type == "audioEvent"
            if base64:  # checked, and journaled undecoded, as _receive_audio_payload does
                size = audio_event_size(payload)
                chunk = payload[AUDIO_CHUNK_START:-AUDIO_CHUNK_STOP]
            elif event_type == "binaryAudioEvent":
                size = len(payload)
                chunk = payload
            else:
                size = -1
            if 0 <= size <= MAX_AUDIO_CHUNK_BYTES:
                counts = self.stats.events_received
                counts[event_type] = counts.get(event_type, 0) + 1
                if self._on_audio is not None:
                    self._on_audio(chunk, base64)
                self.stats.audio_bytes += size
                # _counts_bytes says the clock is a PcmClock: no narrowing check per event.
                now = self._clock.add_count(size)  # type: ignore[union-attr]
                if self._base:  # _plus_base, inline
                    now = round(self._base + now, 9)
                self._now = now
                if now > self._max_audio:
                    if self._to_the_limit():
                        raise self._over_limit(now)
                    return
                if now >= self._wake_at:
                    self._advance(now)
                return
        self._accept(event_type)
        self._receive_audio_payload(event_type, payload)

    def input_closed(
        self, *, release: bool = False, why: str = "its input ended without END_OF_SESSION"
    ) -> None:
        """The client's input ended without END_OF_SESSION: the session pauses
        (``why``, for the log: the client's end, its connection's, the emulator's).

        The clock is finished so a FLAC stream's last frame counts: a resumed
        stream starts its audio after it, and a session it takes past the audio
        limit fails (it could never be resumed to end it). With ``release``
        (the client closed its side, and may read on), the results and faults
        that frame makes due are sent now rather than in the next stream.
        """
        if self.finished:
            return
        self._finish_clock(release=release)
        if not self.finished:
            self._move("inputClosed")
            self.pause_reason = why

    def time_out(self, message: str) -> None:
        """End the stream with an in-stream ``validationException`` for a client gone
        quiet; the session pauses, resumable, as when a client's input closes (a
        network that drops without a word is the commonest way to lose a client)."""
        if self.finished:
            return
        self._finish_clock(release=True)
        if self.finished:  # past the audio limit, or a fault fell due
            return
        self._send(StreamException(member="validationException", message=message))
        self._move("timeout")
        self.pause_reason = "no input for the idle timeout"

    def _finish_clock(self, *, release: bool) -> None:
        if self._clock is None:
            return
        try:
            self._clock.finish()
        except ValidationException:
            pass  # a FLAC stream cut inside its metadata: no frames to count
        now = self._now = self._plus_base(self._clock.seconds)
        if now > self._max_audio:
            if self._to_the_limit():
                self.fail("validationException", self._over_limit(now).message)
        elif release and self.state is _S.STREAMING:
            self._advance(now)

    def fail(self, member: str, message: str) -> None:
        """End the stream with an in-stream exception ``member`` carrying ``message``;
        a stream that failed already sends nothing more."""
        if self.state is _S.FAILED:
            return
        self._move("fail")
        self._send(StreamException(member=member, message=message))

    # -- internals ----------------------------------------------------------

    def _accept(self, event_type: str) -> None:
        """Count an input event. Raises :class:`ValidationException`, the refusal,
        when :data:`TRANSITIONS` has no entry for it in this state."""
        counts = self.stats.events_received
        counts[event_type] = counts.get(event_type, 0) + 1
        if (self.state, event_type) not in TRANSITIONS:
            raise ValidationException(_REFUSALS[self.state].format(event=event_type))

    def _move(self, event: str) -> None:
        """Take the state :data:`TRANSITIONS` gives for ``event`` in this one.

        Raises :class:`ValueError` for a pair not in the table: input events are
        refused by :meth:`_accept` first, so that is a bug of the session.
        """
        next_state = TRANSITIONS.get((self.state, event))
        if next_state is None:
            raise ValueError(f"no session transition from {self.state.name} on {event!r}")
        self.state = next_state

    def _configure(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self._clock = make_clock(
            encoding=self.request.media_encoding,
            sample_rate=self.request.sample_rate,
            channels=configuration.channels,
            resumed=self.resumed,
        )
        self._counts_bytes = isinstance(self._clock, PcmClock)
        self.scenario = self._scenario_for(configuration)
        self._segments = self.scenario.iter_segments()
        # Skip what earlier streams of the session replayed, keeping those under way.
        under_way = dict(self._resume.active)
        for index in range(self._resume.next_segment):
            segment = next(self._segments, None)
            if segment is None:
                break
            if index in under_way:
                self._active.append(
                    _Active(
                        segment=segment,
                        index=index,
                        segment_id=segment_id(self.request.session_id, index),
                        released=under_way[index],
                    )
                )
        self._next_segment = next(self._segments, None)
        faults = sorted(self.scenario.faults, key=lambda f: f.at)
        self._faults = [(i, fault) for i, fault in enumerate(faults) if i not in self._fired]
        self.configured = True
        # A fault at 0 fires before any audio: the clock "reaches" its start at once.
        self._advance(self._base)

    def _receive_audio_payload(self, event_type: str, payload: bytes) -> None:
        if event_type == "binaryAudioEvent":
            self._receive_audio(payload, event_type)
            return
        # A PCM clock counts bytes, so JSON audio in the SDK's layout is checked
        # and journaled as base64, never decoded (the costliest step of an audio
        # event); FLAC's clock reads frame headers from the bytes.
        if self._counts_bytes and (size := audio_event_size(payload)) >= 0:
            text = payload[AUDIO_CHUNK_START:-AUDIO_CHUNK_STOP]
            self._receive_audio(text, "audioEvent", size=size)
        else:
            self._receive_audio(parse_audio_event(payload), "audioEvent")

    def _receive_audio(self, chunk: bytes, event_type: str, *, size: int | None = None) -> None:
        """Take one audio event's audio: ``chunk`` is the audio, or with ``size``
        its validated base64 text (for a PCM clock only).
        """
        count = len(chunk) if size is None else size
        if count > MAX_AUDIO_CHUNK_BYTES:
            raise ValidationException(
                f"{event_type} carries {count} bytes of audio: an audio event may "
                f"carry at most {MAX_AUDIO_CHUNK_BYTES} bytes"
            )
        assert self._clock is not None
        if self._on_audio is not None:
            self._on_audio(chunk, size is not None)
        self.stats.audio_bytes += count
        if size is None:
            try:
                now = self._plus_base(self._clock.add(chunk))
            except ValidationException:
                # A FLAC frame refused: keep what was counted, and send what its
                # whole frames made due first (their audio came in full), as at
                # the audio limit.
                now = self._now = self._plus_base(self._clock.seconds)
                if self.state is _S.STREAMING:
                    self._advance(min(now, self._max_audio))
                if self.state is _S.STREAMING:
                    raise
                return  # a scripted fault that fell due ended the session first
            except BaseException:
                self._now = self._plus_base(self._clock.seconds)
                raise
        else:
            assert isinstance(self._clock, PcmClock)
            now = self._plus_base(self._clock.add_count(size))
        self._now = now
        if now > self._max_audio:
            if self._to_the_limit():
                raise self._over_limit(now)
            return
        self._advance(now)

    def _plus_base(self, seconds: float) -> float:
        """The session's time at ``seconds`` of this stream's audio: the earlier
        streams' audio plus it, rounded to the nanosecond. Summed as floats, 0.3 s
        and 1.9 s made 2.1999999999999997, short of a result due at 2.2 s, which
        then came an audio event late (or in the next stream). One stream's
        time needs no rounding: a count over a rate is the float nearest its
        decimal, as a script's times are."""
        base = self._base
        return round(base + seconds, 9) if base else seconds

    def _to_the_limit(self) -> bool:
        """Release what falls due up to the audio limit, which the clock has just
        passed: the audio of those results came in full. Returns whether the session
        still runs (a scripted fault at or before the limit may have ended it)."""
        if self.state is _S.STREAMING:
            self._advance(self._max_audio)
        return self.state is _S.STREAMING

    def _over_limit(self, now: float) -> ValidationException:
        return ValidationException(
            f"the session now has {_past(now, self._max_audio)} s of audio: a listening "
            "session may carry "
            f"at most {describe_duration(self._max_audio)} of audio over all its streams"
        )

    def _end_of_session(self) -> None:
        assert self._clock is not None
        now = self._now = self._plus_base(self._clock.finish())
        if now > self._max_audio:  # a FLAC stream's last frame, counted only now
            if self._to_the_limit():
                raise self._over_limit(now)
            return
        self._advance(now)
        if self.state is not _S.STREAMING:  # a fault fired on the last audio: its outcome stands
            return
        self._move("sessionControlEvent")
        # Segments already under way get their final now, clamped to the audio
        # received: no offset ever lies beyond the audio. One the audio ends at
        # (or less than a millisecond past) the begin of was never heard: it
        # would end where it begins, and is not sent, unless a partial was.
        end = math.floor(now * 1000 + 1e-6) / 1000
        for active in self._active:
            segment = active.segment
            if not active.released and _unheard(segment, now):
                continue
            self._emit_result(
                active, content=segment.content, partial=False, end=_clamped(segment, end)
            )
        self._active.clear()

    def _advance(self, now: float) -> None:
        """Release everything the clock has reached, in time order."""
        if now < self._wake_at:
            return  # most audio events: nothing falls due before the next release
        while self._next_segment is not None and self._next_segment.begin <= now:
            index = self._next_index
            self._active.append(
                _Active(
                    segment=self._next_segment,
                    index=index,
                    segment_id=segment_id(self.request.session_id, index),
                )
            )
            self._next_index += 1
            self._next_segment = next(self._segments, None)
        due: list[tuple[float, int, int, _Active | int]] = []
        order = itertools.count()
        for active in self._active:
            seg = active.segment
            for k in range(active.released + 1, seg.partials + 1):
                at = _partial_time(seg, k)
                if at > now:
                    break
                due.append((at, 0, next(order), active))
            if seg.end <= now:
                due.append((seg.end, 1, next(order), active))
        for fault_index, fault in self._faults:
            if fault.at > now:
                break
            due.append((fault.at, 2, next(order), fault_index))
        heapq.heapify(due)
        while due:
            at, kind, _, item = heapq.heappop(due)
            if isinstance(item, int):
                self._fire(item)
                self._wake_at = -math.inf
                return
            if kind == 0:
                item.released += 1
                seg = item.segment
                if seg.partial_texts:
                    content = seg.partial_texts[item.released - 1]
                else:
                    if item.cuts is None:
                        item.cuts = _Cuts(seg.content)
                    content = _prefix(seg.content, item.released, seg.partials, item.cuts)
                # A partial covers the audio heard so far: its end is its release
                # time, never beyond the audio received.
                self._emit_result(item, content=content, partial=True, end=at)
            else:
                self._emit_result(
                    item, content=item.segment.content, partial=False, end=item.segment.end
                )
                self._active.remove(item)
                self._finalised[item.segment_id] = item
        self._wake_at = self._next_release()

    def _next_release(self) -> float:
        """The earliest audio time at which :meth:`_advance` has anything to do."""
        wake = math.inf if self._next_segment is None else self._next_segment.begin
        for active in self._active:
            seg = active.segment
            if active.released < seg.partials:
                wake = min(wake, _partial_time(seg, active.released + 1))
            else:
                wake = min(wake, seg.end)
        if self._faults:
            wake = min(wake, self._faults[0][1].at)  # sorted by time
        return wake

    def _fire(self, fault_index: int) -> None:
        fault = next(f for i, f in self._faults if i == fault_index)
        self._faults = [(i, f) for i, f in self._faults if i != fault_index]
        self._fired.add(fault_index)
        if fault.disconnect:
            self._move("disconnect")
            self.pause_reason = f"scripted disconnect at {fault.at:g} s"
            self._send(StreamReset(reason=f"scripted disconnect at {fault.at} s"))
            return
        assert fault.exception is not None
        self.fail(fault.exception, fault.message or f"scripted {fault.exception} at {fault.at} s")

    def _emit_result(self, active: _Active, *, content: str, partial: bool, end: float) -> None:
        seg = active.segment
        channel = None
        if self.configuration is not None and self.configuration.channel_definitions:
            channel = f"ch_{seg.channel}"
        self._send(
            TranscriptResult(
                segment_id=active.segment_id,
                begin=seg.begin,
                end=end,
                is_partial=partial,
                content=content,
                channel_id=channel,
            )
        )


class _Clock(Protocol):
    @property
    def seconds(self) -> float: ...

    def add(self, chunk: bytes) -> float: ...

    def finish(self) -> float: ...


def _event_type(message: Message) -> str:
    headers = message.headers
    message_type = headers.get(":message-type")
    if message_type is None:
        raise ValidationException(
            "input message has no :message-type header: input events must have "
            ":message-type 'event'"
        )
    if message_type != "event":
        raise ValidationException(
            f"input message's :message-type is {_header_value(message_type)}: input events "
            "must have :message-type 'event', a string header (type 7)"
        )
    event_type = headers.get(":event-type")
    if event_type is not None and not isinstance(event_type, str):
        raise ValidationException(
            f"input message's :event-type is {describe_header_value(event_type)}: it must "
            "be a string header (type 7)"
        )
    if not event_type:
        raise ValidationException(
            f"input message has {'no' if event_type is None else 'an empty'} :event-type "
            "header: input events must name one of " + ", ".join(sorted(INPUT_EVENT_TYPES))
        )
    if event_type not in INPUT_EVENT_TYPES:
        raise ValidationException(
            f"unknown input event type {quote_text(event_type)}: expected one of "
            + ", ".join(sorted(INPUT_EVENT_TYPES))
        )
    return event_type


def _header_value(value: object) -> str:
    """A header value as a message quotes it: a string as text (cut when long), any
    other type with its event-stream type (``b'audioEvent'`` is a byte array, type 6)."""
    return quote_text(value) if isinstance(value, str) else describe_header_value(value)


def _partial_time(segment: Segment, k: int) -> float:
    """When the k-th of N partials is due, and its ``audioEndOffset``: begin + k/(N+1)
    of the segment, to the millisecond, as the service reports offsets (0.6, not
    0.6000000000000001); at least a millisecond after begin, as a segment is heard
    only once the audio passes its begin by one (rounded down to begin, a partial
    covered no audio, and a stream ending at the begin got it); never after the
    end (a segment shorter than its partials' milliseconds)."""
    at = round(segment.begin + k * (segment.end - segment.begin) / (segment.partials + 1), 3)
    # The first millisecond at least one past the begin (1.0004 -> 1.002, 1.0 -> 1.001).
    earliest = math.ceil(round((segment.begin + 0.001) * 1000, 6)) / 1000
    return _clamped(segment, max(at, earliest))


def _past(seconds: float, limit: float) -> str:
    """``seconds`` to the millisecond, or with as many more digits as it takes to
    show it past ``limit`` (a sample past 2 hours read "7200.000 s")."""
    for digits in (3, 6, 9):
        text = f"{seconds:.{digits}f}"
        if float(text) > limit:
            return text
    return repr(seconds)


def _unheard(segment: Segment, now: float) -> bool:
    """Whether audio up to ``now`` passes ``segment``'s begin by less than a
    millisecond (compared to a micro-millisecond: clock sums are not exact)."""
    return (now - segment.begin) * 1000 < 1 - 1e-6


def _clamped(segment: Segment, at: float) -> float:
    """``at`` within ``segment``: from its begin to its end."""
    return min(max(at, segment.begin), segment.end)


class _Cuts:
    """Where a segment's partial texts end, found as its partials come: its words
    counted once, and each cut found from the one before, so that all of its
    partials read its text about twice. (Each partial listed every word's end:
    0.8 s for a content of 16 MiB, whose 50 partials stalled the server 40 s.)"""

    __slots__ = ("content", "start", "words", "_at", "_seen", "_text")

    def __init__(self, content: str) -> None:
        self.content = content
        # Words from the first visible character: a leading word of zero-width
        # characters only (a ZWSP or BOM pasted with the text) made a partial that
        # showed nothing. Any later word comes after a visible one.
        self.start = visible_start(content)
        # str.split() and \S+ both part words at str.isspace() characters.
        self.words = len(content[self.start :].split())
        self._at, self._seen = self.start, 0
        self._text: str | None = None

    def word_end(self, m: int) -> int:
        """Where the ``m``-th word (from 1) ends: found from the last one asked
        for, as partials ask in rising order."""
        if m < self._seen:
            self._at, self._seen = self.start, 0
        if m > self._seen:
            for word in _WORD.finditer(self.content, self._at):
                self._seen += 1
                if self._seen == m:
                    self._at = word.end()
                    break
        return self._at

    @property
    def text(self) -> str:
        """The content without its trailing spaces (a one-word content's, kept)."""
        if self._text is None:
            self._text = self.content.rstrip()
        return self._text


def _prefix(content: str, k: int, n: int, cuts: _Cuts | None = None) -> str:
    """The k-th of n partial texts: the first k/(n+1) share of the words.

    ``content`` cut after a word (its spacing kept), so a partial is a prefix
    of its final byte for byte; a one-word content is cut inside its word.
    Shows a visible character, and is shorter than ``content`` unless that is
    one character (a scenario gives such a segment no partial, see
    :func:`emulator.graphemes.can_have_partials`). ``cuts``, the segment's
    :class:`_Cuts` (made here when not given), carries the work from one
    partial to the next.
    """
    if cuts is None:
        cuts = _Cuts(content)
    start = cuts.start
    if cuts.words > 1:
        count = min(max(1, cuts.words * k // (n + 1)), cuts.words - 1)
        return content[: cuts.word_end(count)]
    # One word: cut inside the word instead, after any space before it, and
    # between characters as a reader sees them (never half a flag, accent or
    # conjunct). The share in code points, moved back to a character's start
    # (a look at a few code points, not a walk of the text); at least the
    # first character, and never the last (see can_have_partials).
    text = cuts.text
    length = len(text) - start
    cut = character_start(text, start + min(max(1, length * k // (n + 1)), length - 1), start)
    if cut <= start:
        ends = character_ends(text, start, limit=2)
        if len(ends) < 2:
            return content  # one character: no partial text
        cut = ends[0]
    return content[:cut]


_WORD = re.compile(r"\S+")


def segment_id(session_id: str, index: int) -> str:
    """Return the id of the scenario's ``index``-th segment in session ``session_id``.

    Repeatable: a session replays with the same ids, and a resumed stream goes on
    with the ids of the segments it continues. The id is
    ``uuid.uuid5(namespace, str(index))`` in the session's namespace, built
    from the SHA-1 digest directly: ``uuid.uuid5`` makes two UUID objects and
    an integer of each (a tenth of a real-time audio event's cost when a
    segment starts).
    """
    return _uuid_text(_uuid5(_segment_namespace(session_id), str(index)))


@functools.lru_cache(maxsize=4096)
def _segment_namespace(session_id: str) -> bytes:
    # Hashed once per session rather than once per result: a live session's
    # results all come from the same few thousand sessions.
    return _uuid5(uuid.NAMESPACE_URL.bytes, f"medscribe-emulator:{session_id}")


def _uuid5(namespace: bytes, name: str) -> bytes:
    """The 16 bytes of ``uuid.uuid5(UUID(bytes=namespace), name)`` (RFC 4122 section 4.3)."""
    digest = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return bytes(digest)


def _uuid_text(raw: bytes) -> str:
    """``str(uuid.UUID(bytes=raw))``: 8-4-4-4-12 lowercase hex digits."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def describe_duration(seconds: float) -> str:
    """Return ``7200`` as ``"7200 s (2 hours)"``: a limit named as the service states it."""
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{seconds:g} s ({hours} hour{'s' if hours != 1 else ''})"
    return f"{seconds:g} s"
