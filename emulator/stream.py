"""The ASGI adapter of ``POST /medical-scribe-stream/``: full duplex over one HTTP/2 stream.

This is raw ASGI on purpose: the adapter owns ``receive`` so no request-body
message is swallowed (Starlette's ``StreamingResponse`` would call ``receive``
to watch for a disconnect), and it sends the response start before the request
body has ended, which is what lets transcript events flow while audio arrives.

A :class:`~emulator.errors.ServiceError` raised before the stream opens is sent
by :func:`error_response` as :func:`emulator.errors.http_error` shapes it; one
raised after ends the session with the output-stream member
:func:`emulator.errors.stream_member_of` names (see :func:`_fail`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from time import monotonic as _monotonic
from typing import Any

from .chaos import ChaosRunner, malformed_frame, paced
from .errors import (
    FramingError,
    ServiceError,
    ValidationException,
    http_error,
    service_error,
    stream_member_of,
)
from .events import (
    OutputEvent,
    StreamException,
    StreamReset,
    TranscriptResult,
    encode_output,
    transcript_message,
    transcript_payload,
)
from .eventstream import EventStreamDecoder, Message, open_envelope
from .extensions import (
    CONNECTION_EXTENSION,
    INLINE_BODY_EXTENSION,
    MORE_BODIES,
    ConnectionControlLike,
    InlineBodyLike,
    Receive,
    Scope,
    Send,
)
from .ids import new_request_id, request_id_headers
from .journal import Journal
from .logs import get_logger
from .quotas import Quotas, access_key_of
from .record import SessionRecord
from .session import AUDIO_EVENTS, CUT_OFF, FINISHED_STATES, ScribeSession
from .sigv4 import ChunkVerifier, CredentialStore, RequestSignature, verify_request
from .validation import validate_stream_headers

__all__ = ["StreamEndpoint", "error_response"]

log = get_logger("medscribe.stream")

#: An unfinished input message larger than this counts against
#: :data:`MAX_UNFINISHED` (the largest valid audio event is about 43 KB).
LARGE_UNFINISHED = 64 * 1024
#: Bytes of such messages the emulator's streams may hold at once.
MAX_UNFINISHED = 256 * 1024 * 1024

_EVENTSTREAM = b"application/vnd.amazon.eventstream"


async def error_response(send: Send, error: ServiceError, *, request_id: str) -> None:
    """Send ``error`` through the ASGI ``send`` as :func:`emulator.errors.http_error`
    shapes it, with ``request_id`` under both request-id headers."""
    status, headers, body = http_error(error, headers=request_id_headers(request_id))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class StreamEndpoint:
    """ASGI app for one route: StartMedicalScribeListeningSession.

    ``backend`` is the :class:`emulator.backend.Backend` holding rules,
    scenarios and sessions. Every input and output event goes to the session's
    journal as it passes. ``https_url``, the server's TLS endpoint, is named to
    a client that came over HTTP/1.1.
    """

    def __init__(
        self,
        backend: Any,
        *,
        credentials: CredentialStore | None = None,
        idle_timeout: float = 0.0,
        quotas: Quotas | None = None,
        https_url: str | None = None,
    ) -> None:
        self.backend = backend
        self.https_url = https_url
        self.quotas = quotas
        #: Seconds a stream may go without input before it is ended (0: never).
        self.idle_timeout = idle_timeout
        #: With credentials, every request and event signature is verified.
        self.credentials = credentials
        #: Bytes of unfinished input messages past :data:`LARGE_UNFINISHED`, by
        #: stream (see :meth:`_hold`).
        self._held: dict[object, int] = {}

    def _hold(self, stream: object, size: int) -> None:
        """Note that ``stream`` holds ``size`` bytes of an unfinished input message
        (0: none). Raises :class:`ValidationException` when the streams' held
        messages past :data:`LARGE_UNFINISHED` would come to more than
        :data:`MAX_UNFINISHED`: no valid event comes near (an audio event is
        about 43 KB), and each stream may hold up to 24 MiB (the event-stream
        limit), as its session takes the bytes it buffers: 30 streams of a
        client sending such messages but their last bytes took a GB."""
        held = self._held
        if size <= LARGE_UNFINISHED:
            held.pop(stream, None)
            return
        others = sum(held.values()) - held.get(stream, 0)
        if others + size > MAX_UNFINISHED:
            held.pop(stream, None)
            raise ValidationException(
                f"an unfinished event-stream message of {size} bytes so far: the "
                f"emulator's streams hold {others + size} bytes of unfinished messages "
                f"over {LARGE_UNFINISHED} bytes each, more than its limit of "
                f"{MAX_UNFINISHED} (an audio event carries at most 32,000 bytes of audio)"
            )
        held[stream] = size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        signature: RequestSignature | None = None
        quota_key: str | None = None
        refused_by: str | None = None  # the rule whose error refused the request
        try:
            if scope.get("http_version") != "2":
                raise self._not_http2(scope.get("http_version"), scope.get("scheme"))
            if self.credentials is not None:
                # Before the headers: a 401 wins over a 400, as on the service.
                signature = verify_request(
                    method=scope["method"],
                    path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
                    query=scope["query_string"].decode("latin-1"),
                    headers=scope["headers"],
                    store=self.credentials,
                    now=datetime.now(UTC),
                )
            request = validate_stream_headers(scope["headers"])
            self.backend.check_resources(
                domain_id=request.domain_id, subscription_id=request.subscription_id
            )
            rule = self.backend.match_rule(request)
            if rule is not None and rule.error is not None:
                self.backend.rules.use(rule)  # a use: the request it refuses
                self.backend.note_refused(request)
                refused_by = rule.id
                raise service_error(*rule.error)
            if self.quotas is not None:
                quota_key = access_key_of(scope["headers"])
                self.quotas.open_stream(quota_key)
            try:
                record = self.backend.open_stream(request, request_id=request_id, rule=rule)
            except BaseException:
                if quota_key is not None:
                    self.quotas.close_stream(quota_key)  # type: ignore[union-attr]
                raise
        except ServiceError as error:
            self.backend.record_rejection(
                scope["headers"], error, request_id=request_id, rule_id=refused_by
            )
            await error_response(send, error, request_id=request_id)
            return

        out: list[bytes] = []
        resets: list[StreamReset] = []
        journal: Journal = record.journal
        # The stream's timer: input awaited, and output the client must take.
        idle = _IdleWatch(self.idle_timeout)

        # Paced chaos output is counted and journaled as each event is sent (see
        # ChaosRunner.write), not when it is made: a client that goes away
        # during a pause was never sent the rest.
        on_sent: list[Callable[[], object]] | None = (
            [] if rule is not None and paced(rule.chaos) else None
        )

        def emit(event: OutputEvent) -> None:
            if isinstance(event, StreamReset):
                resets.append(event)
                journal.record(
                    {
                        "direction": "out",
                        "type": "streamReset",
                        "reason": event.reason,
                        "audioClock": record.audio_seconds,
                    }
                )
                return
            # Encoded before it is counted: an event that cannot be encoded
            # was not sent.
            if type(event) is TranscriptResult:
                payload = transcript_payload(event)
                out.append(transcript_message(payload))
                if on_sent is not None:
                    on_sent.append(_HeldResult(event, record, journal, payload))
                    return
                record.output_sent(event)
                journal.record_transcript(payload, record.audio_seconds)
                return
            out.append(encode_output(event))
            if on_sent is not None:
                if isinstance(event, StreamException):
                    record.note_error(event)  # why it failed, even if never sent
                on_sent.append(partial(_sent_other, record, journal, event))
                return
            record.output_sent(event)
            journal.record(_output_entry(event, record.audio_seconds))

        # From here on the stream is open in the backend's count (which the
        # server's idle full collections read) and in the quotas: whatever
        # fails, the finally below closes it.
        chaos: ChaosRunner | None = None
        try:
            session = self.backend.new_session(record, request, rule=rule, send=emit)
            chaos = ChaosRunner(
                rule.chaos if rule is not None else None,
                seed=self.backend.seed,
                session_id=request.session_id,
                scope=scope,
                on_sent=on_sent,
                resumed_at=session.audio_seconds if session.resumed else None,
            )
            await chaos.before_response()
            extensions = scope.get("extensions", {})
            inline = extensions.get(INLINE_BODY_EXTENSION)
            control = extensions.get(CONNECTION_EXTENSION)
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *request.response_headers(),
                    (b"x-amzn-request-id", request_id.encode()),
                    (b"content-type", _EVENTSTREAM),
                ],
            }
            exchange = _Exchange(
                session=session,
                journal=journal,
                out=out,
                resets=resets,
                idle=idle,
                control=control,
                stream=record.streams,
            )
            # Timed as every send is (see _pump's timed_send): a client that
            # stopped reading its socket leaves even the headers waiting.
            if await self._within_timeout(send(start), exchange):
                await self._pump(
                    receive, send, exchange, signature=signature, chaos=chaos, inline=inline
                )
        finally:
            if chaos is not None and chaos.unsent:
                # Results a pause held when the stream closed: the session's script
                # had moved past them, and a resumed stream never sent them. A
                # session that is over keeps them in its journal, unsent: its
                # artifacts are of the audio, not of what reached the client.
                held = [h for h in chaos.unsent if isinstance(h, _HeldResult)]
                if not session.withdraw([h.event for h in held]):
                    for result in held:
                        result.journal_unsent()
            self.backend.close_stream(record)
            if quota_key is not None:
                self.quotas.close_stream(quota_key)  # type: ignore[union-attr]
            if resets:
                idle.stop()
        if resets:
            # Returning with the body unfinished makes the server reset the
            # HTTP/2 stream (see emulator.hypercorn_h2): the scripted disconnect.
            return
        # The end waits until the client has taken all the output. A stall here
        # comes after the session's end (its record saved): it is only told.
        end = {"type": "http.response.body", "body": b"", "more_body": False}
        try:
            await self._within_timeout(send(end), exchange)
        finally:
            idle.stop()

    async def _within_timeout(
        self, step: Awaitable[object], exchange: _Exchange, *, timed: bool = True
    ) -> bool:
        """Await ``step``, output to the client (a send, or a chaos GOAWAY or close),
        within the idle timeout; False when the client took none of the output
        for that long (see :meth:`_output_stalled`). ``timed=False`` for a step
        that times its own sends (paced output, whose pauses do not count)."""
        idle = exchange.idle
        try:
            await (idle.output(step) if timed else step)
        except asyncio.CancelledError:
            if not idle.timed_out():
                raise
            await self._output_stalled(exchange)
            return False
        return True

    def _not_http2(self, version: object, scheme: object = "http") -> ValidationException:
        """The refusal of a stream request over HTTP/1.x.

        The stream is full duplex, which HTTP/1.1 cannot carry; the service
        takes it over HTTP/2 only. The AWS SDK's CRT client, given an
        ``http://`` endpoint, speaks HTTP/1.1 and sends no body at all: without
        this its session got no audio and ended "successfully", empty.
        """
        where = (
            f"the emulator's https:// endpoint ({self.https_url}, trusting its ca.pem)"
            if self.https_url
            else "the emulator's https:// endpoint"
        )
        if scheme == "https":
            # TLS already: the client did not offer h2 in ALPN (curl --http1.1, an
            # HTTP/1.1-only library).
            return ValidationException(
                f"StartMedicalScribeListeningSession needs HTTP/2, but this request came over "
                f"HTTP/{version}: HTTP/2 was not negotiated on this TLS connection (offer "
                "'h2' in ALPN, as the AWS SDK does)"
            )
        return ValidationException(
            f"StartMedicalScribeListeningSession needs HTTP/2, but this request came over "
            f"HTTP/{version}: the AWS SDK sends no audio to an http:// endpoint. Use {where}, "
            "or HTTP/2 with prior knowledge on the cleartext port"
        )

    async def _pump(
        self,
        receive: Receive,
        send: Send,
        exchange: _Exchange,
        *,
        signature: RequestSignature | None,
        chaos: ChaosRunner,
        inline: InlineBodyLike | None,
    ) -> None:
        """Read the stream's input into its session and send the output, until the
        session ends, the input ends or the stream is reset; returns ``None`` and
        raises only what ``receive`` and ``send`` raise (the session's own
        errors end it: see :func:`_fail`)."""
        # Bound once: the closures below read them for every DATA frame.
        session = exchange.session
        journal = exchange.journal
        out = exchange.out
        resets = exchange.resets
        idle = exchange.idle
        control = exchange.control
        decoder = EventStreamDecoder()
        token = object()  # this stream, in self._held
        chunks = None if signature is None else ChunkVerifier(request=signature)
        signed_end = False
        inline_audio = _InlineAudio(
            exchange,
            decoder=decoder,
            # Paced output waits out its pauses here, one event at a time.
            send=inline.send if inline is not None and not chaos.paced else None,
        )

        async def timed_send(message: MutableMapping[str, Any]) -> None:
            # Each send of paced output timed on its own: the pauses between
            # them are the emulator's, not a client that stopped reading.
            await idle.output(send(message))

        async def write(message: MutableMapping[str, Any] | None = None) -> bool:
            """Send ``message``, or what ``out`` holds with the chaos rule's pacing,
            timed; False when the client took none of it for the idle timeout
            (the stream is then reset and the session ended)."""
            step: Awaitable[None]
            if message is None:  # each send timed by timed_send, not the pauses
                step, whole = chaos.write(timed_send, out), False
            else:
                step, whole = send(message), True
            return await self._within_timeout(step, exchange, timed=whole)

        async def timed(step: Awaitable[object]) -> bool:
            # A chaos GOAWAY or TCP close writes to the socket too.
            return await self._within_timeout(step, exchange)

        def take(body: bytes) -> None:
            """Apply the events of one DATA frame's ``body``."""
            nonlocal signed_end
            # The SDK's audio event, one per DATA frame, read in one step (when
            # nothing is buffered: the decoder checks).
            audio = decoder.receive_sdk_audio(body) if chunks is None and not signed_end else None
            if audio is not None:
                inline_audio.apply(audio)
                return
            for frame in decoder.receive_data(body):
                envelope = open_envelope(frame)
                if chunks is not None:
                    chunks.verify(envelope)
                if envelope.inner is None:
                    signed_end = True
                    continue
                if signed_end:
                    raise ValidationException(
                        "an event arrived after the final empty signed frame that ends "
                        "the input stream"
                    )
                inner = envelope.inner
                event_type = inner.headers.get(":event-type")
                clock = session.audio_seconds
                if event_type in AUDIO_EVENTS:
                    # In AUDIO_EVENTS, so a str; mypy does not narrow on ``in`` (an
                    # ignore, not cast(): no call per audio event).
                    size = len(inner.payload)
                    journal.record_audio_input(event_type, size, clock)  # type: ignore[arg-type]
                else:
                    journal.record(_input_entry(inner, clock))
                session.receive_event(inner)
                if session.state in FINISHED_STATES:
                    # Nothing after END_OF_SESSION (or the end of input) is
                    # read, in this DATA frame or a later one: the session has
                    # its outcome, and the response ends.
                    break
            if decoder.error_pending and not session.finished:
                # The good events ahead of a malformed frame were applied;
                # now the frame's own error.
                decoder.receive_data(b"")
            if decoder.buffered > LARGE_UNFINISHED or token in self._held:
                self._hold(token, decoder.buffered)

        if control is not None:
            control.watch_output(idle)

        try:
            while session.state not in FINISHED_STATES:
                idle.begin()
                if inline is not None:
                    # DATA queued while this is busy may come in one message
                    # (InlineBody.merge), but not while a chaos rule waits for
                    # an audio time: it is checked after each message.
                    inline.merge = not chaos.pending
                if (
                    inline is not None
                    and chunks is None
                    and not signed_end
                    and not decoder.buffered
                    and not chaos.pending
                    and not out
                ):
                    # Until receive() returns, the SDK's audio events are taken
                    # in the connection's task (see _InlineAudio).
                    inline.handler = inline_audio
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not idle.timed_out():
                        raise
                    if signed_end:
                        # The final empty signed frame ended the input; only the
                        # HTTP/2 stream's END_STREAM never came. The input is over, as
                        # at that END_STREAM: the session pauses (or stays as it ended).
                        log.info(
                            "a stream sent its final signed frame but did not end its "
                            "HTTP/2 stream within %g s; its input is taken as closed",
                            self.idle_timeout,
                        )
                        _close_input(session, journal)
                        if out:  # what the end of a FLAC stream released
                            await write()
                        return
                    awaited = "audio" if session.configured else "its configuration event"
                    if decoder.buffered:  # stopped inside a message: that is what it waited for
                        declared = decoder.declared
                        of = "" if declared is None else f" of its {declared:,}"
                        awaited = (
                            f"the rest of an event-stream message ({decoder.buffered:,}{of} "
                            "bytes came)"
                        )
                    session.time_out(
                        f"no input for {self.idle_timeout:g} s: the stream timed out waiting for "
                        f"{awaited} (the emulator's --idle-timeout); the session is paused: a new "
                        "stream with its ids resumes it"
                    )
                    await write()
                    return
                finally:
                    idle.since = None
                    if inline is not None:
                        inline.handler = None
                if message["type"] == "http.disconnect":
                    journal.record(
                        {
                            "direction": "stream",
                            "type": "disconnect",
                            "audioClock": session.audio_seconds,
                        }
                    )
                    session.input_closed(why=CUT_OFF)
                    return
                more_body = message.get("more_body", False)
                try:
                    take(message.get("body", b""))
                    more = message.get(MORE_BODIES)
                    if more is not None:  # DATA queued meanwhile, in order
                        for body in more:
                            if session.state in FINISHED_STATES:
                                break  # as the loop above stops for it
                            take(body)
                    if not more_body:
                        decoder.end_of_data()
                        if chunks is not None and not session.finished:
                            chunks.end_of_stream()
                        _close_input(session, journal)
                except Exception as error:
                    _fail(session, error)
                if out and not await write():
                    return
                if resets:
                    return
                while chaos.pending and (kind := chaos.due(session.audio_seconds)) is not None:
                    journal.record(
                        {
                            "direction": "out",
                            "type": "chaos",
                            "kind": kind,
                            "audioClock": session.audio_seconds,
                        }
                    )
                    if kind == "goaway":
                        if not await timed(chaos.goaway()):
                            return
                        continue
                    session.input_closed(why=f"chaos {kind}")
                    if kind == "malformed":
                        await write(
                            {
                                "type": "http.response.body",
                                "body": malformed_frame(),
                                "more_body": True,
                            }
                        )
                        return  # the response then ends cleanly after the corrupt frame
                    if kind == "disconnect-close" and not await timed(chaos.close_connection()):
                        return
                    # Either way the response is left unfinished: a reset stream.
                    resets.append(StreamReset(reason=f"chaos {kind}"))
                    return
                if not more_body:
                    return
        finally:
            idle.since = None
            self._held.pop(token, None)

    async def _output_stalled(self, exchange: _Exchange) -> None:
        """The client took no output for the idle timeout (its flow-control window
        stayed shut, or it stopped reading the connection). Nothing more can
        reach it, an exception included, so the stream is reset, and a session
        still open ends as if the client had gone."""
        session = exchange.session
        journal = exchange.journal
        log.info(
            "session %s: the client took no output for %g s (the emulator's "
            "--idle-timeout): stream reset",
            session.request.session_id,
            self.idle_timeout,
        )
        journal.record(
            {
                "direction": "stream",
                "type": "outputStalled",
                "stream": exchange.stream,
                "seconds": self.idle_timeout,
                "audioClock": session.audio_seconds,
            }
        )
        if session.finished:
            journal.flush()  # after the session's end, which flushed the rest
        session.input_closed(why=f"the client took no output for {self.idle_timeout:g} s")
        exchange.resets.append(StreamReset(reason="output stalled"))
        if exchange.control is not None:
            await exchange.control.abort()


