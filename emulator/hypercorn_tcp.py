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
import ssl
from typing import Any

import hypercorn.asyncio.run
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.events import Closed, Event, RawData

__all__ = ["QuietTCPServer", "install", "CLOSE_TIMEOUT"]

#: Seconds a closing connection waits for the peer's TLS close_notify: plenty on
#: a local network, and short enough for the 2 s shutdown promise.
CLOSE_TIMEOUT = 0.5

#: Bytes sent (or waiting in the transport) above which a send is written at
#: once and waits for the transport to drain, as hypercorn's own does each time.
COALESCE_BYTES = 64 * 1024


class QuietTCPServer(TCPServer):
    """hypercorn's ``TCPServer`` that treats a TLS peer's abrupt close as a close,
    and writes what the protocol sends in one loop iteration with one call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_handle: asyncio.Handle | None = None

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
        finally:
            deadline.cancel()

    async def _drop_after_grace(self) -> None:
        await self.context.terminated.wait()
        await asyncio.sleep(self.config.graceful_timeout)
        _abort(self.writer.transport)

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
        try:
            # A Closed event goes to _close, which writes what is pending first.
            await super().protocol_send(event)
        except AttributeError:
            await self.protocol.handle(Closed())

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
