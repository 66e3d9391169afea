"""The ASGI adapter of ``POST /medical-scribe-stream/``: full duplex over one HTTP/2 stream.

This is raw ASGI on purpose: the adapter owns ``receive`` so no request-body
message is swallowed (Starlette's ``StreamingResponse`` would call ``receive``
to watch for a disconnect), and it sends the response start before the request
body has ended, which is what lets transcript events flow while audio arrives.

It is also the one place where a :class:`~emulator.errors.ServiceError` becomes
bytes: an HTTP error response before the stream opens, an event-stream exception
message after.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import FramingError, ServiceError, service_error
from .events import OutputEvent, StreamReset, encode_output
from .eventstream import EventStreamDecoder, open_envelope
from .session import ScribeSession, SessionState
from .validation import validate_stream_headers

__all__ = ["StreamEndpoint", "error_response"]

log = logging.getLogger("medscribe.stream")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_EVENTSTREAM = b"application/vnd.amazon.eventstream"


async def error_response(send: Send, error: ServiceError, *, request_id: str) -> None:
    """Send ``error`` in the service's REST-JSON error shape.

    Status = the shape's HTTP status, ``x-amzn-errortype`` = the shape name and a
    JSON body ``{"message": ...}``: what the SDK maps onto its modeled class.
    """
    body = json.dumps({"message": error.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-amzn-errortype", error.code.encode()),
                (b"x-amzn-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class StreamEndpoint:
    """ASGI app for one route: StartMedicalScribeListeningSession.

    ``backend`` is the :class:`emulator.backend.Backend` holding rules,
    scenarios and session records.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        try:
            request = validate_stream_headers(scope["headers"])
            rule = self.backend.match_rule(request)
            if rule is not None and rule.error is not None:
                raise service_error(*rule.error)
        except ServiceError as error:
            self.backend.record_rejection(scope["headers"], error, request_id=request_id)
            await error_response(send, error, request_id=request_id)
            return

        out: list[bytes] = []
        resets: list[StreamReset] = []
        record = self.backend.open_session(request, request_id=request_id, rule=rule)

        def emit(event: OutputEvent) -> None:
            if isinstance(event, StreamReset):
                resets.append(event)
                return
            out.append(encode_output(event))
            record.output_sent(event)

        session = ScribeSession(
            request=request,
            scenario_for=lambda configuration: self.backend.scenario_for(
                request, configuration, rule=rule
            ),
            send=emit,
        )
        record.attach(session)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *request.response_headers(),
                    (b"x-amzn-request-id", request_id.encode()),
                    (b"content-type", _EVENTSTREAM),
                ],
            }
        )
        try:
            await self._pump(receive, send, session, out, resets)
        finally:
            self.backend.close_session(record)
        if resets:
            # Returning with the body unfinished makes the server reset the
            # HTTP/2 stream (see emulator.hypercorn_h2): the scripted disconnect.
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(
        self,
        receive: Receive,
        send: Send,
        session: ScribeSession,
        out: list[bytes],
        resets: list[StreamReset],
    ) -> None:
        decoder = EventStreamDecoder()
        signed_end = False
        while not session.finished:
            message = await receive()
            if message["type"] == "http.disconnect":
                session.input_closed()
                return
            more_body = message.get("more_body", False)
            try:
                for frame in decoder.receive_data(message.get("body", b"")):
                    envelope = open_envelope(frame)
                    if envelope.inner is None:
                        signed_end = True
                        continue
                    if signed_end:
                        raise service_error(
                            "ValidationException",
                            "an event arrived after the final empty signed frame that ends "
                            "the input stream",
                        )
                    session.receive_event(envelope.inner)
                    if session.state in (SessionState.FAILED, SessionState.PAUSED):
                        break
                if not more_body:
                    decoder.end_of_data()
                    session.input_closed()
            except FramingError as error:
                session.fail("validationException", f"malformed event-stream message: {error}")
            except ServiceError as error:
                session.fail(error.stream_member or "validationException", error.message)
            except Exception:  # a bug of ours must not take other sessions down
                log.exception("session %s: internal error", session.request.session_id)
                session.fail(
                    "internalFailureException",
                    "the emulator hit an internal error processing this event; see its log",
                )
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                out.clear()
            if resets or not more_body:
                return
