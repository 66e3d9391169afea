"""A lean asyncio HTTP/2 client connection for the load generators.

Built on ``h2`` for everything stateful (HPACK, stream states, SETTINGS, flow
control bookkeeping) but writes request DATA frames itself: ``h2``'s
``send_data`` costs about 25 µs a frame in pure Python, and at 3,000 real-time
sessions (30,000 audio events a second) that alone would eat a core the
server needs. The hand-built frames debit ``h2``'s own flow-control windows,
so ``h2`` stays the single source of truth about how much may be sent.

Streams are driven by callbacks (:class:`StreamHandler`), not tasks, and
writes are batched: bytes collect in an output list and go to the transport
on :meth:`ClientConnection.flush` (called after every received batch and by
the load generators after each scheduling tick).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

__all__ = ["StreamHandler", "ClientConnection", "connect", "client_ssl_context"]

# h2 builds repr(frame) for its no-op trace logger on every received frame, and a
# DATA frame's repr hex-encodes the whole payload (hyperframe's _raw_data_repr):
# about a third of h2's receive cost. Only this client process is changed.
hyperframe.frame._raw_data_repr = lambda data: "<data>"  # type: ignore[attr-defined]

#: Our receive windows: large, so the server is never blocked sending to us.
_RECEIVE_WINDOW = 2**30
_OnSent = Callable[[float], None] | None


class StreamHandler(Protocol):
    """What a stream's owner is told, in order: response, data..., then end or reset."""

    def on_response(self, status: int) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_reset(self, reason: str) -> None: ...


class ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection (h2c prior knowledge, or TLS with ALPN ``h2``)."""

    def __init__(self, *, authority: str, scheme: str) -> None:
        self.authority = authority
        self.scheme = scheme
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self.transport: asyncio.Transport | None = None
        self.handlers: dict[int, StreamHandler] = {}
        # Request bytes waiting for flow-control credit, per stream, in order.
        self._pending: dict[int, deque[list[object]]] = {}
        self._out: list[bytes] = []
        self.goaway = False
        self.lost = False
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.started = 0

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.h2.initiate_connection()
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _RECEIVE_WINDOW,
            }
        )
        self.h2.increment_flow_control_window(_RECEIVE_WINDOW)
        self._emit_h2()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._fail_all(f"protocol error: {error}")
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                handler = self.handlers.get(event.stream_id)
                if handler is not None:
                    handler.on_data(event.data)
                if event.flow_controlled_length:
                    try:
                        self.h2.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    except h2.exceptions.StreamClosedError:
                        pass
            elif kind is h2.events.WindowUpdated:
                self._window_updated(event.stream_id)
            elif kind is h2.events.ResponseReceived:
                handler = self.handlers.get(event.stream_id)
                if handler is not None:
                    status = next((int(v) for k, v in event.headers if k == b":status"), 0)
                    handler.on_response(status)
            elif kind is h2.events.StreamEnded:
                if self._pending.pop(event.stream_id, None) is not None:
                    # The response is complete: what is left of the request is
                    # dropped and our side ended, as a client that noticed would.
                    self._end(event.stream_id)
                handler = self.handlers.pop(event.stream_id, None)
                if handler is not None:
                    handler.on_end()
            elif kind is h2.events.StreamReset:
                self._pending.pop(event.stream_id, None)
                handler = self.handlers.pop(event.stream_id, None)
                if handler is not None:
                    handler.on_reset(f"stream reset by the server (code {event.error_code})")
            elif kind is h2.events.RemoteSettingsChanged:
                if not self.ready.done():
                    self.ready.set_result(None)
                self._window_updated(0)
            elif kind is h2.events.ConnectionTerminated:
                self.goaway = True
                last = event.last_stream_id if event.last_stream_id is not None else 2**31
                for stream_id in [s for s in self.handlers if s > last]:
                    self._pending.pop(stream_id, None)
                    self.handlers.pop(stream_id).on_reset("refused by GOAWAY")
        self._emit_h2()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail_all(f"connection lost: {exc or 'closed'}")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection closed before SETTINGS"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- streams -----------------------------------------------------------------

    @property
    def active(self) -> int:
        """Streams opened and not yet ended or reset."""
        return len(self.handlers)

    @property
    def usable(self) -> bool:
        """Whether new streams may be opened here."""
        return not (self.goaway or self.lost)

    def start(self, headers: list[tuple[bytes, bytes]], handler: StreamHandler) -> int:
        """Open a stream with ``headers``; return its id (raises h2 errors if refused)."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers)
        self._emit_h2()
        self.handlers[stream_id] = handler
        self.started += 1
        return stream_id

    def send(
        self,
        stream_id: int,
        data: bytes,
        *,
        end_stream: bool = False,
        on_sent: _OnSent = None,
    ) -> None:
        """Queue ``data`` (then END_STREAM if asked) on the stream.

        Sent at once as far as flow control allows, the rest when the server
        grants credit; ``on_sent(monotonic time)`` runs when the last byte has
        been framed. Data for a stream that has ended or been reset is dropped.
        """
        if stream_id not in self.handlers:
            if end_stream:
                self._end(stream_id)
            return
        queue = self._pending.get(stream_id)
        if queue is not None:
            queue.append([memoryview(data), end_stream, on_sent])
            return
        view = memoryview(data)
        sent = self._write(stream_id, view)
        if sent < len(view):
            self._pending[stream_id] = deque([[view[sent:], end_stream, on_sent]])
            return
        self._done(stream_id, end_stream, on_sent)

    def send_messages(self, stream_id: int, messages: Sequence[bytes]) -> None:
        """Send each of ``messages`` in a DATA frame of its own, then END_STREAM.

        The SDK's framing at the cost of one join: when the windows hold them
        all and each fits one frame, the frames are built in one pass;
        otherwise each goes through :meth:`send`.
        """
        conn = self.h2
        stream = conn.streams.get(stream_id)
        total = sum(map(len, messages))
        if (
            stream_id in self._pending
            or stream_id not in self.handlers
            or stream is None
            or stream.closed
            or min(conn.outbound_flow_control_window, stream.outbound_flow_control_window) < total
            or max(map(len, messages)) > conn.max_outbound_frame_size
        ):
            for message in messages[:-1]:
                self.send(stream_id, message)
            self.send(stream_id, messages[-1], end_stream=True)
            return
        tail = b"\x00\x00" + stream_id.to_bytes(4, "big")
        self._out.append(
            b"".join(len(message).to_bytes(3, "big") + tail + message for message in messages)
        )
        conn.outbound_flow_control_window -= total
        stream.outbound_flow_control_window -= total
        self._done(stream_id, True, None)

    def flush(self) -> None:
        """Write everything queued to the transport."""
        if self._out and self.transport is not None and not self.lost:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        """Send GOAWAY and close the transport."""
        if self.transport is None or self.lost:
            return
        try:
            self.h2.close_connection()
            self._emit_h2()
            self.flush()
        except h2.exceptions.ProtocolError:
            pass
        self.transport.close()

    # -- internals ---------------------------------------------------------------

    def _emit_h2(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self._out.append(data)

    def _write(self, stream_id: int, view: memoryview) -> int:
        """Frame as much of ``view`` as the windows allow; return the byte count."""
        stream = self.h2.streams.get(stream_id)
        if stream is None or stream.closed:
            return len(view)  # nobody will read it
        conn = self.h2
        window = min(conn.outbound_flow_control_window, stream.outbound_flow_control_window)
        size = min(len(view), window)
        if size <= 0:
            return 0
        frame_size = conn.max_outbound_frame_size
        out = self._out
        sid = stream_id.to_bytes(4, "big")
        for offset in range(0, size, frame_size):
            piece = view[offset : min(offset + frame_size, size)]
            # DATA frame header: 24-bit length, type 0, flags 0, stream id.
            out.append(len(piece).to_bytes(3, "big") + b"\x00\x00" + sid)
            out.append(piece.tobytes())
        conn.outbound_flow_control_window -= size
        stream.outbound_flow_control_window -= size
        return size

    def _end(self, stream_id: int) -> None:
        try:
            self.h2.end_stream(stream_id)
        except (h2.exceptions.ProtocolError, KeyError):
            return  # the stream is closed or reset already
        self._emit_h2()

    def _done(self, stream_id: int, end_stream: bool, on_sent: _OnSent) -> None:
        if end_stream:
            self._end(stream_id)
        if on_sent is not None:
            on_sent(time.monotonic())

    def _window_updated(self, stream_id: int) -> None:
        if not self._pending:
            return
        targets = list(self._pending) if stream_id == 0 else [stream_id]
        for sid in targets:
            queue = self._pending.get(sid)
            while queue:
                item = queue[0]
                view: memoryview = item[0]  # type: ignore[assignment]
                sent = self._write(sid, view)
                if sent < len(view):
                    item[0] = view[sent:]
                    break
                queue.popleft()
                self._done(sid, bool(item[1]), item[2])  # type: ignore[arg-type]
            if queue is not None and not queue:
                del self._pending[sid]
            if self.h2.outbound_flow_control_window <= 0:
                break

    def _fail_all(self, reason: str) -> None:
        handlers, self.handlers = self.handlers, {}
        self._pending.clear()
        for handler in handlers.values():
            handler.on_reset(reason)


def client_ssl_context(ca_file: Path | str) -> ssl.SSLContext:
    """A TLS context trusting ``ca_file`` that offers only ``h2`` by ALPN."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    return context


async def connect(
    host: str, port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 10.0
) -> ClientConnection:
    """Open one connection and wait for the server's SETTINGS; raise ConnectionError."""
    loop = asyncio.get_running_loop()
    scheme = "https" if tls is not None else "http"
    authority = f"{host}:{port}"
    _, protocol = await asyncio.wait_for(
        loop.create_connection(
            lambda: ClientConnection(authority=authority, scheme=scheme),
            host,
            port,
            ssl=tls,
            server_hostname="localhost" if tls is not None else None,
        ),
        timeout,
    )
    assert isinstance(protocol, ClientConnection)
    if tls is not None and protocol.transport is not None:
        ssl_object = protocol.transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            protocol.transport.close()
            raise ConnectionError("the server did not negotiate h2 by ALPN")
    await asyncio.wait_for(protocol.ready, timeout)
    return protocol
