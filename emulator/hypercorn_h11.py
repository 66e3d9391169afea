"""HTTP/1.1 requests hypercorn cannot parse, answered in the service's error shape.

When h11 cannot read a request (a malformed request line, header field or
chunked body, or a request line and header block past
``h11_max_incomplete_size``, 16 KiB),
hypercorn answers 400 or 431 with an empty body, which boto3 reports as a bare
status with no reason. :func:`install` makes it the REST-JSON shape every other
refusal has (:func:`emulator.errors.http_error`): ``x-amzn-errortype:
ValidationException`` and ``{"message":...}`` saying what was wrong and, for
431, the limit. h11's own message is not quoted: it holds the request's bytes,
which may carry a credential.

It also makes that 16 KiB limit hold for every request head, not only for one
still incomplete: h11 checks its buffer only while it waits for the rest of an
event, and hypercorn reads 64 KiB at a time, so a head that arrived in one read
was taken at up to 64 KiB and refused at 20 KB if it came slowly. See
:class:`_HeadLimitedConnection` for what counts.

A request in absolute-form (``GET http://host/path``) is read as its path,
with the target's host (see :func:`_origin_form`); hypercorn routed the whole
URI as a path.

And an answer sent before its request body has all arrived (a body over its
limit, refused as soon as that is known) no longer closes the connection under
a client still sending: the rest of the body is read and dropped first, up to
:data:`LINGER_BYTES` (see :func:`_maybe_recycle`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from http import HTTPStatus
from itertools import chain
from typing import Any

import h11
from hypercorn.events import Closed, Updated
from hypercorn.protocol.events import Body, EndBody, Event
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    Scope,
)

from .errors import NotEmulatedError, ValidationException, http_error
from .ids import new_request_id, request_id_headers
from .logs import get_logger
from .requestbody import body_timed_out

__all__ = ["LINGER_BYTES", "install"]

log = get_logger("medscribe.server")

#: What each status hypercorn's h11 refusals carry means for the client, while
#: the request's head is read...
_HEAD_MESSAGES = {
    400: "the request could not be read as HTTP/1.1: its request line or a header "
    "field is malformed (RFC 9112)",
    431: "the request line and header fields are larger than this server reads over "
    "HTTP/1.1 ({limit} bytes); shorten the headers, or use HTTP/2",
    501: "the request's Transfer-Encoding is not one this server reads: it reads a body "
    "by its Content-Length or the chunked coding alone (RFC 9112 §6.1; a compressed "
    "body is not taken)",
}
#: ...and once it was read, while its body is.
_BODY_MESSAGES = {
    400: "the request body could not be read as HTTP/1.1: its chunked encoding is "
    "malformed, or it ended before its content-length (RFC 9112)",
    431: "a line of the request body's chunked encoding is longer than this server "
    "reads over HTTP/1.1 ({limit} bytes)",
}


#: Each status's reason phrase, which hypercorn leaves empty ("HTTP/1.1 404 "):
#: RFC 9112 §4 lets a client ignore it, but curl -i and every log show it.
_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class _HeadLimitedConnection(h11.Connection):
    """h11's connection, refusing a complete request head past its limit too.

    The head is every byte h11 takes for a :class:`h11.Request`, as sent: the
    request line, each header field line, each with its line ending, and the
    empty line that ends the head (``CRLF`` or the bare ``LF`` h11 also takes).
    A head of at most ``max_incomplete_event_size`` bytes (16384) is read; one
    byte more is :exc:`h11.RemoteProtocolError` with ``error_status_hint`` 431,
    as h11 raises for a head it is still waiting on (an incomplete head holds
    fewer bytes than the complete one, so it is refused only when the complete
    one would be: the answer no longer depends on how the bytes arrived). The
    bytes after the head, a body or a pipelined request, are not counted. The
    cost is two ``len`` calls per event.
    """

    #: Whether the request being answered was framed twice (see :meth:`send`).
    _close_after_answer = False

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        """Never, as hypercorn asks: it sends ``100 Continue`` as soon as a request's
        head is read, so a body the app refuses by its ``Content-Length`` was sent
        all the same. :class:`_ContinueOnRead` sends it when the app asks for the
        body."""
        return False

    def _extract_next_receive_event(
        self,
    ) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        buffered = len(self._receive_buffer)
        event = super()._extract_next_receive_event()
        if (
            type(event) is h11.Request
            and buffered - len(self._receive_buffer) > self._max_incomplete_event_size
        ):
            # Raised here, before the event is processed, next_event() puts the
            # client in ERROR and hypercorn answers as for h11's own 431.
            raise h11.RemoteProtocolError("request head too long", error_status_hint=431)
        if type(event) is h11.Request:
            if _framed_twice(event):
                self._close_after_answer = True
            if event.target[:1] != b"/":
                event = _origin_form(event)
        return event

    # h11 types send() with overloads (None for ConnectionClosed, bytes for the
    # rest); this override passes every event on to it, so it keeps the union.
    def send(self, event: h11.Event) -> bytes | None:  # type: ignore[override]
        """h11's ``send``; the answer to a request framed twice closes the connection.

        h11 reads such a body by its chunked encoding; RFC 9112 §6.1 then has the
        server close the connection after answering, lest a proxy that read the
        Content-Length instead take the rest as another request (smuggling). Keep-
        alive is turned off as the answer starts (``Connection: close`` on it), not
        as the request is read: then a request sent behind it is never parsed,
        where h11 would refuse it before the first had its answer.
        """
        if type(event) is h11.Response and (
            self._close_after_answer or self.client_is_waiting_for_100_continue
        ):
            # Waiting for 100: the answer came before the app asked for the body,
            # which the client then need not send (RFC 9110 §10.1.1), and h11 cannot
            # tell whether it will. Closed after the answer; any body that does
            # come is read and dropped first (_maybe_recycle).
            self._cstate.process_keep_alive_disabled()
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            event = type(event)(
                headers=event.headers,
                status_code=event.status_code,
                http_version=event.http_version,
                reason=_REASONS.get(event.status_code, b""),
            )
        return super().send(event)


class _ContinueOnRead:
    """hypercorn's app, sending ``100 Continue`` to a client waiting for it when the
    app first asks for the body: an app that answers without reading it (a
    ``Content-Length`` over the limit, an unknown path) is never sent the body.
    (What uvicorn and Werkzeug do.)"""

    __slots__ = ("app", "protocol")

    def __init__(self, app: AppWrapper, protocol: H11Protocol) -> None:
        self.app = app
        self.protocol = protocol

    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        connection = self.protocol.connection
        # An http scope's connection is h11's: hypercorn swaps in its
        # H11WSConnection for a websocket upgrade only.
        if scope.get("type") == "http" and (
            connection.client_is_waiting_for_100_continue  # type: ignore[union-attr]
        ):
            receive = self._continuing(receive)
        await self.app(scope, receive, send, sync_spawn, call_soon)

    def _continuing(self, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
        protocol = self.protocol

        async def receive_continued() -> ASGIReceiveEvent:
            connection = protocol.connection
            if (
                connection.client_is_waiting_for_100_continue  # type: ignore[union-attr]
                and connection.our_state is h11.SEND_RESPONSE
            ):
                headers = protocol.config.response_headers("h11")
                await protocol._send_h11_event(
                    h11.InformationalResponse(status_code=100, headers=headers)
                )
            return await receive()

        return receive_continued


def _framed_twice(request: h11.Request) -> bool:
    """Whether ``request`` carries both a Content-Length and a Transfer-Encoding."""
    names = {name for name, _ in request.headers}
    return b"content-length" in names and b"transfer-encoding" in names


#: An absolute-form request target (RFC 9112 §3.2.2): scheme, authority, the rest.
_ABSOLUTE_FORM = re.compile(rb"(?i)https?://([^/?#]*)([^#]*)")


def _origin_form(request: h11.Request) -> h11.Request:
    """``request`` with an absolute-form target (``GET http://host/path``) as origin-form.

    RFC 9112 §3.2.2: a server MUST accept the absolute-form, and then takes the
    host from the target, not from the ``Host`` field. hypercorn takes the
    target as the path, so such a request (sent by a client configured to use a
    proxy that is the emulator itself) was routed as ``http://host/path`` and
    answered 404. Any other target that does not start with ``/`` is left
    as it is, to be refused by the routes. An ``http`` URI with an empty host
    is invalid (RFC 9110 §4.2.1): h11's 400.
    """
    match = _ABSOLUTE_FORM.fullmatch(request.target)
    if match is None:
        return request
    authority, rest = match.groups()
    if not authority:
        raise h11.RemoteProtocolError("absolute-form target without a host", error_status_hint=400)
    headers = [
        (name, authority if name.lower() == b"host" else value)
        for name, value in request.headers.raw_items()
    ]
    if all(name.lower() != b"host" for name, _ in headers):  # HTTP/1.0 needs none
        headers.append((b"host", authority))
    return h11.Request(
        method=request.method,
        target=rest if rest[:1] == b"/" else b"/" + rest,
        headers=headers,
        http_version=request.http_version,
    )


#: How much of a request body the server reads, and drops, after its answer
#: (see :func:`_maybe_recycle`).
LINGER_BYTES = 64 * 1024 * 1024

#: hypercorn's ``H11Protocol._maybe_recycle``, which :func:`install` wraps.
_STOCK_MAYBE_RECYCLE = H11Protocol._maybe_recycle


async def _maybe_recycle(self: H11Protocol) -> None:
    """hypercorn's ``_maybe_recycle``; an answer sent while its client still sends
    the body (a refusal of a body too large, say) keeps the connection to read
    the rest, where hypercorn closed it at once: the kernel then resets a
    connection with unread bytes, and a client that reads its answer only once
    its body is sent (boto3, urllib, curl) lost the answer to the reset, over
    TLS every time ("SSLError: EOF occurred in violation of protocol").

    The rest goes to a :class:`_Sink` in the stream's place, through hypercorn's
    own reading of the connection (one reader of h11's events)."""
    connection = self.connection
    stream = self.stream
    if (
        isinstance(stream, HTTPStream)
        and connection.their_state is h11.SEND_BODY
        and connection.our_state in (h11.DONE, h11.MUST_CLOSE)
        and not self.context.terminated.is_set()
        # A body that stopped arriving is not waited for again: closed, as before.
        and not body_timed_out(getattr(stream, "scope", None) or {})
    ):
        # The app stopped reading: its queue may be full, with hypercorn's reader
        # waiting to put the next part in it, and the disconnect the stream's
        # close puts there would wait too. Emptied, neither waits.
        _empty(getattr(stream, "app_put", None))
        await self._close_stream()
        # Duck-typed: hypercorn calls only the stream's handle(), which _Sink has.
        self.stream = _Sink(self)  # type: ignore[assignment]
        await self.can_read.set()
        await self.send(Updated(idle=True))  # the keep-alive timer ends a stalled body
        return
    await _STOCK_MAYBE_RECYCLE(self)


def _empty(put: Any) -> None:
    """Empty the asyncio queue whose ``put`` this is, waking a task waiting to put."""
    queue = getattr(put, "__self__", None)
    if isinstance(queue, asyncio.Queue):
        while not queue.empty():
            queue.get_nowait()


class _Sink:
    """Where the rest of a request body goes once its answer is sent: counted and
    dropped. At its end the connection goes on as after any answer (the next
    request, or closed if the answer said so); past :data:`LINGER_BYTES` it is
    closed. Each part restarts the keep-alive timer (``--idle-timeout``, 5 s at
    least), which closes the connection if the body stops arriving."""

    __slots__ = ("protocol", "left")

    def __init__(self, protocol: H11Protocol) -> None:
        self.protocol = protocol
        self.left = LINGER_BYTES

    async def handle(self, event: Event) -> None:
        protocol = self.protocol
        if type(event) is Body:
            self.left -= len(event.data)
            if self.left >= 0:
                await protocol.send(Updated(idle=True))
                return
            protocol.stream = None  # what comes next is not read
            await protocol.send(Closed())
        elif type(event) is EndBody:
            protocol.stream = None
            await _STOCK_MAYBE_RECYCLE(protocol)


#: hypercorn's ``H11Protocol.__init__``, which makes a plain ``h11.Connection``.
_STOCK_INIT = H11Protocol.__init__


def _init(self: H11Protocol, *args: Any, **kwargs: Any) -> None:
    """hypercorn's ``H11Protocol.__init__``, reading with :class:`_HeadLimitedConnection`."""
    _STOCK_INIT(self, *args, **kwargs)
    if type(self.connection) is h11.Connection:  # nothing read through it yet
        self.connection = _HeadLimitedConnection(
            h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size
        )
        self.app = _ContinueOnRead(self.app, self)


#: How a TLS handshake begins: a handshake record (22) of TLS 1.x.
_TLS_RECORD = b"\x16\x03"


async def _send_error_response(self: H11Protocol, status_code: int) -> None:
    """hypercorn's ``H11Protocol._send_error_response``, with a body.

    A TLS handshake (an ``https://`` client on the cleartext port) gets no HTTP
    answer, which it could not read, but a log line saying what happened: the
    AWS SDK reports it only as a timeout.
    """
    unread = getattr(self.connection, "_receive_buffer", b"")
    if getattr(self, "stream", None) is None and bytes(unread)[:2] == _TLS_RECORD:
        log.warning(
            "a TLS handshake reached the cleartext port %s: an https:// client must use "
            "the TLS port (this one takes http:// and HTTP/2 with prior knowledge)",
            _local_port(self),
        )
        return  # hypercorn closes the connection next
    messages = _HEAD_MESSAGES if getattr(self, "stream", None) is None else _BODY_MESSAGES
    template = messages.get(
        status_code, "the request could not be read as HTTP/1.1 (status {status})"
    )
    message = template.format(limit=self.config.h11_max_incomplete_size, status=status_code)
    # 501 is no shape of the model: S3's code for a feature not implemented, as the
    # control plane answers an operation it does not emulate.
    error = NotEmulatedError(message) if status_code == 501 else ValidationException(message)
    _, headers, body = http_error(
        error,
        status=status_code,
        headers=[*request_id_headers(new_request_id()), (b"connection", b"close")],
    )
    response = h11.Response(
        status_code=status_code, headers=list(chain(headers, self.config.response_headers("h11")))
    )
    await self._send_h11_event(response)
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


def _local_port(protocol: H11Protocol) -> str:
    server = getattr(protocol, "server", None)
    return str(server[1]) if isinstance(server, tuple) and len(server) > 1 else "?"


def _h11_has_the_hooks() -> bool:
    """Whether h11 still has the internals :class:`_HeadLimitedConnection` uses."""
    connection = h11.Connection(h11.SERVER)
    hooks = ("_extract_next_receive_event", "_receive_buffer", "_max_incomplete_event_size")
    if not hasattr(getattr(connection, "_cstate", None), "process_keep_alive_disabled"):
        return False
    return all(hasattr(connection, name) for name in hooks)


def install() -> None:
    """Make hypercorn's HTTP/1.1 refusals carry a body, and its 16 KiB limit on a
    request head hold however the head arrived; idempotent."""
    if hasattr(H11Protocol, "_send_error_response"):
        setattr(H11Protocol, "_send_error_response", _send_error_response)  # noqa: B010
    if H11Protocol.__init__ is _STOCK_INIT and _h11_has_the_hooks():
        setattr(H11Protocol, "__init__", _init)  # noqa: B010
    if H11Protocol._maybe_recycle is _STOCK_MAYBE_RECYCLE:
        setattr(H11Protocol, "_maybe_recycle", _maybe_recycle)  # noqa: B010