@dataclass(slots=True, kw_only=True)
class _Exchange:
    """One stream's state, which the pump and its helpers share."""

    session: ScribeSession
    journal: Journal
    #: Encoded output events not yet sent.
    out: list[bytes]
    #: The scripted resets due (a rule's disconnect, an output stall): the
    #: response is then left unfinished.
    resets: list[StreamReset]
    #: The stream's timer: input awaited, and output the client must take.
    idle: _IdleWatch
    #: The HTTP/2 connection's control (None over another transport).
    control: ConnectionControlLike | None
    #: The stream's number among its session's streams, for the journal.
    stream: int


@dataclass(frozen=True, slots=True)
class _HeldResult:
    """A paced transcript event, made but held by a chaos pause: called once it is
    sent, it counts and journals it; :attr:`event` is what the session takes back
    if it never is (see :meth:`ScribeSession.withdraw`)."""

    event: TranscriptResult
    record: SessionRecord
    journal: Journal
    payload: Any

    def __call__(self) -> None:
        self.record.output_sent(self.event)
        self.journal.record_transcript(self.payload, self.record.audio_seconds)

    def journal_unsent(self) -> None:
        """Journal the event as made but never sent (direction ``unsent``), for a
        session that is over: not counted as sent, but in its artifacts."""
        entry = {"direction": "unsent", "type": "transcriptEvent", **json.loads(self.payload)}
        self.journal.record({**entry, "audioClock": self.record.audio_seconds})


