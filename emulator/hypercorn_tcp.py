"""Quiet, correct connection teardown for hypercorn 0.18's asyncio TCP server over TLS.

When a TLS client closes its connection while data is still in flight (the CRT
client does so whenever an application closes its SDK client), two errors escape
``hypercorn.asyncio.tcp_server.TCPServer`` and asyncio logs them as
"Unhandled exception in client_connected_cb" tracebacks, in every user's CI log:

* ``_close`` awaits ``writer.wait_closed()``, which raises
  ``ssl.SSLError(APPLICATION_DATA_AFTER_CLOSE_NOTIFY)`` when the peer sent data
  after its close_notify; hypercorn only expects the plain connection errors.
* ``protocol_send`` writes to a transport whose SSL protocol is already gone,
  and asyncio (3.12) raises ``AttributeError`` from ``_SSLProtocolTransport.write``
  instead of a ``ConnectionError``.

Both mean "the peer has gone", which is exactly what hypercorn's own handlers
treat as a normal close. :class:`QuietTCPServer` handles them the same way, and
bounds the wait for a TLS peer's close_notify (see :data:`CLOSE_TIMEOUT`), which
otherwise holds shutdown for up to 30 s per idle pooled client connection. A
connection still busy when a shutdown's grace period (``graceful_timeout``)
ends is dropped: on Python 3.12 hypercorn's own bound never applies, because it
first waits in ``Server.wait_closed()`` for every connection to close.

It also reads in larger steps. hypercorn reads 64 KiB at a time from a
reader that stops reading the socket above 128 KiB; a server busier than its
clients (bulk ingest) then went through a stop and a restart of reading (two
``epoll_ctl`` calls and the selector's bookkeeping) for every 128-256 KiB, and
a pass of the HTTP/2 protocol for each 64 KiB. :class:`QuietTCPServer` reads
:data:`READ_SIZE` at a time over HTTP/2 and stops reading only above twice
:data:`READ_LIMIT`: bulk ingest 6-8% cheaper per session in alternating runs.

It also writes less often. hypercorn writes each piece the HTTP/2 protocol
sends at once, a ``send()`` system call (over TLS, a record) per response
HEADERS, transcript event and WINDOW_UPDATE; with hundreds of streams on a
connection those calls were the largest single cost in the server's loop
(17% of it while 1,000 real-time sessions opened). :class:`QuietTCPServer`
gathers what is sent during one loop iteration and writes it with one call at
the iteration's end, in order; past :data:`COALESCE_BYTES` (pending, plus what
the transport still holds) it writes at once and waits for the transport to
drain, as hypercorn does for every send. 1,000 real-time sessions: p99
176-218 -> 113-118 ms, in alternating runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
from asyncio import sslproto
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import hypercorn.asyncio.run
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.h2 import H2Protocol

from .errors import ValidationException, http_error
from .logs import Throttle, get_logger, left_out_text

__all__ = [
    "QuietTCPServer",
    "install",
    "CLOSE_TIMEOUT",
    "READ_LIMIT",
    "READ_SIZE",
    "answer_cleartext_requests",
    "cleartext_answer",
    "HANDSHAKE_REPORT_INTERVAL",
]

log = get_logger("medscribe.tls")
server_log = get_logger("medscribe.server")
#: Silent cleartext connections closed: said at most once a minute.
_SILENT_CLEARTEXT = Throttle(60.0)

#: Seconds a closing connection waits for the peer's TLS close_notify: plenty on
#: a local network, and short enough for the 2 s shutdown promise.
CLOSE_TIMEOUT = 0.5

#: Bytes an HTTP/2 connection's reader hands the protocol at a time (hypercorn:
#: 64 KiB, which HTTP/1.1 keeps: h11 bounds a chunk-size line or a trailer by
#: no more than what one read holds), as much as asyncio's transport takes from
#: the socket in one call.
READ_SIZE = 256 * 1024

#: An HTTP/2 connection's reader buffer limit (hypercorn's is asyncio's 64 KiB,
#: which HTTP/1.1 keeps): asyncio stops reading the socket once more than twice
#: this waits, and starts again when it is down to it. An HTTP/2 connection
#: thus holds at most about 8.3 MiB read off its socket and not yet handled;
#: the DATA in it is within the connection's 16 MiB receive window, other
#: frames (a flood of headers, say) are not. With 1 MiB, bulk ingest was 6-13%
#: slower: reading stopped and started again every megabyte, and the client,
#: on the same machine, waited on TCP.
READ_LIMIT = 4 * 1024 * 1024

#: Bytes sent (or waiting in the transport) above which a send is written at
#: once and waits for the transport to drain, as hypercorn's own does each time.
COALESCE_BYTES = 64 * 1024


class QuietTCPServer(TCPServer):
    """hypercorn's ``TCPServer`` that treats a TLS peer's abrupt close as a close,
    and writes what the protocol sends in one loop iteration with one call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The reader's own limit (asyncio's 64 KiB), kept for HTTP/1.1.
        limit = getattr(self.reader, "_limit", None)
        self._reader_limit: int | None = limit if isinstance(limit, int) else None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_handle: asyncio.Handle | None = None
        #: Set once the connection closes: no keep-alive timer starts after it.
        self._closing = False
        #: Whether the client has sent a byte (see _idle_timeout).
        self._received = False

    async def run(self) -> None:
        # hypercorn bounds a graceful shutdown by config.graceful_timeout, but
        # on Python 3.12 it first awaits Server.wait_closed(), which now waits
        # for every connection: one with a stream still open (a client that
        # went quiet, or a real-time session mid-visit) held SIGTERM until the
        # stream's idle timeout. Past the grace period the connection is
        # dropped; its streams see a disconnect as from any lost client.
        deadline = self.loop.create_task(self._drop_after_grace())
        try:
            await super().run()
        except asyncio.CancelledError:
            # The loop's end cancels a connection still closing when the server
            # stops (hundreds of streams, their client gone, then SIGTERM), and
            # asyncio's stream callback logged that as an ERROR with a
            # traceback. Stopping, the connection just ends.
            if not self.context.terminated.is_set():
                raise
        finally:
            deadline.cancel()
            self._release()

    def _release(self) -> None:
        """Drop what the ended connection holds: its protocol (and with it the
        HTTP/2 state and the streams' buffers) refers back to this server through
        the send callback hypercorn gives it, and asyncio's stream objects to the
        transport, so a closed connection was freed only by a full cycle
        collection (see emulator.collector: up to 300 s under load, with each
        TLS connection's read buffer)."""
        wrapper = self.__dict__.pop("protocol", None)
        release = getattr(getattr(wrapper, "protocol", None), "release", None)
        if release is not None:
            release()
        self.__dict__.pop("_task_group", None)
        self._pending = []
        self._flush_handle = None

    async def _read_data(self) -> None:
        # hypercorn's, with READ_SIZE for its 64 KiB over HTTP/2 (an h2c
        # upgrade switches protocol mid-connection: asked at each read), and
        # no wait_for() per read when there is no read timeout (there is none
        # by default).
        reader = self.reader
        timeout = self.config.read_timeout
        while not reader.at_eof():
            h2 = isinstance(getattr(self.protocol, "protocol", None), H2Protocol)
            size = READ_SIZE if h2 else MAX_RECV
            if self._reader_limit is not None:
                # StreamReader's private buffer limit, which typeshed leaves out.
                reader._limit = (  # type: ignore[attr-defined]
                    READ_LIMIT if h2 else self._reader_limit
                )
            try:
                if timeout is None:
                    data = await reader.read(size)
                else:
                    data = await asyncio.wait_for(reader.read(size), timeout)
            except (ConnectionError, OSError, TimeoutError, ssl.SSLError):
                break
            self._received = True
            await self.protocol.handle(RawData(data))
        # The peer has gone: the keep-alive timer (its streams, ending now,
        # report the connection idle) must not hold the connection's task group,
        # and with it the connection and its buffers, for --idle-timeout more.
        self._closing = True
        await self.protocol.handle(Closed())
        await self.idle_task.stop()

    async def _drop_after_grace(self) -> None:
        await self.context.terminated.wait()
        # An HTTP/2 client is told at once (GOAWAY), and opens no new stream here.
        notice = getattr(getattr(self.protocol, "protocol", None), "shutdown_notice", None)
        if notice is not None:
            with contextlib.suppress(Exception):  # a connection closing meanwhile
                await notice()
        await asyncio.sleep(self.config.graceful_timeout)
        transport = self.writer.transport
        reset = getattr(getattr(self.protocol, "protocol", None), "reset_open_streams", None)
        if reset is not None and not transport.is_closing():
            # Its streams are ended first (written now, before the drop discards
            # what the transport still holds): a client waiting for a response
            # that never started waited for ever.
            with contextlib.suppress(Exception):  # the peer gone meanwhile
                self._write_pending()
                transport.write(reset())
        _abort(transport)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            transport = self.writer.transport
            if transport.is_closing():
                # Writing to a closing TLS transport raises AttributeError in asyncio.
                await self.protocol.handle(Closed())
                return
            self._pending.append(event.data)
            self._pending_size += len(event.data)
            if self._pending_size + transport.get_write_buffer_size() < COALESCE_BYTES:
                if self._flush_handle is None:
                    self._flush_handle = self.loop.call_soon(self._write_pending)
                return
            try:
                self._write_pending()
                await self.writer.drain()
            except (ConnectionError, RuntimeError, AttributeError):
                await self.protocol.handle(Closed())
            return
        if type(event) is Updated and self._closing:
            # The connection is over: its streams ending after it (a killed
            # client's) report idle, and a keep-alive timer started now held the
            # connection, its task group and buffers, for --idle-timeout more.
            return
        if type(event) is Updated and event.idle:
            defer = getattr(getattr(self.protocol, "protocol", None), "defer_idle", None)
            if defer is not None and defer():
                # HTTP/2 with a stream whose response is done but whose client
                # still sends (hypercorn counts only the streams its app holds):
                # not idle, or the keep-alive timer would close the connection
                # under it. The protocol reports idle again when that stream
                # ends, or its client has been quiet for --idle-timeout.
                return
        try:
            # A Closed event goes to _close, which writes what is pending first.
            await super().protocol_send(event)
        except AttributeError:
            await self.protocol.handle(Closed())
        except RuntimeError:
            # An app ending its response as the server stops: the idle timer's
            # task group is shutting down, and there is no timer left to start.
            if type(event) is not Updated:
                raise

    def _write_pending(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._pending_size = 0
        transport = self.writer.transport
        if transport.is_closing():
            return  # the reader sees the close and ends the connection
        try:
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        except (ConnectionError, RuntimeError, AttributeError):
            transport.abort()

    async def _close(self) -> None:
        self._closing = True
        self._write_pending()
        try:
            self.writer.write_eof()
        except (NotImplementedError, OSError, RuntimeError):
            pass  # TLS transports cannot half-close
        self.writer.close()
        try:
            # A TLS close waits for the peer's close_notify, up to asyncio's 30 s
            # SSL shutdown timeout; an idle pooled client (boto3, the CRT) never
            # reads it, and server shutdown would wait with it. A peer that has
            # not answered by then is treated as gone.
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
        except (TimeoutError, ssl.SSLError, OSError, RuntimeError):
            # Includes APPLICATION_DATA_AFTER_CLOSE_NOTIFY: the peer is gone all the same.
            self.writer.transport.abort()
        except asyncio.CancelledError:
            self.writer.transport.abort()
        finally:
            await self.idle_task.stop()

    async def _idle_timeout(self) -> None:
        # hypercorn's, but the keep-alive timer retires an HTTP/2 connection with a
        # GOAWAY first (DuplexH2Protocol.retire_idle); a stopping server still
        # closes it as before (its streams go at the end of the grace period).
        try:
            await asyncio.wait_for(self.context.terminated.wait(), self.config.keep_alive_timeout)
        except TimeoutError:
            if (
                not self._received
                and self.writer.get_extra_info("ssl_object") is None
                and (left_out := _SILENT_CLEARTEXT.take()) is not None
            ):
                # What the AWS SDK's CRT client does with an http:// endpoint:
                # it connects, then sends its request only once its input is
                # closed. An app that awaits the stream's output before sending
                # waits for ever, and this close was the only trace of it. (A
                # browser's pre-connect or a port check does it too: "perhaps".)
                peer = self.writer.get_extra_info("peername") or ("?", 0)
                server_log.info(
                    "a cleartext connection from %s:%s sent no request for %g s and was "
                    "closed; perhaps an AWS SDK streaming client given an http:// "
                    "endpoint, which sends nothing until its input is closed: its "
                    "streams need the https:// endpoint%s",
                    peer[0],
                    peer[1],
                    self.config.keep_alive_timeout,
                    left_out_text(left_out, _SILENT_CLEARTEXT.interval),
                )
            retire = getattr(getattr(self.protocol, "protocol", None), "retire_idle", None)
            if retire is not None:
                await asyncio.shield(retire())
                return
        await asyncio.shield(self._initiate_server_close())

    async def _initiate_server_close(self) -> None:
        # The idle timer and server shutdown close a connection here: a TLS
        # transport then waits for the peer's close_notify (asyncio's 30 s SSL
        # shutdown timeout) before the reader sees EOF, and an idle pooled
        # client never sends it, holding shutdown for as long. Bounded as in
        # _close: a peer silent after CLOSE_TIMEOUT is treated as gone.
        await super()._initiate_server_close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, _abort, self.writer.transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    """Drop ``transport`` if it is still open (a no-op once it has closed)."""
    try:
        transport.abort()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError, OSError):
        pass


