"""TLS clients that hang up mid-conversation leave no error tracebacks in the log; how
the server's connections gather their writes and size their reads."""

from __future__ import annotations

import asyncio
import logging

import pytest

from .support import new_session_id, pcm_tone, run_session


async def test_closing_sdk_clients_leaves_no_unhandled_connection_errors(emulator, caplog):
    from emulator.sdk import make_client

    caplog.set_level(logging.ERROR)
    for _ in range(3):
        client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
        # A session that ends early while the client is still sending, then a hang-up.
        result = await run_session(
            client, new_session_id(), audio=pcm_tone(3.0), end_of_session=False
        )
        assert result.error is None
        await client._config.transport.close()
    # Let the server notice the hang-ups (teardown happens on its own loop).
    await asyncio.sleep(1.0)
    # And a connection the server closes for idleness (keep-alive timeout 5 s)
    # while the client still thinks it is open.
    client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    assert (await run_session(client, new_session_id(), audio=pcm_tone(0.5))).error is None
    await asyncio.sleep(6.0)
    again = await run_session(client, new_session_id(), audio=pcm_tone(8.0), chunk_bytes=32000)
    assert again.error is None and again.finals
    await client._config.transport.close()
    await asyncio.sleep(1.0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_shutdown_does_not_wait_for_an_idle_tls_client_to_answer_close_notify(tmp_path):
    # A pooled keep-alive client (boto3, the CRT) sits idle and reads nothing:
    # the server's close_notify goes unanswered, and asyncio would hold the
    # connection, and shutdown with it, for its 30 s SSL shutdown timeout.
    import socket
    import ssl
    import time

    from emulator import hypercorn_h2
    from emulator.tls import ensure_certificates

    from .support import serving_tls

    hypercorn_h2.install()
    tls = ensure_certificates(tmp_path)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    with serving_tls(app, tls, keep_alive_timeout=600) as port:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        client = context.wrap_socket(raw, server_hostname="localhost")
        client.sendall(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        stopping = time.monotonic()  # the client now idles, as a pool does
    try:
        assert time.monotonic() - stopping < 5
    finally:
        client.close()


# --- Writes coalesced per loop iteration ---------------------------------------------


class _Transport:
    def __init__(self, *, closing: bool = False, buffered: int = 0) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = closing
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.calls.append(("abort", b""))


class _Writer:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport
        self.drains = 0

    async def drain(self) -> None:
        self.drains += 1

    def write_eof(self) -> None:
        self.transport.calls.append(("eof", b""))

    def close(self) -> None:
        self.transport.calls.append(("close", b""))
        self.transport.closing = True

    async def wait_closed(self) -> None:
        return None


class _Protocol:
    def __init__(self) -> None:
        self.events: list[object] = []

    async def handle(self, event: object) -> None:
        self.events.append(event)


def _server(transport: _Transport):
    from emulator.hypercorn_tcp import QuietTCPServer

    server = QuietTCPServer(
        None, asyncio.get_running_loop(), None, None, None, None, _Writer(transport)
    )
    server.protocol = _Protocol()
    return server


async def test_sends_in_one_loop_iteration_go_out_in_one_write_in_order():
    from hypercorn.events import RawData

    transport = _Transport()
    server = _server(transport)
    for part in (b"HEADERS", b"DATA-1", b"WINDOW_UPDATE"):
        await server.protocol_send(RawData(data=part))
    assert transport.calls == []  # nothing yet: the write waits for the iteration's end
    await asyncio.sleep(0)
    assert transport.calls == [("write", b"HEADERSDATA-1WINDOW_UPDATE")]
    await server.protocol_send(RawData(data=b"later"))
    await asyncio.sleep(0)
    assert transport.calls[1:] == [("write", b"later")]
    assert server.writer.drains == 0


async def test_a_large_send_or_a_full_transport_writes_at_once_and_waits_for_the_drain():
    from hypercorn.events import RawData

    from emulator.hypercorn_tcp import COALESCE_BYTES

    transport = _Transport()
    server = _server(transport)
    await server.protocol_send(RawData(data=b"small"))
    await server.protocol_send(RawData(data=b"x" * COALESCE_BYTES))
    assert transport.calls == [("write", b"small" + b"x" * COALESCE_BYTES)]
    assert server.writer.drains == 1
    transport.buffered = COALESCE_BYTES  # the peer reads slowly: every send waits
    await server.protocol_send(RawData(data=b"more"))
    assert transport.calls[1:] == [("write", b"more")]
    assert server.writer.drains == 2
    await asyncio.sleep(0)
    assert len(transport.calls) == 2  # nothing was left for the iteration's end


async def test_closing_writes_what_is_pending_first():
    from hypercorn.events import Closed, RawData

    transport = _Transport()
    server = _server(transport)
    server.idle_task = type("Idle", (), {"stop": staticmethod(lambda: asyncio.sleep(0))})()
    await server.protocol_send(RawData(data=b"GOAWAY"))
    await server.protocol_send(Closed())
    assert transport.calls[:3] == [("write", b"GOAWAY"), ("eof", b""), ("close", b"")]
    await asyncio.sleep(0)
    assert [call for call in transport.calls if call[0] == "write"] == [("write", b"GOAWAY")]
    # The connection's own end (its reader saw EOF) closes without a Closed event.
    transport = _Transport()
    server = _server(transport)
    server.idle_task = type("Idle", (), {"stop": staticmethod(lambda: asyncio.sleep(0))})()
    await server.protocol_send(RawData(data=b"last frames"))
    await server._close()
    assert transport.calls[:2] == [("write", b"last frames"), ("eof", b"")]


async def test_a_send_to_a_closing_transport_closes_the_connection_and_writes_nothing():
    from hypercorn.events import Closed, RawData

    transport = _Transport()
    server = _server(transport)
    await server.protocol_send(RawData(data=b"queued"))
    transport.closing = True  # the peer went away before the iteration ended
    await server.protocol_send(RawData(data=b"too late"))
    await asyncio.sleep(0)
    assert transport.calls == []
    assert [type(event) for event in server.protocol.events] == [Closed]


# --- Reads in larger steps -------------------------------------------------------------


class _ReadTransport:
    """What a StreamReader calls on its transport to stop and restart reading."""

    def __init__(self) -> None:
        self.paused = 0

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        pass


def _reading_server(reader: asyncio.StreamReader, *, read_timeout: float | None = None):
    from hypercorn.config import Config

    from emulator.hypercorn_tcp import QuietTCPServer

    config = Config()
    config.read_timeout = read_timeout  # type: ignore[assignment]
    server = QuietTCPServer(
        None, asyncio.get_running_loop(), config, None, None, reader, _Writer(_Transport())
    )
    server.protocol = _Protocol()
    return server


@pytest.mark.parametrize("http2", [True, False])
async def test_a_connection_reads_in_large_steps_and_stops_reading_only_past_its_limit(http2):
    """hypercorn's reader stops reading the socket above 128 KiB and hands the
    protocol 64 KiB at a time; over HTTP/2 the server's reads READ_SIZE at a
    time, in order, and stops only above twice READ_LIMIT. HTTP/1.1 keeps
    hypercorn's reads and limit."""
    from hypercorn.asyncio.tcp_server import MAX_RECV
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol.h2 import H2Protocol
    from hypercorn.protocol.h11 import H11Protocol

    from emulator.hypercorn_tcp import READ_LIMIT, READ_SIZE

    reader = asyncio.StreamReader()  # asyncio's default limit, as hypercorn's start_server
    server = _reading_server(reader)
    # What hypercorn's ProtocolWrapper holds: the protocol the connection speaks.
    kind = H2Protocol if http2 else H11Protocol
    server.protocol.protocol = kind.__new__(kind)
    transport = _ReadTransport()
    reader.set_transport(transport)  # type: ignore[arg-type]
    reading = asyncio.create_task(server._read_data())
    await asyncio.sleep(0)  # it waits for data, its limit set
    data = bytes(range(256)) * (3 * READ_SIZE // 256) + b"tail"
    reader.feed_data(data)
    rest = b"x" * (2 * READ_LIMIT - len(data) + 1)
    if http2:
        assert transport.paused == 0  # 768 KiB waiting: below twice the limit
        reader.feed_data(rest)
        assert transport.paused == 1  # past twice the limit: reading stops
    else:
        assert transport.paused == 1  # past 128 KiB, as hypercorn's own
        reader.feed_data(rest)
    reader.feed_eof()
    await asyncio.wait_for(reading, 5)
    events = server.protocol.events
    reads = [event.data for event in events if isinstance(event, RawData)]
    assert {len(read) for read in reads[:-1]} == {READ_SIZE if http2 else MAX_RECV}
    assert b"".join(reads) == data + rest
    assert isinstance(events[-1], Closed)


async def test_a_read_timeout_still_ends_a_silent_connection():
    from hypercorn.events import Closed

    reader = asyncio.StreamReader()
    server = _reading_server(reader, read_timeout=0.05)
    await asyncio.wait_for(server._read_data(), 5)
    assert [type(event) for event in server.protocol.events] == [Closed]


async def test_a_connection_cancelled_as_the_server_stops_ends_quietly(monkeypatch):
    """At the loop's end a connection still closing is cancelled, and asyncio's stream
    callback logged the cancellation as an ERROR with a traceback (hundreds of streams,
    their client gone, then SIGTERM). Only while the server is stopping: otherwise a
    cancellation goes on up."""
    import types

    from hypercorn.asyncio.tcp_server import TCPServer

    async def cancelled(self):
        raise asyncio.CancelledError

    monkeypatch.setattr(TCPServer, "run", cancelled)
    server = _server(_Transport())
    server.config = types.SimpleNamespace(graceful_timeout=1.0)
    server.context = types.SimpleNamespace(terminated=asyncio.Event())
    with pytest.raises(asyncio.CancelledError):
        await server.run()
    server.context.terminated.set()
    assert await server.run() is None


async def test_an_idle_report_as_the_connection_stops_is_dropped(monkeypatch):
    """An app ending its response as the server stopped made hypercorn restart the idle
    timer on a task group shutting down: "Error in ASGI Framework" in the log."""
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.events import Updated

    async def shutting_down(self, event):
        raise RuntimeError("TaskGroup is shutting down")

    monkeypatch.setattr(TCPServer, "protocol_send", shutting_down)
    server = _server(_Transport())
    await server.protocol_send(Updated(idle=True))
    await server.protocol_send(Updated(idle=False))


def test_an_http1_client_that_half_closes_reads_its_response_and_the_connection_ends(
    emulator,
):
    """The README's half-close line: over cleartext HTTP/1.1 the request sent before
    the client's FIN is answered in full, and the connection then ends at once (it
    waited out the keep-alive timeout before)."""
    import json
    import socket
    import time

    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        sock.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        ended = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    assert len(body) == length and json.loads(body)["status"] == "ready"
    assert ended < 2.0  # the keep-alive timeout is 5 s at least