def _sent_other(
    record: SessionRecord, journal: Journal, event: TranscriptResult | StreamException
) -> None:
    """Count and journal a paced output event other than a transcript, now sent."""
    record.output_sent(event, noted=True)
    journal.record(_output_entry(event, record.audio_seconds))


def _close_input(session: ScribeSession, journal: Journal) -> None:
    """The client's input is over without END_OF_SESSION: journal it (unless the
    session has its outcome already) and pause the session."""
    if not session.finished:
        journal.record(
            {"direction": "stream", "type": "inputClosed", "audioClock": session.audio_seconds}
        )
    session.input_closed(release=True)


def _fail(session: ScribeSession, error: Exception) -> None:
    """End ``session`` for ``error``, raised while it took input, with the member
    :func:`emulator.errors.stream_member_of` names; call it in the ``except``
    block (a bug of ours is logged with its traceback)."""
    if isinstance(error, FramingError):
        message = f"malformed event-stream message: {error}"
    elif isinstance(error, ServiceError):
        message = error.message
    else:  # a bug of ours must not take other sessions down
        log.exception("session %s: internal error", session.request.session_id)
        message = "the emulator hit an internal error processing this event; see its log"
    session.fail(stream_member_of(error), message)


class _InlineAudio:
    """The pump's one-step read of the SDK's audio events, for the HTTP/2
    connection to run while the pump waits in ``receive()``
    (:class:`emulator.hypercorn_h2.InlineBody`).

    The pump sets it as the stream's handler only when that read would be its
    path for the next frame (no event signatures to verify, nothing buffered,
    no chaos due, nothing to send), and none of that changes while it waits:
    the first event that ends the session, or gives output that ``send`` (the
    stream's :attr:`~emulator.hypercorn_h2.InlineBody.send`, None for paced
    output) does not take, wakes it. A real-time client sends one audio event
    every 100 ms, so the pump waits before nearly every one of them; taking
    them here saved the task hop each, about a tenth of the event loop at 1,500
    real-time sessions. Sending a final result from here too saves the two
    task hops it then took to reach the socket.
    """

    # The exchange's parts it reads for every event, each bound once here.
    __slots__ = ("session", "journal", "decoder", "out", "idle", "send")

    def __init__(
        self,
        exchange: _Exchange,
        *,
        decoder: EventStreamDecoder,
        send: Callable[[bytes], bool] | None,
    ) -> None:
        self.session = exchange.session
        self.journal = exchange.journal
        self.decoder = decoder
        self.out = exchange.out
        self.idle = exchange.idle
        self.send = send

    def __call__(self, body: bytes) -> bool | None:
        """Take ``body`` if it is one SDK audio event (else None); True when the
        pump must wake: output left to send, or the session ended."""
        audio = self.decoder.receive_sdk_audio(body)
        if audio is None:
            return None
        session = self.session
        if self.idle.since is not None:
            self.idle.since = _monotonic()  # input arrived: the idle time restarts
        try:
            self.apply(audio)
        except Exception as error:
            _fail(session, error)
        if session.state in FINISHED_STATES:
            return True  # the pump sends the rest and ends the response
        out = self.out
        if not out:
            return False
        # As the pump's write() sends unpaced output: all of it, one message.
        if self.send is not None and self.send(out[0] if len(out) == 1 else b"".join(out)):
            out.clear()
            return False
        return True

    def apply(self, audio: tuple[str, bytes]) -> None:
        """Apply ``audio``, taken by :meth:`EventStreamDecoder.receive_sdk_audio`
        (which counted it), as either path takes it: journaled, then given to the
        session (which raises what it refuses)."""
        session = self.session
        self.journal.record_audio_input(audio[0], len(audio[1]), session.audio_seconds)
        session.receive_audio_event(*audio)