def install() -> None:
    """Make hypercorn's asyncio server use :class:`QuietTCPServer`; idempotent.

    ``hypercorn.asyncio.run`` imported ``TCPServer`` by name and builds one per
    connection from that module's globals, so rebinding the name there is enough.
    """
    setattr(hypercorn.asyncio.run, "TCPServer", QuietTCPServer)  # noqa: B010


class _CleartextAnsweringSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol, answering a cleartext HTTP request.

    A client given ``http://`` and the TLS port sends a plain HTTP request,
    which OpenSSL refuses; asyncio then closes the connection without a word.
    The CRT client behind the SDK waits on such a connection for ever
    (observed with awscrt 0.38: no error, no timeout), so a scheme mixed up in
    a configuration hung the application. Here the refusal is answered in
    cleartext first: an HTTP/1.1 400 in the service's error shape saying which
    scheme and port to use, or, to an HTTP/2 connection preface (prior
    knowledge), a GOAWAY carrying that body. The request is recognised from the
    connection's first bytes (OpenSSL's own ``HTTP_REQUEST`` knows only GET,
    POST, HEAD and PUT: a DELETE, the control plane's DeleteDomain, hung).
    A TLS client never reaches this path: once its handshake is done, the
    protocol is asyncio's own again.
    """

    #: The response, set per server by :func:`answer_cleartext_requests`.
    cleartext_answer: bytes = b""
    #: The connection's first bytes (up to :data:`_SNIFF`), while it shakes hands.
    _first_bytes: bytes = b""
    #: Whether its failed handshake was reported (see :func:`_report_failed_handshake`).
    _reported: bool = False

    def buffer_updated(self, nbytes: int) -> None:
        if len(self._first_bytes) < _SNIFF:
            wanted = min(nbytes, _SNIFF - len(self._first_bytes))
            # SSLProtocol's private receive buffer, which typeshed leaves out.
            view = self._ssl_buffer_view  # type: ignore[attr-defined]
            self._first_bytes += bytes(view[:wanted])
        super().buffer_updated(nbytes)

    def connection_lost(self, exc: BaseException | None) -> None:
        # Lost while shaking hands, with no handshake error (which is reported
        # above): a client that closed, or the handshake timeout's abort.
        # SSLProtocol's private state, which typeshed leaves out.
        if (
            self._state == sslproto.SSLProtocolState.DO_HANDSHAKE  # type: ignore[attr-defined]
            and not self._reported
            and self._first_bytes[:1] == _TLS_HANDSHAKE
        ):
            self._reported = True
            _report_failed_handshake(self, exc)
        super().connection_lost(exc)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        answer = b""
        if handshake_exc is None:
            # Back to asyncio's class: no cost on a TLS connection's reads.
            self.__class__ = sslproto.SSLProtocol  # type: ignore[assignment]
        elif isinstance(handshake_exc, ssl.SSLError) and self.cleartext_answer:
            if self._first_bytes.startswith(b"PRI * HTTP/2"):  # the h2 preface
                answer = _h2_refusal(self.cleartext_answer)
            elif (
                handshake_exc.reason == "HTTP_REQUEST"
                or _REQUEST_LINE.match(self._first_bytes) is not None
            ):
                answer = self.cleartext_answer
        if handshake_exc is not None and not answer and self._first_bytes[:1] == _TLS_HANDSHAKE:
            self._reported = True
            _report_failed_handshake(self, handshake_exc)
        if answer and self._transport is not None:
            try:
                # Sent at once on the idle socket; the close below drops only
                # what the socket did not take.
                # The socket's transport: typeshed types it as a BaseTransport.
                self._transport.write(answer)  # type: ignore[attr-defined]
            except (OSError, RuntimeError, AttributeError):
                pass
        sslproto.SSLProtocol._on_handshake_complete(self, handshake_exc)


#: Seconds between two reports of TLS handshakes that did not complete.
HANDSHAKE_REPORT_INTERVAL = 10.0
#: OpenSSL's reasons for a client's alert that it refused the certificate.
_REFUSED_CERTIFICATE = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
#: A TLS record's first byte when it carries a handshake (a ClientHello).
_TLS_HANDSHAKE = b"\x16"
#: Failed handshakes are reported at most once an interval, the next report
#: counting those left out.
_HANDSHAKE_REPORTS = Throttle(HANDSHAKE_REPORT_INTERVAL)


def _report_failed_handshake(protocol: sslproto.SSLProtocol, error: BaseException | None) -> None:
    """Log, at most once every :data:`HANDSHAKE_REPORT_INTERVAL` seconds, a TLS
    handshake that a client started (it sent bytes) and did not finish.

    The usual causes are a client that does not trust the emulator's CA and one
    that asked for a host name its certificate does not cover. The SDK's CRT
    client then just stops (the handshake times out) and fails, 10-25 s later,
    with "TLS (SSL) negotiation failed", while the emulator logged nothing. A
    client that says why (an alert) is reported as refusing the certificate; one
    that stops or closes as maybe so. Connections that sent no ClientHello (a port
    probe, a wait-for-port script, bytes that are not TLS) are not reported.
    """
    left_out = _HANDSHAKE_REPORTS.take()
    if left_out is None:
        return
    peer = protocol._get_extra_info("peername") if protocol._transport is not None else None
    who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "a client"
    reason = getattr(error, "reason", None)
    if reason in _REFUSED_CERTIFICATE:
        what = f"refused the emulator's certificate ({reason}): either it does not trust"
    else:
        what = (
            f"did not finish its TLS handshake ({_handshake_error(error)}): maybe it does not trust"
        )
    more = f"; {left_out} more since the last report" if left_out else ""
    log.warning(
        "%s %s the emulator's CA (give it <state-dir>/ca.pem, also served at GET "
        "/_emulator/ca.pem; the AWS SDK then closes this way), or it asked for a host "
        "name the certificate does not cover (add it with --tls-hostname)%s",
        who,
        what,
        more,
    )


def _handshake_error(error: BaseException | type[BaseException] | None) -> str:
    """A handshake's error in words (asyncio hands over an EOF as the class alone)."""
    if error is None or error is ConnectionResetError or isinstance(error, ConnectionResetError):
        return "it closed the connection"
    if isinstance(error, type):
        return error.__name__
    return str(error) or type(error).__name__


#: How many of a connection's first bytes tell a cleartext request.
_SNIFF = 24
#: An HTTP/1.x request line's start: a method (RFC 9110 tokens, as clients send
#: them, upper case) and a space; no TLS record starts with a capital letter.
_REQUEST_LINE = re.compile(rb"[A-Z][A-Z-]{2,15} [^ \r\n]")


def _h2_refusal(answer: bytes) -> bytes:
    """An HTTP/2 server's preface (empty SETTINGS) and a GOAWAY (PROTOCOL_ERROR)
    whose debug data is ``answer``'s body, for a prior-knowledge client."""
    body = answer.partition(b"\r\n\r\n")[2]
    settings = struct.pack(">I", 0)[1:] + b"\x04\x00" + struct.pack(">I", 0)
    payload = struct.pack(">II", 0, 0x1) + body
    goaway = struct.pack(">I", len(payload))[1:] + b"\x07\x00" + struct.pack(">I", 0)
    return settings + goaway + payload


def cleartext_answer(https_url: str, h2c_url: str) -> bytes:
    """The 400 a cleartext request to the TLS port gets, naming both endpoints.

    By port first: the request's host is not known here (OpenSSL took its bytes),
    and the endpoints' own host is the emulator's (``localhost`` is another
    machine for a client in another container)."""
    tls_port, h2c_port = urlsplit(https_url).port, urlsplit(h2c_url).port
    message = (
        f"this port speaks TLS only, and the request came in cleartext: use https:// "
        f"on this port, {tls_port} (as the emulator names it, {https_url}), trusting "
        f"the emulator's CA, or the cleartext port {h2c_port} ({h2c_url}) (the AWS "
        "SDK's streams need https://: over http:// it sends no audio)"
    )
    status, headers, body = http_error(
        ValidationException(message), headers=[(b"connection", b"close")]
    )
    head = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode("ascii"))]
    head += [name + b": " + value for name, value in headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def answer_cleartext_requests(
    loop: asyncio.AbstractEventLoop, port: int, answer: bytes
) -> Callable[[], None]:
    """Make the TLS server listening on ``port`` in ``loop`` answer a cleartext HTTP
    request with ``answer`` (see :class:`_CleartextAnsweringSSLProtocol`); return
    the function that stops it.

    Only that port's server-side TLS connections change: a second emulator on
    the same loop has its own answer, and an application's own TLS servers and
    clients on it are left alone. A loop without asyncio's selector transports
    is left as it is (the connection is then closed without an answer, as before).
    """
    answers: dict[int, bytes] | None = getattr(loop, "_medscribe_cleartext_answers", None)
    if answers is None:
        make = getattr(loop, "_make_ssl_transport", None)
        if make is None:
            return lambda: None
        answers = {}

        def _make_ssl_transport(rawsock: socket.socket, *args: Any, **kwargs: Any) -> Any:
            app_transport = make(rawsock, *args, **kwargs)
            protocol = getattr(app_transport, "_ssl_protocol", None)
            if kwargs.get("server_side") and type(protocol) is sslproto.SSLProtocol:
                try:
                    found = answers.get(rawsock.getsockname()[1])
                except (OSError, IndexError, TypeError):
                    found = None
                if found is not None:
                    try:
                        # Before its connection_made (scheduled, not yet run):
                        # nothing has happened that the subclass does differently.
                        protocol.__class__ = _CleartextAnsweringSSLProtocol
                        protocol.cleartext_answer = found  # type: ignore[attr-defined]
                    except (TypeError, AttributeError):
                        pass  # an asyncio whose protocol cannot change class
            return app_transport

        loop._make_ssl_transport = _make_ssl_transport  # type: ignore[attr-defined]
        loop._medscribe_cleartext_answers = answers  # type: ignore[attr-defined]
    answers[port] = answer

    def stop() -> None:
        if answers.get(port) is answer:
            del answers[port]

    return stop