class _IdleWatch:
    """``receive()`` with the stream's idle timeout, on one timer per stream.

    ``asyncio.wait_for`` per message arms and cancels a timer for every DATA
    frame (a tenth of a second of audio); this keeps one timer that re-arms
    itself at most once per ``timeout``. Waiting longer than ``timeout`` inside
    one :meth:`receive` raises :class:`TimeoutError`, as ``wait_for`` did. The
    stream also times its output with it (:meth:`output`): a client that takes
    none for ``timeout`` has its stream reset. Chaos pauses between sends do
    not count. ``timeout`` <= 0 means no limit.

    The stream's pump does what :meth:`receive` does inline (a coroutine per
    DATA frame showed in its profile): :meth:`begin`, ``await receive()``, on
    :class:`asyncio.CancelledError` :meth:`timed_out`, and ``since = None``.
    """

    __slots__ = ("timeout", "since", "sending", "_loop", "_task", "_handle", "_fired")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: When the receive under way began (``time.monotonic()``); None between receives.
        self.since: float | None = None
        #: Whether the timed wait under way is a send, whose time output taken
        #: restarts (see emulator.flow_control.BoundedBuffer), not a receive.
        self.sending = False
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    async def receive(self, receive: Receive) -> MutableMapping[str, Any]:
        self.begin()
        try:
            return await receive()
        except asyncio.CancelledError:
            if self.timed_out():
                raise TimeoutError from None
            raise
        finally:
            self.since = None

    def begin(self) -> None:
        """A receive starts now, in the task to cancel when it lasts too long."""
        if self.timeout <= 0:
            return
        self.since = _monotonic()
        if self._handle is None:
            self._task = asyncio.current_task()
            self._handle = self._loop.call_later(self.timeout, self._check)

    async def output(self, step: Awaitable[object]) -> None:
        """Await ``step``, output the client must take, within ``timeout``: one
        that grants no window, or stopped reading its socket, leaves it waiting.
        Output the client takes restarts the time (the stream's response buffer
        sets :attr:`since` while :attr:`sending`; see ConnectionControl.watch_output).
        On a time-out the task is cancelled, as for :meth:`receive`."""
        self.begin()
        self.sending = True
        try:
            await step
        finally:
            self.since = None
            self.sending = False

    def timed_out(self) -> bool:
        """For a receive cancelled: whether this watch did it (then the task's
        cancellation is taken back), rather than someone else."""
        if not self._fired:
            return False
        self._fired = False
        assert self._task is not None
        # An outside cancellation in the same step (a disconnect, shutdown) wins.
        return self._task.uncancel() == 0

    def _check(self) -> None:
        self._handle = None
        since = self.since
        if since is None:  # not receiving: the next receive re-arms
            return
        left = since + self.timeout - _monotonic()
        if left <= 0:
            self._fired = True
            assert self._task is not None
            self._task.cancel()
        else:
            self._handle = self._loop.call_later(left, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _input_entry(message: Message, clock: float) -> dict[str, Any]:
    """The journal entry of one inner input event, arrived at audio time ``clock``.

    A configuration event is kept as received (the user's own data, for the
    journal only: it is never logged).
    """
    event_type = message.headers.get(":event-type")
    entry: dict[str, Any] = {
        "direction": "in",
        "type": event_type if isinstance(event_type, str) else repr(event_type),
        "size": len(message.payload),
        "audioClock": clock,
    }
    if event_type in ("configurationEvent", "sessionControlEvent"):
        try:
            entry["payload"] = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested past the parser
            entry["payloadError"] = "not JSON"
    return entry


def _output_entry(event: TranscriptResult | StreamException, clock: float) -> dict[str, Any]:
    """The journal entry of one output event, sent at audio time ``clock``."""
    if isinstance(event, TranscriptResult):
        return {
            "direction": "out",
            "type": "transcriptEvent",
            **event.to_json(),
            "audioClock": clock,
        }
    return {"direction": "out", "type": event.member, "message": event.message, "audioClock": clock}
