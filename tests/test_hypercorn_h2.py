"""HTTP/2 streams whose response ends before the request: emulator.hypercorn_h2.

Each test runs a real hypercorn server (``hypercorn.asyncio.serve``) in a
thread, cleartext h2c with prior knowledge on a free 127.0.0.1 port, and drives
it with a raw ``h2`` client over a socket. The client writes its DATA frames
itself, keeping its own flow-control books, so that it can go on sending on a
stream the server has answered or reset, as a client with frames in flight
does.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import h2.events
import h2.exceptions
import hpack
import hypercorn.protocol
import hypercorn.protocol.h2
import priority
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2.windows import WindowManager
from hypercorn.asyncio import serve
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.typing import ConnectionState
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from emulator import hypercorn_h2
from emulator.flow_control import RoundRobin, WideningWindow, merge_into_last
from emulator.hypercorn_h2 import (
    CONNECTION_EXTENSION,
    INLINE_BODY_EXTENSION,
    MERGE_LIMIT,
    MORE_BODIES,
    DuplexH2Protocol,
    install,
)
from emulator.logs import Throttle

#: Longest wait for any one thing the server should do; a stall fails here.
DEADLINE = 10.0
KIB = 1024
#: What stream A keeps sending after its response: over three times the
#: 65,535-byte connection window, so it only gets through if the server keeps
#: handing that window back.
FLOOD = 224 * KIB
# What /flood-out sends: far past the 32 KiB a stream buffers before its app waits.
FLOOD_OUT = 1024 * KIB
REJECTION = b'{"message":"bad request"}'
#: The connection window the emulator serves with (the duplex fixture narrows it).
WIDE_CONNECTION_WINDOW = DuplexH2Protocol.connection_window

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# --- the ASGI app --------------------------------------------------------------


class App:
    """Routes by path; each route is one way a response can end early."""

    def __init__(self) -> None:
        # Set by /abandon just before it returns, for tests that must know.
        self.abandoned = threading.Event()
        # Set by /after-disconnect once its last send has returned.
        self.ended_after_disconnect = threading.Event()
        # Lets /pause and /stall read on.
        self.resume = threading.Event()
        # Set by /pause once it has read its one message.
        self.paused = threading.Event()
        # /gate: messages read so far, and the two points it waits at.
        self.gate_read = 0
        self.gate_open = threading.Event()
        self.gate_done = threading.Event()
        # Response bytes /flood-out's send() has taken so far; set when it returns.
        self.pushed = 0
        self.flood_over = threading.Event()
        # What /merge and /pause received: per message, its bodies' count and
        # the bytes of the further ones (InlineBody.merge).
        self.shapes: list[tuple[int, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        route = scope["path"].strip("/").replace("-", "_")
        if route in ("inline", "send_now", "no_content", "merge", "goaway"):
            await getattr(self, route)(scope, receive, send)
            return
        await getattr(self, route)(receive, send)

    async def reject(self, receive: Receive, send: Send) -> None:
        """A 400 before reading any of the body, as our API's validation does."""
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"x-amzn-errortype", b"ValidationException")],
            }
        )
        await send({"type": "http.response.body", "body": REJECTION})

    async def echo(self, receive: Receive, send: Send) -> None:
        """Full duplex: each request chunk is sent back as it arrives."""
        await send({"type": "http.response.start", "status": 200})
        while (message := await receive())["type"] == "http.request":
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": message["body"], "more_body": more})
            if not more:
                return

    async def goaway(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """/echo, once it has sent a graceful GOAWAY on its connection (a chaos rule's)."""
        await scope["extensions"][CONNECTION_EXTENSION].goaway()
        await self.echo(receive, send)

    async def read_some(self, receive: Receive, send: Send) -> None:
        """A complete response after 32 KiB of a longer body, as an in-stream error does."""
        received = 0
        while received < 32 * KIB:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message["body"])
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"enough"})

    async def inline(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Takes DATA through the InlineBody extension while it waits in receive().

        Its handler takes ``take...`` silently, ``wake...`` with a wake-up, raises
        on ``boom...`` and leaves everything else to the queue; ``send...`` it
        answers itself, ``<send...>``, through InlineBody.send, and if that
        refuses takes it with a wake-up. Each message the app receives is
        answered with what was taken since the one before it and what the
        message held; after ``slow...`` it waits before the next.
        """
        body = scope["extensions"][INLINE_BODY_EXTENSION]
        taken: list[bytes] = []

        def handler(data: bytes) -> bool | None:
            if data.startswith(b"boom"):
                raise RuntimeError("a bug in the handler")
            if data.startswith(b"send"):
                if body.send(b"<" + data + b">"):
                    return False
                taken.append(data)
                return True
            if data.startswith((b"take", b"wake")):
                taken.append(data)
                return data.startswith(b"wake")
            return None

        await send({"type": "http.response.start", "status": 200})
        while True:
            body.handler = handler
            try:
                message = await receive()
            finally:
                body.handler = None
            if message["type"] != "http.request":
                return
            line = b"taken:" + b",".join(taken) + b" got:" + message["body"] + b";"
            taken.clear()
            if message["body"].startswith(b"slow"):
                await asyncio.sleep(0.3)
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": line, "more_body": more})
            if not more:
                return

    async def send_now(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Calls InlineBody.send from the app's own task, around its own sends,
        and ends its response with the answers."""
        body = scope["extensions"][INLINE_BODY_EXTENSION]
        answers = [body.send(b"[no headers yet]")]
        await send({"type": "http.response.start", "status": 200})
        answers.append(body.send(b"[a]"))
        # The send task has not run since: [b] is still in the stream's buffer.
        await send({"type": "http.response.body", "body": b"[b]", "more_body": True})
        answers.append(body.send(b"[behind b]"))
        await asyncio.sleep(0.2)
        answers.append(body.send(b"[c]"))
        answers.append(body.send(b""))
        answers.append(body.send(b"x" * 70_000))  # more than the window and a frame
        await receive()  # the client's END_STREAM
        line = b" " + b",".join(b"%d" % answer for answer in answers)
        await send({"type": "http.response.body", "body": line, "more_body": False})
        answers = [body.send(b"[after the end]")]
        assert answers == [False]

    async def no_content(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """A 204 whose app offers InlineBody.send a body anyway, and must be refused."""
        body = scope["extensions"][INLINE_BODY_EXTENSION]
        await send({"type": "http.response.start", "status": 204})
        assert body.send(b"no body here") is False
        await receive()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def pause(self, receive: Receive, send: Send) -> None:
        """Reads one message, then nothing until the test sets ``resume`` (an app busy
        elsewhere); then reads the rest and answers with everything it read, in order."""
        await send({"type": "http.response.start", "status": 200})
        body = bytearray((await receive())["body"])
        self.paused.set()
        await self._read_on(receive, send, body)

    async def merge(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """/pause with InlineBody.merge set: DATA queued while it does not read
        may come several bodies to a message, which it reads in order."""
        scope["extensions"][INLINE_BODY_EXTENSION].merge = True
        await self.pause(receive, send)

    async def big(self, receive: Receive, send: Send) -> None:
        """Sends 8 MiB without reading: a client that reads none of it fills the
        server's socket buffer, and the server's writes wait."""
        await send({"type": "http.response.start", "status": 200})
        for _ in range(128):
            await send({"type": "http.response.body", "body": b"o" * 65_536, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def gate(self, receive: Receive, send: Send) -> None:
        """Reads one message; once ``gate_open`` is set, two more at once; then
        nothing until ``gate_done``, then the rest, and answers "ok"."""
        await send({"type": "http.response.start", "status": 200})
        await receive()
        self.gate_read = 1
        while not self.gate_open.is_set():
            await asyncio.sleep(0.01)
        await receive()
        await receive()
        self.gate_read = 3
        while not self.gate_done.is_set():
            await asyncio.sleep(0.01)
        while (message := await receive())["type"] == "http.request":
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})

    async def sink(self, receive: Receive, send: Send) -> None:
        """Reads nothing; ends its response once ``gate_done`` is set."""
        await send({"type": "http.response.start", "status": 200})
        while not self.gate_done.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def stall(self, receive: Receive, send: Send) -> None:
        """Reads nothing until the test sets ``resume`` (as a session in a chaos delay
        before it reads), then answers with everything it read, in order."""
        await send({"type": "http.response.start", "status": 200})
        await self._read_on(receive, send, bytearray())

    async def _read_on(self, receive: Receive, send: Send, body: bytearray) -> None:
        while not self.resume.is_set():
            await asyncio.sleep(0.01)
        while (message := await receive())["type"] == "http.request":
            body += message["body"]
            more = message.get(MORE_BODIES, [])
            for further in more:
                body += further
            self.shapes.append((1 + len(more), sum(map(len, more))))
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": bytes(body), "more_body": False})

    async def flood_out(self, receive: Receive, send: Send) -> None:
        """Sends FLOOD_OUT bytes of response in 4 KiB pieces, without reading the
        request, counting in ``pushed`` what each send() has taken."""
        try:
            await send({"type": "http.response.start", "status": 200})
            for index in range(FLOOD_OUT // (4 * KIB)):
                piece = bytes([index % 256]) * 4 * KIB
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                self.pushed += len(piece)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.flood_over.set()

    async def after_disconnect(self, receive: Receive, send: Send) -> None:
        """Waits for the request, and after ``http.disconnect`` ends its response, as
        the streaming route does when its client goes away."""
        await send({"type": "http.response.start", "status": 200})
        while (await receive())["type"] != "http.disconnect":
            pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.ended_after_disconnect.set()

    async def abandon(self, receive: Receive, send: Send) -> None:
        """Starts a response, sends part of its body, and returns."""
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        self.abandoned.set()

    async def abandon_raising(self, receive: Receive, send: Send) -> None:
        """Starts a response, sends part of its body, and raises."""
        await self.abandon(receive, send)
        raise RuntimeError("simulated failure mid-response")


# --- the server ----------------------------------------------------------------


@dataclass
class Server:
    port: int
    #: Exceptions that ended a connection task, by class name, innermost first.
    crashes: list[str] = field(default_factory=list)

    def record(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Loop exception handler: keep the names only, not the tracebacks,
        so nothing the crash left behind outlives the test."""
        pending = [context.get("exception")]
        while pending:
            error = pending.pop()
            if isinstance(error, BaseExceptionGroup):
                pending += error.exceptions
            elif error is not None:
                self.crashes.append(type(error).__name__)


@contextmanager
def running_server(app: App, **config_options: Any) -> Iterator[Server]:
    """Serve ``app`` in a thread; yield its port; shut it down on exit.

    The listening socket is bound to port 0 and handed to hypercorn as
    ``fd://``, so the port is known before the server starts and is never
    raced for.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = Server(port=listener.getsockname()[1])
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.graceful_timeout = 2
    for name, value in config_options.items():
        setattr(config, name, value)

    started = threading.Event()
    control: dict[str, Any] = {}

    async def main() -> None:
        control["loop"] = loop = asyncio.get_running_loop()
        control["stop"] = stop = asyncio.Event()
        loop.set_exception_handler(server.record)
        started.set()
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(DEADLINE), "server thread did not start"
    try:
        yield server
    finally:
        control["loop"].call_soon_threadsafe(control["stop"].set)
        thread.join(DEADLINE)
        assert not thread.is_alive(), "server did not shut down"


@pytest.fixture
def duplex(monkeypatch: pytest.MonkeyPatch) -> None:
    """install() for one test; the first setattr only records what to restore."""
    monkeypatch.setattr(hypercorn.protocol, "H2Protocol", hypercorn.protocol.H2Protocol)
    # The default 64 KiB connection window, so the floods below get through only
    # if dropped DATA is handed back (the emulator widens the window in production).
    monkeypatch.setattr(DuplexH2Protocol, "connection_window", 0)
    install()


@pytest.fixture
def stock(monkeypatch: pytest.MonkeyPatch) -> None:
    """hypercorn's own H2Protocol for one test, whatever ran before."""
    monkeypatch.setattr(hypercorn.protocol, "H2Protocol", hypercorn.protocol.h2.H2Protocol)


# --- the client ----------------------------------------------------------------


@dataclass
class StreamLog:
    """What the client saw on one stream, in order."""

    status: int | None = None
    body: bytearray = field(default_factory=bytearray)
    seen: list[str] = field(default_factory=list)  # "response", "end", "reset"
    reset_code: int | None = None


class _GracefulClientConnection(H2Connection):
    """h2's connection, reading on after a graceful GOAWAY (NO_ERROR).

    By RFC 9113 §6.8 the streams up to its last stream id go on, but h2 moves its
    state to CLOSED at any GOAWAY and then fails on the next frame. Here it only
    reports it (``ConnectionTerminated``), and the client may still open a stream,
    as one that has not read the GOAWAY yet would. A GOAWAY with an error code
    is h2's.
    """

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Any]]:
        if frame.error_code != ErrorCodes.NO_ERROR:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class Client:
    """A raw HTTP/2 client; h2 encodes HEADERS and decodes, DATA is written by hand."""

    def __init__(self, port: int, *, initial_window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=0.2)
        self.h2 = _GracefulClientConnection(H2Configuration(client_side=True))
        self.streams: defaultdict[int, StreamLog] = defaultdict(StreamLog)
        self.closed = False
        self.goaway: int | None = None
        self.goaway_last: int | None = None
        self.goaway_data: bytes | None = None
        self.pings = 0
        # Our own send windows: the server's connection window starts at the
        # RFC 9113 §6.9.2 default, stream windows at its INITIAL_WINDOW_SIZE.
        self.conn_window = 65_535
        self.windows: dict[int, int] = {}
        self._acks = 0
        self.h2.initiate_connection()
        settings_sent = 1
        if initial_window is not None:
            self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
            settings_sent += 1
        self._flush()
        self.pump_until(lambda: self._acks == settings_sent, "SETTINGS ACK")

    def close(self) -> None:
        self.sock.close()

    def open(self, path: str) -> int:
        """Send a POST's HEADERS without END_STREAM; return the stream ID."""
        stream_id = self.h2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":path", path), (":scheme", "http")]
        self.h2.send_headers(stream_id, headers + [(":authority", "localhost")])
        self.windows[stream_id] = self.h2.remote_settings.initial_window_size
        self._flush()
        return stream_id

    def open_malformed(self, path: str, extra: list[tuple[str, str]]) -> int:
        """Like :meth:`open`, with ``extra`` header fields sent as they are, even
        where RFC 9113 §8.2 forbids them (h2's own checks are off for this one)."""
        config = self.h2.config
        config.validate_outbound_headers = config.normalize_outbound_headers = False
        try:
            stream_id = self.h2.get_next_available_stream_id()
            headers = [(":method", "POST"), (":path", path), (":scheme", "http")]
            self.h2.send_headers(stream_id, [*headers, (":authority", "localhost"), *extra])
        finally:
            config.validate_outbound_headers = config.normalize_outbound_headers = True
        self.windows[stream_id] = self.h2.remote_settings.initial_window_size
        self._flush()
        return stream_id

    def send(
        self, stream_id: int, data: bytes, *, end: bool = False, ignore_reset: bool = False
    ) -> bool:
        """Write ``data`` as DATA frames within the flow-control windows.

        ``ignore_reset`` sends on even after the server reset the stream,
        disregarding the stream window, which nobody updates after a reset.
        Returns False if the server closed the connection.
        """
        size = self.h2.max_outbound_frame_size
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for index, chunk in enumerate(chunks):

            def window_open(n: int = len(chunk)) -> bool:
                return self.conn_window >= n and (ignore_reset or self.windows[stream_id] >= n)

            if not self.pump_until(window_open, f"send window for stream {stream_id}"):
                return False
            frame = DataFrame(stream_id, data=chunk)
            if end and index == len(chunks) - 1:
                frame.flags.add("END_STREAM")
            self.conn_window -= len(chunk)
            self.windows[stream_id] -= len(chunk)
            self._write(frame.serialize())
        return not self.closed

    def grant(self, stream_id: int, increment: int) -> None:
        """Open the server's send window on ``stream_id`` by ``increment``."""
        self.h2.increment_flow_control_window(increment, stream_id=stream_id)
        self._flush()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        """Write RST_STREAM by hand (h2 refuses on a stream the server reset)."""
        self._write(RstStreamFrame(stream_id, error_code=code).serialize())

    def ping(self) -> None:
        """Round-trip a PING: proves the connection still works."""
        expected = self.pings + 1
        self.h2.ping(b"liveness")
        self._flush()
        self.pump_until(lambda: self.pings == expected, "PING ACK")

    def pump_until(self, condition: Callable[[], bool], what: str) -> bool:
        """Read and handle frames until ``condition()``; False if the server closed.

        Raises AssertionError after DEADLINE seconds: the server stalled.
        """
        deadline = time.monotonic() + DEADLINE
        while not condition():
            if self.closed:
                return False
            assert time.monotonic() < deadline, f"stalled waiting for {what}"
            self._read()
        return True

    def recv(self) -> bytes | None:
        """What the socket holds: b"" once the server closed, None for nothing yet."""
        try:
            return self.sock.recv(65_536)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def _read(self) -> None:
        data = self.recv()
        if data is None:
            return
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            self._handle(event)
        self._flush()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            log = self.streams[event.stream_id]
            log.status = int(dict(event.headers)[b":status"])
            log.seen.append("response")
        elif isinstance(event, h2.events.DataReceived):
            self.streams[event.stream_id].body += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].seen.append("end")
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].seen.append("reset")
            self.streams[event.stream_id].reset_code = event.error_code
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                self.conn_window += event.delta
            elif event.stream_id in self.windows:
                self.windows[event.stream_id] += event.delta
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
            self.goaway_last = event.last_stream_id
            self.goaway_data = event.additional_data
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings += 1
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self._acks += 1

    def _flush(self) -> None:
        self._write(self.h2.data_to_send())

    def _write(self, data: bytes) -> None:
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True


@contextmanager
def connected(port: int, **options: Any) -> Iterator[Client]:
    client = Client(port, **options)
    try:
        yield client
    finally:
        client.close()


def echo_round(client: Client, stream_id: int, chunk: bytes) -> bool:
    """Send ``chunk`` on the echo stream and wait for it to come back.

    Returns False if the server closed the connection.
    """
    expected = len(client.streams[stream_id].body) + len(chunk)
    return client.send(stream_id, chunk) and client.pump_until(
        lambda: len(client.streams[stream_id].body) >= expected, "echo on stream B"
    )


def flood_while_echoing(client: Client, flooded: int, echoed: int) -> bytes:
    """Send FLOOD bytes on ``flooded``, interleaved with echo rounds on ``echoed``.

    Ends the echo stream and waits for it to end. Returns what was echoed, or
    what was echoed so far if the server closed the connection.
    """
    sent = bytearray()
    for round_number in range(FLOOD // (16 * KIB)):
        if not client.send(flooded, b"a" * 16 * KIB, ignore_reset=True):
            break
        chunk = bytes([round_number]) * 4 * KIB
        if not echo_round(client, echoed, chunk):
            break
        sent += chunk
    else:
        client.send(echoed, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[echoed].seen, "end of stream B")
    return bytes(sent)


def early_rejection(client: Client) -> tuple[int, int, bytes]:
    """Scenario (a): A is rejected with a 400 unread while the client floods it.

    B, an echo stream on the same connection, runs throughout. Returns the
    stream IDs of A and B and what B was sent.
    """
    rejected = client.open("/reject")
    echoed = client.open("/echo")
    client.send(rejected, b"a" * 16 * KIB)
    client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400 on stream A")
    sent = flood_while_echoing(client, rejected, echoed)
    # The client's END_STREAM reaches the server after its reset.
    client.send(rejected, b"last", end=True, ignore_reset=True)
    return rejected, echoed, sent


def assert_connection_alive(server: Server, client: Client) -> None:
    client.ping()
    assert not client.closed
    assert client.goaway is None
    assert server.crashes == []


# --- the tests -----------------------------------------------------------------


def test_early_400_keeps_connection_and_drains_the_request(duplex: None) -> None:
    """A 400 sent before the body is read: the rest of the body is drained without a reset
    (the CRT client hangs on a reset stream), and the other stream and the connection live on."""
    with running_server(App()) as server, connected(server.port) as client:
        rejected, echoed, sent = early_rejection(client)
        assert_connection_alive(server, client)

        assert client.streams[echoed].body == sent
        assert client.streams[echoed].seen == ["response", "end"]
        assert client.streams[rejected].status == 400
        assert bytes(client.streams[rejected].body) == REJECTION
        assert client.streams[rejected].seen == ["response", "end"]
        assert client.streams[rejected].reset_code is None


def test_a_response_ended_after_the_client_went_away_lets_the_server_stop(
    duplex: None,
) -> None:
    """The client reads the response's headers and drops the connection while its
    request is open. The app's final send returns (stock hypercorn leaves it waiting for
    a send task that has stopped), so the connection ends and the server shuts down:
    running_server fails the test if it does not."""
    app = App()
    with running_server(app) as server:
        with connected(server.port) as client:
            stream_id = client.open("/after-disconnect")
            client.pump_until(lambda: client.streams[stream_id].status == 200, "the response")
        assert app.ended_after_disconnect.wait(DEADLINE), "the app's last send never returned"
        assert server.crashes == []


@pytest.mark.parametrize(
    "field",
    [("X-Upper", "1"), ("connection", "keep-alive"), ("x-nul", "a\x00b"), ("te", "gzip")],
    ids=["upper-case-name", "connection-specific", "nul-in-value", "te-not-trailers"],
)
def test_a_malformed_request_resets_its_own_stream_only(
    duplex: None, field: tuple[str, str]
) -> None:
    """RFC 9113 §8.1.1: a malformed request is a stream error (PROTOCOL_ERROR), not a
    connection error: the session already running on the connection carries on, and
    the connection takes new streams."""
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        bad = client.open_malformed("/echo", [field])
        client.pump_until(lambda: client.streams[bad].reset_code is not None, "the reset")
        assert client.streams[bad].reset_code == ErrorCodes.PROTOCOL_ERROR
        assert client.streams[bad].status is None  # the app never saw it
        assert echo_round(client, echoed, b"after")
        assert echo_round(client, client.open("/echo"), b"a new stream")
        assert_connection_alive(server, client)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b":path", b"/echo\xc3\xa9"),
        (b":path", b"/_emulator/sessions/\xe9"),
        (b":method", b"P\xd0\x9eST"),
        (b":authority", b"h\xc3\xb4te"),
    ],
    ids=["path", "admin-path", "method", "authority"],
)
def test_a_request_with_non_ascii_pseudo_headers_resets_its_own_stream_only(
    duplex: None, name: bytes, value: bytes
) -> None:
    """hypercorn decoded them as ASCII in the connection's task: the error closed
    the connection without a GOAWAY, and every session on it with it."""
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        headers = dict(
            [(b":method", b"POST"), (b":path", b"/echo"), (b":scheme", b"http")]
            + [(b":authority", b"localhost")]
        )
        headers[name] = value
        config = client.h2.config
        config.validate_outbound_headers = config.normalize_outbound_headers = False
        try:
            bad = client.h2.get_next_available_stream_id()
            client.h2.send_headers(bad, list(headers.items()))
        finally:
            config.validate_outbound_headers = config.normalize_outbound_headers = True
        client._flush()
        client.pump_until(lambda: client.streams[bad].reset_code is not None, "the reset")
        assert client.streams[bad].reset_code == ErrorCodes.PROTOCOL_ERROR
        assert echo_round(client, echoed, b"after")
        assert_connection_alive(server, client)
        assert server.crashes == []


def _stream_error_frames(client: Client, stream_id: int, case: str) -> None:
    """Send what RFC 9113 makes a stream error on the open ``stream_id``."""
    if case == "body-longer-than-content-length":
        client.send(stream_id, b"x" * 100)
    elif case in ("pseudo-header-in-trailers", "trailers-without-end-stream"):
        client.send(stream_id, b"some body")
        block = client.h2.encoder.encode(
            [(b":path", b"/x")] if case == "pseudo-header-in-trailers" else [(b"x-trailer", b"1")]
        )
        frame = HeadersFrame(stream_id, data=block)
        frame.flags.add("END_HEADERS")
        if case == "pseudo-header-in-trailers":
            frame.flags.add("END_STREAM")
        client._write(frame.serialize())
    elif case == "window-update-of-0":
        client._write(WindowUpdateFrame(stream_id, window_increment=0).serialize())
    elif case == "depends-on-itself":
        client._write(PriorityFrame(stream_id, depends_on=stream_id, stream_weight=16).serialize())


@pytest.mark.parametrize(
    "case",
    [
        "body-longer-than-content-length",
        "pseudo-header-in-trailers",
        "trailers-without-end-stream",
        "window-update-of-0",
        "depends-on-itself",
    ],
)
def test_a_stream_error_resets_that_stream_alone(duplex: None, case: str) -> None:
    """RFC 9113 §8.1.1, §6.9 and §5.3.1 make each a stream error; h2 ended the
    whole connection for it, and with it every session the SDK put there."""
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        extra = [("content-length", "10")] if case.endswith("content-length") else []
        bad = client.open_malformed("/echo", extra)
        _stream_error_frames(client, bad, case)
        client.pump_until(lambda: client.streams[bad].reset_code is not None, "the reset")
        assert client.streams[bad].reset_code == ErrorCodes.PROTOCOL_ERROR
        assert echo_round(client, echoed, b"after")
        assert echo_round(client, client.open("/echo"), b"a new stream")
        assert_connection_alive(server, client)


@pytest.mark.parametrize(
    "case", ["body-shorter-than-content-length", "body-longer-than-content-length"]
)
def test_a_stream_error_after_the_response_ended_resets_that_stream_alone(
    duplex: None, case: str
) -> None:
    """A 400 sent before the body (a Content-Length over the limit) leaves the stream
    half closed on the server's side; curl then ends its upload short. h2 raised
    its content-length error, which was reset only on an open stream: the whole
    connection went (GOAWAY PROTOCOL_ERROR), and every stream on it."""
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        rejected = client.open_malformed("/reject", [("content-length", "100000")])
        client.send(rejected, b"a" * 1000)
        client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
        assert client.streams[rejected].status == 400
        if case == "body-shorter-than-content-length":
            client.send(rejected, b"", end=True)
        else:
            client.send(rejected, b"a" * 100_000)
        client.pump_until(lambda: client.streams[rejected].reset_code is not None, "the reset")
        assert client.streams[rejected].reset_code == ErrorCodes.PROTOCOL_ERROR
        assert echo_round(client, echoed, b"after")
        assert echo_round(client, client.open("/echo"), b"a new stream")
        assert_connection_alive(server, client)


def test_a_cleartext_connection_that_sends_only_the_preface_is_closed_when_idle(
    duplex: None,
) -> None:
    """It starts as HTTP/1.1, whose first bytes stopped the keep-alive timer, and
    nothing restarted it: one client held 20,000 such connections, the server's
    every file descriptor."""
    with running_server(App(), keep_alive_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            h2 = H2Connection(H2Configuration(client_side=True))
            h2.initiate_connection()
            sock.sendall(h2.data_to_send())
            started = time.monotonic()
            while data := sock.recv(65_536):  # SETTINGS, its ACK... then the close
                h2.receive_data(data)
                sock.sendall(h2.data_to_send())
            assert time.monotonic() - started < 3
        with connected(server.port) as client:  # the server serves on
            assert echo_round(client, client.open("/echo"), b"still served")
        assert server.crashes == []


@pytest.mark.parametrize(
    ("racing", "acking"),
    [(False, False), (True, False), (False, True)],
    ids=["quiet", "a-stream-racing-the-timer", "acknowledging-the-ping"],
)
def test_the_keep_alive_timer_retires_an_idle_connection_with_a_goaway_first(
    duplex: None, racing: bool, acking: bool
) -> None:
    """The timer closed an idle connection with no GOAWAY: a stream the client opened
    as it fired was dropped, or never reached the app, and the CRT client waited for
    ever for its response. Now a GOAWAY names the last stream taken, a stream opened
    after it is refused, and the connection closes once the client acknowledges the
    PING sent behind the GOAWAY, and a grace for streams it had queued (half a
    second at most: the CRT client opened streams on the retired connection until
    it closed, and each failed)."""
    from emulator.hypercorn_h2 import _RETIRE_PING, IDLE_LINGER, RETIRE_GRACE

    with running_server(App(), keep_alive_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            conn = H2Connection(H2Configuration(client_side=True))
            conn.initiate_connection()
            request = [(":method", "POST"), (":path", "/echo"), (":scheme", "http")]
            conn.send_headers(1, [*request, (":authority", "localhost")])
            conn.send_data(1, b"hello", end_stream=True)
            sock.sendall(conn.data_to_send())
            seen: list[tuple[str, Any]] = []
            goaway_at = closed_at = None
            while data := sock.recv(65_536):
                if goaway_at is not None:  # h2's side is closed: read the rest raw
                    seen += [("reset", frame) for frame in _rst_frames(data)]
                    continue
                events = conn.receive_data(data)
                if not acking and any(isinstance(e, h2.events.PingReceived) for e in events):
                    conn.clear_outbound_data_buffer()  # h2 acks a PING by itself: not here
                for event in events:
                    if isinstance(event, h2.events.ConnectionTerminated):
                        goaway_at = time.monotonic()
                        seen.append(("goaway", (event.error_code, event.last_stream_id)))
                        if racing:
                            # A stream the client opens now, before it has read the
                            # GOAWAY, raced the timer: refused, not dropped unanswered.
                            sock.sendall(_raw_headers_frame(3, request))
                    elif isinstance(event, h2.events.PingReceived):
                        assert event.ping_data == _RETIRE_PING
                        if acking:  # by hand: h2 drops what it queued on the GOAWAY
                            ack = PingFrame(0, opaque_data=event.ping_data)
                            ack.flags.add("ACK")
                            sock.sendall(ack.serialize())
                    elif isinstance(event, h2.events.StreamEnded):
                        seen.append(("ended", event.stream_id))
                if goaway_at is None:
                    sock.sendall(conn.data_to_send())
            closed_at = time.monotonic()
        assert seen[:2] == [("ended", 1), ("goaway", (ErrorCodes.NO_ERROR, 1))]
        assert goaway_at is not None and closed_at - goaway_at < 3
        if racing:  # refused, then the connection closes: it has nothing left
            assert seen[2:] == [("reset", (3, ErrorCodes.REFUSED_STREAM))]
        elif acking:  # closed once the client has read the GOAWAY, and the grace
            assert seen[2:] == [] and RETIRE_GRACE - 0.01 < closed_at - goaway_at < IDLE_LINGER
        else:  # open a while after its GOAWAY, so that the client reads it first
            assert seen[2:] == [] and closed_at - goaway_at > IDLE_LINGER - 0.2
        with connected(server.port) as client:  # the server serves on
            assert echo_round(client, client.open("/echo"), b"still served")
        assert server.crashes == []


def _raw_headers_frame(stream_id: int, request: list[tuple[str, str]]) -> bytes:
    """A HEADERS frame written without h2's state machine (which, having read a
    GOAWAY, would refuse to open a stream the client had in fact sent already)."""
    from hpack import Encoder
    from hyperframe.frame import HeadersFrame

    frame = HeadersFrame(stream_id)
    frame.data = Encoder().encode([*request, (":authority", "localhost")])
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    return frame.serialize()


def _rst_frames(data: bytes) -> list[tuple[int, int]]:
    """The RST_STREAM frames in ``data`` (stream id, error code), read raw: h2 drops
    those for a stream it never opened."""
    from hyperframe.frame import Frame, RstStreamFrame

    found = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        if isinstance(frame, RstStreamFrame):
            found.append((frame.stream_id, frame.error_code))
        view = view[9 + length :]
    return found


@pytest.mark.parametrize(("allowed", "used"), [(2**32 - 1, 4096), (100_000, 4096), (256, 256)])
def test_the_response_header_table_stays_within_its_cap_whatever_the_client_allows(
    duplex: None, allowed: int, used: int
) -> None:
    """A client allowing a 4 GiB table had every response's unique ids kept for
    the connection's life; the server now uses at most 4 KiB, or less if asked."""
    from emulator import hpack_codec

    protocol = DuplexH2Protocol(*_constructor_args(tls=False))
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({SettingCodes.HEADER_TABLE_SIZE: allowed})
    protocol.connection.receive_data(client.data_to_send())
    encoder = protocol.connection.encoder
    assert encoder.header_table_size == used
    for n in range(500):
        encoder.encode([(b":status", b"200"), (b"x-amzn-request-id", f"req-{n:06d}".encode())])
    held = sum(32 + len(name) + len(value) for name, value in encoder.header_table.dynamic_entries)
    assert 0 < held <= used
    assert isinstance(encoder, hpack_codec.CappedEncoder)


def test_a_malformed_requests_log_line_does_not_quote_its_values(duplex: None, caplog) -> None:
    """h2's messages quote the offending bytes; a header such as authorization must not
    reach the log through them."""
    secret = "AWS4-HMAC-SHA256 Credential=AKIDLOGTEST/20261205, Signature=feedface "
    with caplog.at_level("INFO", logger="medscribe.h2"):
        with running_server(App()) as server, connected(server.port) as client:
            bad = client.open_malformed("/echo", [("authorization", secret)])
            client.pump_until(lambda: client.streams[bad].reset_code is not None, "the reset")
            assert_connection_alive(server, client)
    assert "malformed request reset" in caplog.text
    assert "AKIDLOGTEST" not in caplog.text and "feedface" not in caplog.text


def test_a_response_status_sent_as_a_request_still_ends_the_connection(duplex: None) -> None:
    """A stream that h2 cannot reset (an informational :status from a client has closed
    it already) keeps h2's connection error, without a crash on the way."""
    with running_server(App()) as server, connected(server.port) as client:
        # h2 will not send this as a client: the first header block, encoded by hand.
        frame = HeadersFrame(1)
        frame.data = hpack.Encoder().encode([(":status", "103")])
        frame.flags.add("END_HEADERS")
        client._write(frame.serialize())
        client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert client.goaway == ErrorCodes.PROTOCOL_ERROR
        assert server.crashes == []


def test_an_app_that_stops_reading_holds_up_only_its_own_stream(duplex: None) -> None:
    """hypercorn waits for room in a stream's app queue (ten messages) and reads nothing
    else meanwhile: an app busy elsewhere stalled every stream on the connection. Its
    DATA is now held, unacknowledged, and handed over in order when it reads again."""
    app = App()
    with running_server(app) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        paused = client.open("/pause")
        pieces = [bytes([65 + i]) * 100 for i in range(25)]  # more than the queue holds
        for piece in pieces:
            client.send(paused, piece)
        client.send(paused, b"", end=True)
        # The paused app reads nothing until resumed: the other stream must not wait.
        assert echo_round(client, echoed, b"while paused")
        assert echo_round(client, client.open("/echo"), b"a new stream, too")
        app.resume.set()
        client.pump_until(lambda: "end" in client.streams[paused].seen, "the paused answer")
        assert bytes(client.streams[paused].body) == b"".join(pieces)
        assert_connection_alive(server, client)


@pytest.mark.parametrize("route", ["/merge", "/pause"])
def test_data_queued_for_a_busy_app_is_merged_only_where_it_asked(
    duplex: None, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """InlineBody.merge: DATA that finds a request body waiting in the app's queue
    joins that message as a further body, up to MERGE_LIMIT bytes a message, so
    an app busy elsewhere reads it in fewer messages, in order; merged DATA is
    acknowledged, as queued DATA is. An app that did not ask gets a message per
    frame, as ever, and its client waits for window once ten are queued."""
    monkeypatch.setattr(DuplexH2Protocol, "connection_window", WIDE_CONNECTION_WINDOW)
    app = App()
    with running_server(app) as server, connected(server.port) as client:
        stream = client.open(route)
        assert client.send(stream, b"first")
        assert app.paused.wait(DEADLINE)
        pieces = [bytes([65 + i % 26]) * 1000 for i in range(60)]
        if route == "/merge":  # far past the stream's 64 KiB window until the app reads
            pieces += [bytes([97 + i]) * 15_000 for i in range(12)]
        for piece in pieces:
            assert client.send(stream, piece)
        app.resume.set()
        client.send(stream, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[stream].seen, "the answer")
        assert bytes(client.streams[stream].body) == b"first" + b"".join(pieces)
        # And the empty DATA frame that ends the stream, then the end's own message.
        assert sum(count for count, _ in app.shapes) == len(pieces) + 2
        if route == "/pause":
            assert {count for count, _ in app.shapes} == {1}
        else:
            assert len(app.shapes) < len(pieces) / 5
            assert max(size for _, size in app.shapes) <= MERGE_LIMIT
            # A message holding nearly its limit's worth took no more: the next
            # frame started a message of its own.
            assert max(size for _, size in app.shapes) > MERGE_LIMIT - 15_000
        assert_connection_alive(server, client)


def test_merging_stops_at_its_limits() -> None:
    """What a stream whose app stopped reading can hold through merging, which
    acknowledges DATA at once: MERGE_LIMIT bytes of further bodies a message,
    and only after a request body with more to come."""

    def body(more_body: bool = True) -> dict[str, Any]:
        return {"type": "http.request", "body": b"b", "more_body": more_body}

    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=10)
    queue.put_nowait(body())
    piece = b"p" * (MERGE_LIMIT // 4)
    assert all(merge_into_last(queue, piece) for _ in range(4))
    assert not merge_into_last(queue, b"x")  # the message holds its limit
    queue.put_nowait(body())
    assert merge_into_last(queue, piece)  # the next message takes more
    merged = [sum(map(len, m.get(MORE_BODIES, []))) for m in queue._queue]
    assert merged == [MERGE_LIMIT, len(piece)]
    assert not merge_into_last(_one(body(more_body=False)), piece)  # the request's end
    assert not merge_into_last(_one({"type": "http.disconnect"}), piece)
    assert not merge_into_last(_one(body()), b"p" * (MERGE_LIMIT + 1))


def _one(message: dict[str, Any]) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    queue.put_nowait(message)
    return queue


def test_a_stream_may_send_its_whole_window_ahead_of_a_busy_app(
    duplex: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream whose app reads gets a receive window of
    DuplexH2Protocol.stream_window (1 MiB), not h2's 64 KiB, with its next
    WINDOW_UPDATE (the AWS SDK's CRT client ignored a larger
    SETTINGS_INITIAL_WINDOW_SIZE): a client sending faster than real time goes on
    for a mebibyte past what its app has taken, where before it stopped after
    64 KiB and waited for a WINDOW_UPDATE every 32 KiB. The DATA waits,
    unacknowledged, and reaches the app in order; other streams flow."""
    monkeypatch.setattr(DuplexH2Protocol, "connection_window", WIDE_CONNECTION_WINDOW)
    window = DuplexH2Protocol.stream_window
    app = App()
    with running_server(app) as server, connected(server.port) as client:
        assert client.h2.remote_settings.initial_window_size == 65_535
        paused = client.open("/pause")
        assert client.send(paused, b"first")
        assert app.paused.wait(DEADLINE)
        # /pause read one message and now reads nothing: its queue holds ten
        # more and the rest waits. With a 64 KiB window this stalled near 240 KiB.
        body = bytes(range(256)) * (window // 256)
        assert client.send(paused, body)
        body = b"first" + body
        assert echo_round(client, client.open("/echo"), b"meanwhile")
        app.resume.set()
        client.send(paused, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[paused].seen, "the paused answer")
        assert bytes(client.streams[paused].body) == body
        assert_connection_alive(server, client)


def test_streams_stopped_before_reading_cannot_take_the_connection_window(
    duplex: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream whose app has read nothing (a session in a chaos delay) keeps h2's
    64 KiB window: sixteen of them, each sent 40 s of real-time audio, leave the
    connection's window to the others. Widened to 1 MiB, they took all of it."""
    monkeypatch.setattr(DuplexH2Protocol, "connection_window", WIDE_CONNECTION_WINDOW)
    app = App()
    with running_server(app) as server, connected(server.port) as client:
        stalled = [client.open("/stall") for _ in range(16)]
        chunk = b"a" * 4_500  # about one 100 ms audio event
        sent = {stream: 0 for stream in stalled}
        client.sock.settimeout(0.005)  # read what came between rounds, without waiting
        for _ in range(400):
            for stream in stalled:
                if min(client.windows[stream], client.conn_window) >= len(chunk):
                    client.send(stream, chunk)
                    sent[stream] += len(chunk)
            client._read()
        client.sock.settimeout(0.2)
        assert max(sent.values()) < 256 * KIB  # each stopped by its own window
        assert echo_round(client, client.open("/echo"), b"x" * 16_384)
        app.resume.set()
        for stream in stalled:
            client.send(stream, b"", end=True)
        client.pump_until(
            lambda: all("end" in client.streams[s].seen for s in stalled), "the stalled answers"
        )
        assert all(len(client.streams[s].body) == sent[s] for s in stalled)
        assert_connection_alive(server, client)


def test_a_stream_window_widens_with_the_first_update_h2_sends() -> None:
    """No WINDOW_UPDATE of its own as a stream opens: the first one h2 sends (half
    the initial window taken) also opens the window to its full size, and from then
    on h2 manages it alone, updating at half the wider window."""
    wide = DuplexH2Protocol.stream_window
    manager = WindowManager(65_535)
    manager.__class__ = WideningWindow
    manager.widen_to = wide  # type: ignore[attr-defined]
    manager.window_consumed(40_000)
    assert not manager.process_bytes(20_000)  # under half of 64 KiB taken: nothing yet
    assert manager.process_bytes(20_000) == 40_000 + wide - 65_535
    assert type(manager) is WindowManager
    assert manager.max_window_size == manager.current_window_size == wide
    manager.window_consumed(600_000)
    assert not manager.process_bytes(300_000)
    assert manager.process_bytes(wide // 2 - 300_000) == wide // 2
    # Widened while bytes received are not yet taken: they come back later, and
    # the window reaches its full size.
    manager = WindowManager(65_535)
    manager.__class__ = WideningWindow
    manager.widen_to = wide  # type: ignore[attr-defined]
    manager.window_consumed(60_000)
    assert manager.process_bytes(33_000) == 33_000 + wide - 65_535
    assert manager.max_window_size == wide
    assert manager.current_window_size == wide - 27_000


def test_data_held_while_the_feeder_flushes_is_handed_over_not_dropped(duplex: None) -> None:
    """The task handing held DATA to an app flushes when nothing is left, and that
    flush waits while the client reads slowly. DATA and the end of the request that
    arrived meanwhile were then forgotten (their window handed back, the app never
    given them), and the app waited for an end that never came."""
    app = App()
    with (
        running_server(app) as server,
        connected(server.port, initial_window=2**30) as client,
    ):
        client.h2.increment_flow_control_window(2**30)  # the server may send us plenty
        client._flush()
        paused = client.open("/pause")
        sent = bytearray()
        for piece in [b"p" * 100] * 11 + [bytes([65 + i]) * 4096 for i in range(10)]:
            client.send(paused, piece)  # the queue takes ten; the rest is held
            sent += piece
        time.sleep(0.3)
        output = client.open("/big")  # fills the server's socket buffer: we read nothing
        time.sleep(1.0)
        app.resume.set()  # the held DATA is handed over; the last flush then waits
        time.sleep(0.5)
        client.send(paused, b"z" * 1000, end=True)
        sent += b"z" * 1000
        client.pump_until(lambda: "end" in client.streams[output].seen, "the big answer")
        client.pump_until(lambda: "end" in client.streams[paused].seen, "the paused answer")
        assert bytes(client.streams[paused].body) == bytes(sent)
        assert_connection_alive(server, client)


def test_the_window_held_data_took_goes_back_before_the_feeder_waits(duplex: None) -> None:
    """The task handing held DATA to a full queue flushes (hands the connection's
    window back) before it waits for room, the end of the request included: else a
    client short of connection window waited until the app read again."""
    app = App()
    with (
        running_server(app, max_app_queue_size=2) as server,
        connected(server.port) as client,
    ):
        sink, gated, echoed = client.open("/sink"), client.open("/gate"), client.open("/echo")
        client.pump_until(
            lambda: all(client.streams[s].status for s in (sink, gated, echoed)), "the answers"
        )
        client.send(sink, b"x")
        client.send(sink, b"x")  # /sink's queue is full: the next is held
        client.send(sink, b"s" * 30_000)
        for _ in range(3):
            client.send(gated, b"y")  # /gate reads one; two wait in its queue
        client.pump_until(lambda: app.gate_read == 1, "the first read")
        client.send(gated, b"g" * 16_384)  # held
        client.send(sink, b"s" * (client.conn_window - 16_384))
        client.send(gated, b"g" * 16_384, end=True)  # held, with the end
        assert client.conn_window == 0
        time.sleep(0.3)
        app.gate_open.set()  # /gate reads two: the held DATA goes in, the end waits
        try:
            client.pump_until(lambda: client.conn_window > 0, "the connection's WINDOW_UPDATE")
        finally:
            app.gate_done.set()
        client.pump_until(lambda: "end" in client.streams[gated].seen, "the gated answer")
        assert bytes(client.streams[gated].body) == b"ok"
        assert_connection_alive(server, client)


def test_a_client_that_grants_no_window_leaves_the_app_waiting_not_buffering(
    duplex: None,
) -> None:
    """hypercorn's send task pops nothing from a stream whose client window is spent,
    and that empty pop let the app's send go on: the server held everything the app
    sent. The app now waits in send() near the 32 KiB high-water mark, the other
    streams flow meanwhile, and once the client reads, all of it arrives in order."""
    app = App()
    with running_server(app) as server, connected(server.port, initial_window=0) as client:
        flooded = client.open("/flood-out")
        client.pump_until(lambda: client.streams[flooded].status == 200, "the 200")
        echoed = client.open("/echo")
        client.grant(echoed, 64 * KIB)
        for round_number in range(20):  # the server's loop turns many times meanwhile
            assert echo_round(client, echoed, bytes([round_number]) * 100)
        assert 0 < app.pushed <= 64 * KIB
        assert client.streams[flooded].body == b""
        client.grant(flooded, FLOOD_OUT)
        client.pump_until(lambda: "end" in client.streams[flooded].seen, "the whole flood")
        expected = b"".join(bytes([i % 256]) * 4 * KIB for i in range(FLOOD_OUT // (4 * KIB)))
        assert client.streams[flooded].body == expected
        assert_connection_alive(server, client)


def test_an_app_waiting_on_a_client_that_reads_nothing_is_freed_by_a_reset(
    duplex: None,
) -> None:
    """The app waiting in send() for window that never comes: the client's RST_STREAM
    ends the wait (its sends return, unsent), so no app task outlives its stream."""
    app = App()
    with running_server(app) as server, connected(server.port, initial_window=0) as client:
        flooded = client.open("/flood-out")
        client.pump_until(lambda: client.streams[flooded].status == 200, "the 200")
        client.ping()
        assert not app.flood_over.is_set()
        client.reset(flooded, ErrorCodes.CANCEL)
        assert app.flood_over.wait(DEADLINE), "the app still waits on a reset stream"
        assert client.streams[flooded].body == b""
        assert_connection_alive(server, client)


def test_a_clients_graceful_goaway_lets_its_open_streams_finish(duplex: None) -> None:
    """A client's GOAWAY with NO_ERROR (RFC 9113 §6.8) says it takes no new streams
    from the server: its open streams go on to their end, where h2 closed the
    connection at once and cut every session on it off. (Keep-alive is longer than
    the test's deadline: the close must not wait for it.)"""
    with running_server(App(), keep_alive_timeout=60) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        client._write(GoAwayFrame(0, error_code=ErrorCodes.NO_ERROR, last_stream_id=0).serialize())
        assert echo_round(client, echoed, b"after the GOAWAY")
        client.send(echoed, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[echoed].seen, "the end of the stream")
        assert bytes(client.streams[echoed].body) == b"beforeafter the GOAWAY"
        # Its last stream done, the connection closes at once, not after keep-alive.
        assert not client.pump_until(lambda: False, "the connection to close")
        assert server.crashes == []


def test_a_graceful_goaway_on_an_idle_connection_closes_it(duplex: None) -> None:
    with running_server(App(), keep_alive_timeout=60) as server, connected(server.port) as client:
        assert echo_round(client, client.open("/echo"), b"one")
        client.send(1, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[1].seen, "the end of the stream")
        client._write(GoAwayFrame(0, error_code=ErrorCodes.NO_ERROR, last_stream_id=0).serialize())
        assert not client.pump_until(lambda: False, "the connection to close")
        assert server.crashes == []


def test_a_goaway_flood_is_counted_as_control_frames(duplex: None) -> None:
    frame = GoAwayFrame(0, error_code=ErrorCodes.NO_ERROR, last_stream_id=0).serialize()
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")  # an open stream keeps the connection up
        client._write(frame * 20_000)
        client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert client.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        assert not client.pump_until(lambda: False, "the connection to close")
        assert echoed == 1 and server.crashes == []


def test_a_graceful_goaway_waits_for_a_request_still_being_sent(duplex: None) -> None:
    """The response is done (a 400) but the client still sends the request, which the
    server drains: after the client's GOAWAY the connection stays up until that
    request ends too, then closes."""
    with running_server(App(), keep_alive_timeout=60) as server, connected(server.port) as client:
        rejected = client.open("/reject")
        client.send(rejected, b"a" * 1000)
        client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
        client._write(GoAwayFrame(0, error_code=ErrorCodes.NO_ERROR, last_stream_id=0).serialize())
        for _ in range(8):  # 128 KiB, twice the connection window: it must be handed back
            assert client.send(rejected, b"b" * 16 * KIB, ignore_reset=True)
        client.ping()
        assert not client.closed
        client.send(rejected, b"", end=True, ignore_reset=True)
        assert not client.pump_until(lambda: False, "the connection to close")
        assert server.crashes == []


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside-a-stream-that-ended"])
def test_a_request_still_sent_after_its_response_keeps_the_connection_from_idling(
    duplex: None, monkeypatch: pytest.MonkeyPatch, beside: bool
) -> None:
    """hypercorn counts only the streams its app holds: once the one response was done
    it called the connection idle, and its keep-alive timer closed it under a client
    still sending (the SDK's sender then hung for ever in send/close). The connection
    now idles only once that request ends, and then closes at the keep-alive timeout."""
    from emulator import hypercorn_tcp

    monkeypatch.setattr(hypercorn.asyncio.run, "TCPServer", hypercorn.asyncio.run.TCPServer)
    hypercorn_tcp.install()
    with (
        running_server(App(), keep_alive_timeout=0.3) as server,
        connected(server.port) as client,
    ):
        if beside:  # a stream that came and went first: it must not start the timer either
            echoed = client.open("/echo")
            assert echo_round(client, echoed, b"hello")
            client.send(echoed, b"", end=True)
            client.pump_until(lambda: "end" in client.streams[echoed].seen, "the echo's end")
        rejected = client.open("/reject")
        client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
        for _ in range(10):  # a second of sending, three keep-alive timeouts
            assert client.send(rejected, b"a" * 1000, ignore_reset=True)
            time.sleep(0.1)
            client.ping()
        assert not client.closed
        client.send(rejected, b"", end=True)
        assert client.streams[rejected].reset_code is None
        started = time.monotonic()
        assert not client.pump_until(lambda: False, "the connection to close")
        assert time.monotonic() - started < 0.3 + 1.0  # closed by the keep-alive timer
        assert server.crashes == []


def test_a_client_silent_on_a_finished_stream_lets_its_connection_idle_and_close(
    duplex: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that opened a stream (its response done) and went silent held its
    connection, a file descriptor, for ever once such streams kept connections from
    idling. Quiet for drain_quiet (the emulator's --idle-timeout), it idles; a client
    that speaks again after that keeps its connection."""
    from emulator import hypercorn_tcp

    monkeypatch.setattr(hypercorn.asyncio.run, "TCPServer", hypercorn.asyncio.run.TCPServer)
    hypercorn_tcp.install()
    options = {"keep_alive_timeout": 0.4, "drain_quiet": 0.4}
    with running_server(App(), **options) as server:
        with connected(server.port) as client:
            rejected = client.open("/reject")
            client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
            started = time.monotonic()
            assert not client.pump_until(lambda: False, "the connection to close")
            assert time.monotonic() - started < 0.4 + 0.4 + 1.0
        with connected(server.port) as client:
            rejected = client.open("/reject")
            client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
            time.sleep(0.6)  # quiet past drain_quiet: its keep-alive timer runs
            assert client.send(rejected, b"again", ignore_reset=True)
            time.sleep(0.6)  # past the keep-alive timeout: stopped by the DATA
            client.ping()
            assert not client.closed
            client.send(rejected, b"", end=True)
            assert not client.pump_until(lambda: False, "the connection to close")
        with connected(server.port) as client:  # quiet, one late frame, quiet again
            rejected = client.open("/reject")
            client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
            time.sleep(0.6)
            assert client.send(rejected, b"late", ignore_reset=True)
            started = time.monotonic()
            assert not client.pump_until(lambda: False, "the connection to close")
            assert time.monotonic() - started < 0.4 + 0.4 + 1.0  # not held for ever
        assert server.crashes == []


def test_a_clients_goaway_with_an_error_still_ends_the_connection(duplex: None) -> None:
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        frame = GoAwayFrame(0, error_code=ErrorCodes.INTERNAL_ERROR, last_stream_id=0)
        client._write(frame.serialize())
        assert not client.pump_until(lambda: False, "the connection to close")
        assert server.crashes == []


def test_a_server_goaway_closes_the_connection_once_its_last_stream_ends(duplex: None) -> None:
    """The server's graceful GOAWAY (a chaos rule's, through ConnectionControl): the
    stream under way finishes, a stream the client opens after it is refused, and the
    connection closes as soon as that stream ends. It was left open until the
    keep-alive timeout (longer than the test's deadline here), and the AWS SDK kept
    picking it for new requests, each failing with AWS_ERROR_HTTP_GOAWAY_RECEIVED."""
    with running_server(App(), keep_alive_timeout=60) as server, connected(server.port) as client:
        retiring = client.open("/goaway")
        client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert client.goaway == ErrorCodes.NO_ERROR and client.goaway_last == retiring
        late = client.open("/echo")  # as a client that has not read the GOAWAY yet
        client.pump_until(lambda: client.streams[late].reset_code is not None, "the refusal")
        assert client.streams[late].reset_code == ErrorCodes.REFUSED_STREAM
        assert client.streams[late].status is None  # never processed: safe to retry
        assert echo_round(client, retiring, b"after the GOAWAY")
        client.send(retiring, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[retiring].seen, "the end of the stream")
        assert bytes(client.streams[retiring].body) == b"after the GOAWAY"
        assert not client.pump_until(lambda: False, "the connection to close")
        assert server.crashes == []


def test_a_server_goaway_keeps_the_connection_for_every_stream_under_way(duplex: None) -> None:
    """After the server's graceful GOAWAY the connection stays up while any stream at
    or below its last stream id is open: another session that carries on after the
    GOAWAY's own stream has ended, and a request whose response is done (a 400) but
    whose client still sends it, drained as ever. It closes once the last has ended."""
    with running_server(App(), keep_alive_timeout=60) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"before")
        rejected = client.open("/reject")
        client.send(rejected, b"a" * 1000)
        client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
        retiring = client.open("/goaway")
        client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert client.goaway == ErrorCodes.NO_ERROR and client.goaway_last == retiring
        client.send(retiring, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[retiring].seen, "the GOAWAY's stream end")
        client.ping()
        assert not client.closed
        assert echo_round(client, echoed, b" after the GOAWAY")
        client.send(echoed, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[echoed].seen, "the echo's end")
        assert bytes(client.streams[echoed].body) == b"before after the GOAWAY"
        for _ in range(8):  # 128 KiB, twice the connection window: it must be handed back
            assert client.send(rejected, b"b" * 16 * KIB, ignore_reset=True)
        client.ping()
        assert not client.closed
        client.send(rejected, b"", end=True, ignore_reset=True)
        assert client.streams[rejected].reset_code is None
        assert not client.pump_until(lambda: False, "the connection to close")
        assert server.crashes == []


@pytest.mark.parametrize("frames", [("ping",), ("settings",), ("ping", "priority")])
def test_a_control_frame_flood_closes_that_connection_alone(
    duplex: None, frames: tuple[str, ...]
) -> None:
    """Each PING, SETTINGS or PRIORITY costs the server's loop a few microseconds:
    200,000 held every connection up for a second. Past the budget (10,000 at once)
    the flooding connection gets GOAWAY ENHANCE_YOUR_CALM; the others carry on."""
    made = {
        "ping": lambda n: PingFrame(0, opaque_data=n.to_bytes(8)).serialize(),
        "settings": lambda n: SettingsFrame(0, settings={SettingCodes.ENABLE_PUSH: 0}).serialize(),
        "priority": lambda n: PriorityFrame(2 * n + 1, depends_on=0, stream_weight=16).serialize(),
    }
    flood = b"".join(made[frames[n % len(frames)]](n) for n in range(20_000))
    with running_server(App()) as server, connected(server.port) as other:
        echoed = other.open("/echo")
        assert echo_round(other, echoed, b"before")
        with connected(server.port) as flooder:
            flooder._write(flood)
            flooder.pump_until(lambda: flooder.goaway is not None, "the GOAWAY")
            assert flooder.goaway == ErrorCodes.ENHANCE_YOUR_CALM
            assert not flooder.pump_until(lambda: False, "the connection to close")
        assert echo_round(other, echoed, b"after")
        assert_connection_alive(server, other)


@pytest.mark.parametrize(
    "kind", ["empty-data", "window-update-connection", "window-update-stream", "rst-gone"]
)
def test_frames_raising_no_counted_event_are_charged_to_the_budget_too(
    duplex: None, kind: str
) -> None:
    """Empty DATA frames that do not end their stream (CVE-2019-9518), WINDOW_UPDATEs
    of 1 (the window above any the server's output used) and RST_STREAMs on a
    stream gone raised no event the budget counted: a client sending them as fast
    as it could held every other connection up for as long as it went on. Now the
    flooding connection gets ENHANCE_YOUR_CALM, the others carry on."""
    with running_server(App()) as server, connected(server.port) as other:
        echoed = other.open("/echo")
        assert echo_round(other, echoed, b"before")
        with connected(server.port) as flooder:
            held = flooder.open("/echo")  # an open stream keeps the connection up
            assert echo_round(flooder, held, b"x")
            gone = flooder.open("/echo")
            flooder.send(gone, b"", end=True)
            flooder.pump_until(lambda: "end" in flooder.streams[gone].seen, "the stream's end")
            made = {
                "empty-data": lambda: DataFrame(held, data=b"").serialize(),
                "window-update-connection": lambda: WindowUpdateFrame(
                    0, window_increment=1
                ).serialize(),
                "window-update-stream": lambda: WindowUpdateFrame(
                    held, window_increment=1
                ).serialize(),
                "rst-gone": lambda: RstStreamFrame(gone, error_code=0).serialize(),
            }
            flooder._write(made[kind]() * 20_000)
            flooder.pump_until(lambda: flooder.goaway is not None, "the GOAWAY")
            assert flooder.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        assert echo_round(other, echoed, b"after")
        assert_connection_alive(server, other)


def test_a_rst_stream_on_a_stream_never_opened_is_a_connection_error(duplex: None) -> None:
    """RFC 9113 §6.4: h2 ignored it, so a client could send any number."""
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        assert echo_round(client, echoed, b"x")
        client._write(RstStreamFrame(echoed + 100, error_code=0).serialize())
        client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert client.goaway == ErrorCodes.PROTOCOL_ERROR
        assert server.crashes == []


def test_returning_the_window_the_output_used_is_not_charged(
    duplex: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client returns what the server sent, many times a second under load. With
    a budget of 50 and next to no refill, 4 MiB echoed (a few hundred
    WINDOW_UPDATEs, each giving back what the output used) are served."""
    monkeypatch.setattr(DuplexH2Protocol, "control_burst", 50)
    monkeypatch.setattr(DuplexH2Protocol, "control_rate", 0.01)
    with running_server(App()) as server, connected(server.port) as client:
        echoed = client.open("/echo")
        for _ in range(1024):
            assert echo_round(client, echoed, b"y" * 4 * KIB)
        assert_connection_alive(server, client)


def test_streams_refused_past_the_limit_count_against_the_budget(duplex: None) -> None:
    """Each refused stream costs the server a walk of the connection's streams: a
    client that keeps opening them past MAX_CONCURRENT_STREAMS meets the same budget
    as a PING flood. One over the limit is only refused."""
    with (
        running_server(App(), h2_max_concurrent_streams=1) as server,
        connected(server.port) as client,
    ):
        held = client.open("/echo")
        settings = client.h2.remote_settings  # lift the client's own check
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 2**31 - 1
        settings.acknowledge()
        refused = client.open("/echo")
        client.pump_until(lambda: "reset" in client.streams[refused].seen, "the refusal")
        assert client.streams[refused].reset_code == ErrorCodes.REFUSED_STREAM
        assert client.goaway is None
        # 12,000 more, written at once and by hand (h2 counts a client's streams
        # in O(n) each), with the client's own HPACK encoder so the server's
        # decoder stays in step; the encoder's table holds all these fields once
        # the first block is encoded, so every later block is the same bytes.
        request = [(":method", "POST"), (":path", "/echo"), (":scheme", "http")]
        request.append((":authority", "localhost"))
        blocks = [client.h2.encoder.encode(request) for _ in range(2)]
        flood = bytearray()
        for n in range(12_000):
            frame = HeadersFrame(refused + 2 * (n + 1), data=blocks[min(n, 1)])
            frame.flags.add("END_HEADERS")
            flood += frame.serialize()
        client._write(bytes(flood))
        client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert client.goaway == ErrorCodes.ENHANCE_YOUR_CALM
        assert held == 1 and server.crashes == []


@pytest.mark.parametrize("how", ["rst-stream", "data-after-end-stream"])
def test_streams_reset_for_a_client_count_against_the_budget(
    duplex: None, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream opened and reset at once costs the server for two frames: by the
    client's RST_STREAM (rapid reset, CVE-2023-44487; no app starts when both come
    in one read) or by a frame h2 resets the stream for, such as DATA after
    END_STREAM (MadeYouReset, CVE-2025-8671), which starts an app.
    hypercorn's own bound, GOAWAY after 1,000 streams, is lifted as the emulator
    lifts it; past the budget the connection gets ENHANCE_YOUR_CALM, and a client
    with a few hundred such streams is only served."""
    # A smaller budget that does not refill while the test runs: each stream starts
    # an app, so 12,000 took the server long enough on a loaded machine that the
    # default refill (1,000 a second) kept up with them.
    monkeypatch.setattr(DuplexH2Protocol, "control_burst", 1_000)
    monkeypatch.setattr(DuplexH2Protocol, "control_rate", 0.001)
    with (
        running_server(App(), keep_alive_max_requests=2**31) as server,
        connected(server.port) as other,
        connected(server.port) as client,
    ):
        echoed = other.open("/echo")
        assert echo_round(other, echoed, b"before")
        # Written by hand, as in the test above (the client's h2 would count the
        # streams it waits on against the limit); the server's answers on them are
        # read as raw frames, which the client's h2 would refuse.
        request = [(":method", "POST"), (":path", "/echo"), (":scheme", "http")]
        request.append((":authority", "localhost"))
        blocks = [client.h2.encoder.encode(request) for _ in range(2)]
        client._flush()
        opened = 0

        def open_and_reset(count: int) -> bytes:
            nonlocal opened
            frames = bytearray()
            for _ in range(count):
                stream_id = 2 * opened + 1
                headers = HeadersFrame(stream_id, data=blocks[min(opened, 1)])
                headers.flags.add("END_HEADERS")
                if how == "rst-stream":
                    frames += headers.serialize()
                    frames += RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL).serialize()
                else:
                    headers.flags.add("END_STREAM")
                    frames += headers.serialize() + DataFrame(stream_id, data=b"x").serialize()
                opened += 1
            return bytes(frames)

        client._write(open_and_reset(500))
        client._write(PingFrame(0, opaque_data=b"liveness").serialize())
        assert _raw_frame(client, lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
        client._write(open_and_reset(3_000))
        goaway = _raw_frame(client, lambda f: isinstance(f, GoAwayFrame))
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert echo_round(other, echoed, b"after")
        assert_connection_alive(server, other)


class CountingApp(App):
    """:class:`App`, counting the HTTP requests it was started for."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.started += 1
        await super().__call__(scope, receive, send)


def test_streams_opened_and_reset_in_one_read_start_no_app(duplex: None) -> None:
    """Each stream a client opened and reset at once started an app (about 260 us):
    three connections, each under the control budget, froze the server for 7 s.
    One reset in the same read as its HEADERS now never reaches hypercorn, and
    its DATA is drained; the resets still count against the budget."""
    app = CountingApp()
    with (
        running_server(app, keep_alive_max_requests=2**31) as server,
        connected(server.port) as client,
    ):
        request = [(":method", "POST"), (":path", "/echo"), (":scheme", "http")]
        request.append((":authority", "localhost"))
        blocks = [client.h2.encoder.encode(request) for _ in range(2)]
        client._flush()
        frames = bytearray()
        for n in range(200):
            stream_id = 2 * n + 1
            headers = HeadersFrame(stream_id, data=blocks[min(n, 1)])
            headers.flags.add("END_HEADERS")
            frames += headers.serialize() + DataFrame(stream_id, data=b"x" * 100).serialize()
            frames += RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL).serialize()
        client._write(bytes(frames))  # 200 streams, about 30 KB: one read, or a few
        client._write(PingFrame(0, opaque_data=b"liveness").serialize())
        assert _raw_frame(client, lambda f: isinstance(f, PingFrame) and "ACK" in f.flags)
        assert app.started <= 3, app.started  # a pair a read's end split, at most
        with connected(server.port) as other:
            echoed = other.open("/echo")
            assert echo_round(other, echoed, b"after")
            assert_connection_alive(server, other)
        assert server.crashes == []


def _raw_frame(client: Client, wanted: Callable[[Any], bool]) -> Any:
    """Read ``client``'s socket as raw frames, bypassing its h2, until one is
    ``wanted``; return it, or None if the server closed first."""
    buffer = bytearray()
    deadline = time.monotonic() + DEADLINE
    while True:
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(bytes(buffer[9 : 9 + length])))
            del buffer[: 9 + length]
            if wanted(frame):
                return frame
        assert time.monotonic() < deadline, "stalled waiting for a frame"
        data = client.recv()
        if data is None:
            continue
        if not data:
            return None
        buffer += data


def test_priority_frames_for_streams_not_open_leave_nothing_behind(duplex: None) -> None:
    """PRIORITY for a stream before its HEADERS (RFC 9113 allows it), and for streams
    never opened: the stream opens and works, and nothing is kept for the others."""
    with running_server(App()) as server, connected(server.port) as client:
        frames = [PriorityFrame(n, depends_on=0, stream_weight=16) for n in range(1, 400, 2)]
        client._write(b"".join(frame.serialize() for frame in frames))
        echoed = client.open("/echo")
        assert echoed == 1
        assert echo_round(client, echoed, b"after its PRIORITY frame")
        assert_connection_alive(server, client)
    scheduler = RoundRobin()
    scheduler.reprioritize(7, depends_on=None, weight=32)
    with pytest.raises(priority.DeadlockError):
        next(scheduler)
    assert scheduler._streams == set()


async def test_the_response_buffer_waits_at_its_mark_and_counts_what_is_taken() -> None:
    """push waits once the buffer holds 32 KiB, even with its pause event left set by
    an earlier pop; only a pop that leaves less than 16 KiB lets it go on. While a
    send is timed, the client taking 1 KiB, or all that waited, restarts its time
    (an app's output timer); a byte now and then does not."""
    from hypercorn.asyncio.worker_context import EventWrapper

    from emulator.flow_control import BoundedBuffer

    class Watch:
        since = 0.0
        sending = True

    buffer = BoundedBuffer(EventWrapper)
    buffer.watch = watch = Watch()
    await buffer.push(b"x" * 100)
    assert await buffer.pop(100) == b"x" * 100  # all of it: the pause event is set now
    assert watch.since > 0.0
    pushing = asyncio.ensure_future(buffer.push(b"y" * 40 * KIB))
    await asyncio.sleep(0)
    assert not pushing.done()
    since = watch.since
    assert await buffer.pop(0) == b""  # a spent window: nothing taken
    for _ in range(1000):
        assert await buffer.pop(1) == b"y"  # a trickle, under 1 KiB in all
    assert watch.since == since
    await buffer.pop(16 * KIB)  # about 23 KiB left: still over the low-water mark
    assert watch.since > since
    await asyncio.sleep(0)
    assert not pushing.done()
    await buffer.pop(16 * KIB)  # under 8 KiB left
    await asyncio.wait_for(pushing, DEADLINE)
    watch.sending, since = False, watch.since  # no send timed: left alone
    await buffer.pop(4 * KIB)
    assert watch.since == since


def test_the_control_budget_refills_at_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of 10,000, then 1,000 a second: a client that keeps within the rate
    is never cut off however long it goes on; one over it is, within the second."""
    import emulator.hypercorn_h2 as module

    now = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    protocol = DuplexH2Protocol(*_constructor_args(tls=False))
    assert all(protocol._control_frame() for _ in range(10_000))  # the burst
    assert not protocol._control_frame()
    for _ in range(60):  # a minute at 900 a second
        now[0] += 1.0
        assert protocol._control_frame(900)
    now[0] += 1.0  # 1,100 in the next second: 1,000 come back, plus what was left
    assert protocol._control_frame(1_000 + 60 * 100)
    assert not protocol._control_frame(1)
    now[0] += 0.5
    assert protocol._control_frame(500)
    assert not protocol._control_frame(1)


@pytest.mark.parametrize(("size", "kept"), [(60_000, True), (70_000, False)])
def test_request_headers_past_64_kib_end_the_connection(
    duplex: None,
    size: int,
    kept: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """h2's limit on a decoded header list: past it the HPACK state cannot be trusted,
    so the connection ends with ENHANCE_YOUR_CALM; under it the request is served.
    The GOAWAY says why, and one warning names the client: both were bare."""
    monkeypatch.setattr(hypercorn_h2, "_BROKEN_FRAMES", Throttle(10.0))  # none said yet
    with running_server(App()) as server, connected(server.port) as client:
        stream = client.open_malformed("/echo", [("x-big", "a" * size)])
        if kept:
            assert echo_round(client, stream, b"served")
            assert_connection_alive(server, client)
        else:
            client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
            assert client.goaway == ErrorCodes.ENHANCE_YOUR_CALM
            assert client.goaway_data == (
                b"Oversized header block: A header list larger than 65536 has been received"
            )
            assert server.crashes == []
    said = [r.getMessage() for r in caplog.records if "connection closed with GOAWAY" in r.message]
    if not kept:
        assert len(said) == 1 and said[0].endswith(
            ": Oversized header block: A header list larger than 65536 has been received: "
            "connection closed with GOAWAY ENHANCE_YOUR_CALM"
        ), said
        assert said[0].startswith("client 127.0.0.1:")


def test_connections_ended_for_their_frames_are_warned_of_at_most_every_10_s(
    duplex: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client opening connection after connection, each with a header list over
    the limit, wrote a warning for each: the later ones are counted into the next."""
    throttle = Throttle(10.0)
    monkeypatch.setattr(hypercorn_h2, "_BROKEN_FRAMES", throttle)
    with running_server(App()) as server:
        for round_ in range(3):
            if round_ == 2:
                throttle._last -= 10  # ten seconds on
            with connected(server.port) as client:
                client.open_malformed("/echo", [("x-big", "a" * 70_000)])
                client.pump_until(lambda: client.goaway is not None, "the GOAWAY")
        assert server.crashes == []
    said = [r.getMessage() for r in caplog.records if "connection closed with GOAWAY" in r.message]
    assert len(said) == 2, said
    assert said[0].endswith("GOAWAY ENHANCE_YOUR_CALM")
    assert said[1].endswith(
        "ENHANCE_YOUR_CALM; 1 more like it since the last such line (at most one every 10 s)"
    ), said


def test_a_clients_few_control_frames_are_within_the_budget(duplex: None) -> None:
    with running_server(App()) as server, connected(server.port) as client:
        for _ in range(50):
            client.ping()
        assert_connection_alive(server, client)


def test_events_held_for_a_stream_that_closes_give_their_window_back(duplex: None) -> None:
    """A stream reset while its DATA is held: nobody will read it, so the connection's
    window is handed back and the other streams keep flowing."""
    app = App()
    with running_server(app) as server, connected(server.port) as client:
        paused = client.open("/pause")
        for _ in range(30):
            client.send(paused, b"z" * 1000)
        client.reset(paused, ErrorCodes.CANCEL)
        echoed = client.open("/echo")
        # 64 KiB of connection window: it comes back only if the held DATA was released.
        for _ in range(3):
            assert echo_round(client, echoed, b"y" * 30_000)
        app.resume.set()
        assert_connection_alive(server, client)


async def test_a_close_reported_while_sending_leaves_the_send_task_standing() -> None:
    """QuietTCPServer reports a transport that is closing as Closed from inside the
    send task's flush. The closed buffers must still be there when _send_data looks
    its stream up again: a KeyError there took the connection's tasks down."""
    from hypercorn.asyncio.task_group import TaskGroup
    from hypercorn.protocol.h2 import StreamBuffer

    args = list(_constructor_args(tls=False))
    closing = False

    async def send(event: Any) -> None:
        if isinstance(event, RawData) and closing:
            await protocol.handle(Closed())

    async with TaskGroup(asyncio.get_running_loop()) as task_group:
        args[3], args[-1] = task_group, send
        protocol = DuplexH2Protocol(*args)
        await protocol.initiate()
        client = H2Connection(H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, _request_headers(1))
        protocol.connection.receive_data(client.data_to_send())
        protocol.connection.send_headers(1, [(b":status", b"200")])
        protocol.connection.data_to_send()
        protocol.stream_buffers[1] = buffer = StreamBuffer(protocol.context.event_class)
        protocol.priority.insert_stream(1)
        closing = True
        await buffer.push(b"x" * 100)
        await protocol.has_data.set()
        await asyncio.sleep(0.1)
        assert protocol.closed
        buffer.set_complete()
        await asyncio.wait_for(buffer.drain(), DEADLINE)  # an app's last send returns


def test_a_request_drained_past_the_limit_is_reset_with_no_error(
    duplex: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that keeps sending into a finished stream is stopped with RST_STREAM NO_ERROR
    (RFC 9113 8.1) once it passes max_drain_bytes; the other stream is unaffected."""
    monkeypatch.setattr(DuplexH2Protocol, "max_drain_bytes", 64 * KIB)
    with running_server(App()) as server, connected(server.port) as client:
        rejected, echoed, sent = early_rejection(client)
        assert_connection_alive(server, client)

        assert client.streams[echoed].body == sent
        assert client.streams[echoed].seen == ["response", "end"]
        assert client.streams[rejected].seen == ["response", "end", "reset"]
        assert client.streams[rejected].reset_code == ErrorCodes.NO_ERROR


def test_response_ended_after_partial_read_drains_the_request(duplex: None) -> None:
    """A complete response after part of the body: later DATA and a client RST are harmless."""
    with running_server(App()) as server, connected(server.port) as client:
        partial = client.open("/read-some")
        echoed = client.open("/echo")
        client.send(partial, b"b" * 48 * KIB)
        client.pump_until(lambda: "end" in client.streams[partial].seen, "response on stream A")
        sent = flood_while_echoing(client, partial, echoed)
        client.reset(partial, ErrorCodes.CANCEL)
        assert_connection_alive(server, client)

        assert client.streams[echoed].body == sent
        assert client.streams[echoed].seen == ["response", "end"]
        assert client.streams[partial].status == 200
        assert bytes(client.streams[partial].body) == b"enough"
        assert client.streams[partial].seen == ["response", "end"]


@pytest.mark.parametrize("route", ["/abandon", "/abandon-raising"], ids=["returns", "raises"])
def test_unfinished_response_is_reset_with_internal_error(duplex: None, route: str) -> None:
    """An app that ends before its last body gets its stream reset, after the body it sent."""
    with running_server(App()) as server, connected(server.port) as client:
        abandoned = client.open(route)
        echoed = client.open("/echo")
        client.pump_until(lambda: "reset" in client.streams[abandoned].seen, "reset of stream A")
        sent = b"".join(bytes([n]) * 4 * KIB for n in range(4))
        for n in range(4):
            assert echo_round(client, echoed, sent[n * 4 * KIB : (n + 1) * 4 * KIB])
        client.send(echoed, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[echoed].seen, "end of stream B")
        assert_connection_alive(server, client)

        assert client.streams[abandoned].status == 200
        assert bytes(client.streams[abandoned].body) == b"partial"
        assert client.streams[abandoned].seen == ["response", "reset"]
        assert client.streams[abandoned].reset_code == ErrorCodes.INTERNAL_ERROR
        assert client.streams[echoed].body == sent
        assert client.streams[echoed].seen == ["response", "end"]


def test_data_for_a_finished_app_still_returns_connection_window(duplex: None) -> None:
    """DATA on a stream whose app is gone is acknowledged, however much of it comes."""
    app = App()
    # With no receive window, the server cannot send A's body, so A stays open
    # after its app has returned and all the client's DATA below reaches it.
    with running_server(app) as server, connected(server.port, initial_window=0) as client:
        abandoned = client.open("/abandon")
        echoed = client.open("/echo")
        client.grant(echoed, 2**20)
        assert app.abandoned.wait(DEADLINE)
        client.pump_until(lambda: client.streams[abandoned].status is not None, "headers of A")

        sent = bytearray()
        for n in range(FLOOD // (16 * KIB)):
            assert client.send(abandoned, b"c" * 16 * KIB)
            chunk = bytes([n]) * 4 * KIB
            assert echo_round(client, echoed, chunk)
            sent += chunk
        assert client.streams[abandoned].seen == ["response"]

        client.grant(abandoned, 65_535)
        client.pump_until(lambda: "reset" in client.streams[abandoned].seen, "reset of stream A")
        client.send(echoed, b"", end=True)
        client.pump_until(lambda: "end" in client.streams[echoed].seen, "end of stream B")
        assert_connection_alive(server, client)

        assert bytes(client.streams[abandoned].body) == b"partial"
        assert client.streams[abandoned].seen == ["response", "reset"]
        assert client.streams[abandoned].reset_code == ErrorCodes.INTERNAL_ERROR
        assert client.streams[echoed].body == sent
        assert client.streams[echoed].seen == ["response", "end"]


def test_body_the_app_never_read_does_not_block_the_connection(duplex: None) -> None:
    """A full app queue left behind by an early 400 does not stall the other streams."""
    # hypercorn's app queue holds 10 messages; the burst below is read while
    # the app answers, and the 11th frame leaves the connection's reader
    # waiting for room in a queue that only the app would empty.
    with running_server(App()) as server, connected(server.port) as client:
        rejected = client.h2.get_next_available_stream_id()
        headers = [(":method", "POST"), (":path", "/reject"), (":scheme", "http")]
        client.h2.send_headers(rejected, headers + [(":authority", "localhost")])
        burst = b"".join(DataFrame(rejected, data=b"d" * KIB).serialize() for _ in range(16))
        client.sock.sendall(client.h2.data_to_send() + burst)
        client.conn_window -= 16 * KIB
        echoed = client.open("/echo")

        assert echo_round(client, echoed, b"still here")
        client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400 on stream A")
        # End A's request with a raw frame, as it was opened (outside the client's books).
        end = DataFrame(rejected)
        end.flags.add("END_STREAM")
        client.sock.sendall(end.serialize())
        assert_connection_alive(server, client)

        assert client.streams[rejected].seen == ["response", "end"]


def test_h2c_upgrade_connections_get_the_fix(duplex: None) -> None:
    """A connection upgraded from HTTP/1.1 with Upgrade: h2c resets an unfinished response."""
    with running_server(App()) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
        with sock:
            conn = H2Connection(H2Configuration(client_side=True))
            settings = conn.initiate_upgrade_connection()
            assert settings is not None
            sock.sendall(
                b"GET /abandon HTTP/1.1\r\nHost: localhost\r\n"
                b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                b"HTTP2-Settings: " + settings + b"\r\n\r\n"
            )
            received = b""
            deadline = time.monotonic() + DEADLINE
            while b"\r\n\r\n" not in received and time.monotonic() < deadline:
                chunk = sock.recv(65_536)
                assert chunk, "server closed before upgrading"
                received += chunk
            head, _, rest = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            sock.sendall(conn.data_to_send())

            # The upgraded request is stream 1, already ended by the client.
            resets: list[h2.events.StreamReset] = []
            data = rest
            while not resets and time.monotonic() < deadline:
                events = conn.receive_data(data)
                resets += [e for e in events if isinstance(e, h2.events.StreamReset)]
                sock.sendall(conn.data_to_send())
                if not resets:
                    data = sock.recv(65_536)
                    assert data, "server closed the upgraded connection"

            assert [(e.stream_id, e.error_code) for e in resets] == [(1, ErrorCodes.INTERNAL_ERROR)]


def _constructor_args(*, tls: bool) -> tuple[Any, ...]:
    """What hypercorn hands a protocol's constructor; the constructor calls none of it."""

    async def send(event: Any) -> None:
        raise AssertionError("not called")

    unused: Any = None  # The constructor stores the app and task group only.
    server = ("127.0.0.1", 443 if tls else 80)
    context = WorkerContext(None)
    return (
        unused,
        Config(),
        context,
        unused,
        ConnectionState({}),
        tls,
        ("127.0.0.1", 50000),
        server,
        send,
    )


def test_install_is_idempotent_and_covers_alpn_h2(duplex: None) -> None:
    """After install(), twice, TLS connections that chose h2 by ALPN get DuplexH2Protocol."""
    install()

    wrapper = ProtocolWrapper(*_constructor_args(tls=True), alpn_protocol="h2")
    assert type(wrapper.protocol) is DuplexH2Protocol
    assert hypercorn.protocol.H2Protocol is DuplexH2Protocol  # type: ignore[attr-defined]


#: Every process-wide name install() rebinds, its own and those of the TCP and
#: HTTP/1.1 installs it calls, in the order of hypercorn_h2's docstring table.
INSTALLED_PATCHES = (
    "hypercorn.protocol.H2Protocol",
    "hyperframe.frame._raw_data_repr",
    "hyperframe.frame.DataFrame._body_repr",
    "h2.utilities._reject_illegal_characters",
    "hpack.hpack.decode_huffman",
    "h2.stream.normalize_inbound_headers",
    "h2.stream.validate_headers",
    "h2.stream.normalize_outbound_headers",
    "h2.stream.validate_outbound_headers",
    "hypercorn.asyncio.run.TCPServer",
    "hypercorn.protocol.h11.H11Protocol._send_error_response",
    "hypercorn.protocol.h11.H11Protocol.__init__",
    "hypercorn.protocol.h11.H11Protocol._maybe_recycle",
)


def _resolve(dotted: str) -> Any:
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            found = getattr(found, part)
        return found
    raise AssertionError(f"{dotted}: no module")


def test_patched_names_each_name_install_rebinds_now_the_emulators(duplex: None) -> None:
    """After install(), PATCHED names every process-wide attribute it rebound, as the
    module docstring's table does, and each one holds the emulator's object, not
    hypercorn's, h2's, hpack's or hyperframe's own."""
    from emulator import speedups

    expected = tuple(
        name
        for name in INSTALLED_PATCHES
        # Only with the C speedups built.
        if name != "hpack.hpack.decode_huffman" or speedups.huffman_decode is not None
    )
    assert hypercorn_h2.PATCHED == expected
    for name in hypercorn_h2.PATCHED:
        assert _resolve(name).__module__.startswith("emulator."), name
    table = re.findall(r"^``([\w.]+)``  ", hypercorn_h2.__doc__ or "", re.MULTILINE)
    assert tuple(table) == INSTALLED_PATCHES


# The crash also makes stock hypercorn start an idle-timeout coroutine on a
# task group that is shutting down; it is never awaited.
# (QuietTCPServer's own, when an earlier test installed it.)
@pytest.mark.filterwarnings("ignore:coroutine '(Quiet)?TCPServer._idle_timeout':RuntimeWarning")
def test_stock_hypercorn_closes_connection_on_data_after_response(stock: None) -> None:
    """Documents upstream bug pgjones/hypercorn#329 in stock hypercorn 0.18.

    DATA arriving for a stream whose response is complete raises KeyError in
    H2Protocol._handle_events and kills the connection with every stream on
    it. If this test fails, upstream has fixed the bug: revisit whether
    emulator.hypercorn_h2 is still needed.
    """
    with running_server(App()) as server, connected(server.port) as client:
        rejected, echoed, _ = early_rejection(client)

        assert client.closed
        assert client.streams[rejected].status == 400
        assert "reset" not in client.streams[rejected].seen
        assert "end" not in client.streams[echoed].seen
    assert "KeyError" in server.crashes
    gc.collect()  # While the filter above applies.


def _raw_response_to_rejection(client: Client) -> bytes:
    """Everything the server sent until the 400 on ``/reject`` ended."""
    raw = bytearray()
    receive = client.h2.receive_data

    def recording(data: bytes) -> list[h2.events.Event]:
        raw.extend(data)
        return receive(data)

    client.h2.receive_data = recording  # type: ignore[method-assign]
    rejected = client.open("/reject")
    client.pump_until(lambda: "end" in client.streams[rejected].seen, "the 400")
    assert client.streams[rejected].status == 400
    return bytes(raw)


def test_response_headers_are_sent_without_huffman_coding(duplex: None) -> None:
    """Header strings go out as they are (valid HPACK, and no Huffman coding in Python
    per response); the client decodes them as before."""
    with running_server(App()) as server, connected(server.port) as client:
        assert b"ValidationException" in _raw_response_to_rejection(client)


def test_stock_hypercorn_huffman_codes_response_headers(stock: None) -> None:
    """What the test above rules out: h2's default encoder hides the literal."""
    with running_server(App()) as server, connected(server.port) as client:
        assert b"ValidationException" not in _raw_response_to_rejection(client)


def test_each_connection_decodes_headers_quickly_under_h2s_limits() -> None:
    """DuplexH2Protocol swaps h2's HPACK decoder for the quick one, carrying h2's limits
    over, and its encoder sends header strings without Huffman coding."""
    from emulator.hpack_codec import QuickDecoder

    protocol = DuplexH2Protocol(*_constructor_args(tls=False))
    decoder = protocol.connection.decoder
    assert type(decoder) is QuickDecoder
    assert decoder.max_header_list_size == protocol.connection.DEFAULT_MAX_HEADER_LIST_SIZE
    assert decoder.max_allowed_table_size == hpack.Decoder().max_allowed_table_size
    literal = protocol.connection.encoder.encode([(b"x-amzn-a", b"ValidationException")])
    assert b"ValidationException" in literal


def test_an_hpack_without_the_internals_keeps_its_own_coders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quick coders rely on hpack's private methods: an hpack that lacks them is
    found out at import, and connections then keep h2's own encoder and decoder."""
    from emulator import hpack_codec, hypercorn_h2

    assert hpack_codec.hpack_internals_present()  # the hpack installed here
    monkeypatch.delattr(hpack.Decoder, "_decode_literal_index")
    assert not hpack_codec.hpack_internals_present()

    # DuplexH2Protocol reads the flag from its own module.
    monkeypatch.setattr(hypercorn_h2, "_QUICK_HPACK", False)
    protocol = DuplexH2Protocol(*_constructor_args(tls=False))
    # hpack's own decoder, behind the same guard against costly blocks.
    assert type(protocol.connection.decoder) is hpack_codec.GuardedDecoder
    assert type(protocol.connection.encoder) is hpack_codec.CappedEncoder


@pytest.mark.parametrize(
    ("block", "code"),
    [
        (b"\x20" * 3 + b"\x83\x86", ErrorCodes.PROTOCOL_ERROR),  # h2: any HPACK error
        (b"\x20" * (2**16 + 100), ErrorCodes.ENHANCE_YOUR_CALM),
    ],
    ids=["three-size-updates", "a-block-of-updates-past-the-list-limit"],
)
def test_a_header_block_that_would_stall_the_loop_ends_only_its_own_connection(
    duplex: None, block: bytes, code: ErrorCodes
) -> None:
    """Blocks of HPACK size updates, 1 MiB each, stalled every connection for a
    second each: decoded one Python call per byte, yielding no header."""
    with (
        running_server(App()) as server,
        connected(server.port) as attacker,
        connected(server.port) as other,
    ):
        echoed = other.open("/echo")
        assert echo_round(other, echoed, b"before")
        size = attacker.h2.max_outbound_frame_size
        chunks = [block[i : i + size] for i in range(0, len(block), size)]
        frames = [HeadersFrame(1, data=chunks[0])]
        frames += [ContinuationFrame(1, data=chunk) for chunk in chunks[1:]]
        frames[-1].flags.add("END_HEADERS")
        attacker._write(b"".join(frame.serialize() for frame in frames))
        attacker.pump_until(lambda: attacker.goaway is not None, "the GOAWAY")
        assert attacker.goaway == code
        assert echo_round(other, echoed, b"after")
        assert_connection_alive(server, other)
        assert server.crashes == []


def test_an_app_waiting_in_receive_takes_data_inline_in_order(duplex: None, caplog) -> None:
    """InlineBody: DATA reaches the handler of an app waiting on an empty queue,
    which takes it silently or with a wake-up, or leaves it to the queue; data
    for an app that is busy, or behind anything still queued, is queued in
    order; a handler that raises is logged and wakes its app; the connection
    and its window live through all of it."""
    with running_server(App()) as server, connected(server.port) as client:
        stream = client.open("/inline")
        log = client.streams[stream]

        def expect(text: bytes) -> None:
            client.pump_until(lambda: bytes(log.body).endswith(text), repr(text))
            time.sleep(0.1)  # for the app to go back to waiting in receive()

        client.pump_until(lambda: log.status == 200, "the response")
        time.sleep(0.1)
        client.send(stream, b"take1")
        client.send(stream, b"wake2")
        expect(b"taken:take1,wake2 got:;")
        client.send(stream, b"plain3")
        expect(b"taken: got:plain3;")
        client.send(stream, b"slow4")
        client.send(stream, b"take5")  # the app is busy: no handler, queued
        expect(b"taken: got:slow4;taken: got:take5;")
        # Two frames in one write: take7 finds plain6 queued and must follow it.
        both = DataFrame(stream, data=b"plain6").serialize()
        both += DataFrame(stream, data=b"take7").serialize()
        client.conn_window -= 11
        client.windows[stream] -= 11
        client._write(both)
        expect(b"taken: got:plain6;taken: got:take7;")
        with caplog.at_level("ERROR", logger="medscribe.h2"):
            client.send(stream, b"boom8")
            expect(b"taken: got:;")
        assert any("inline body handler failed" in r.getMessage() for r in caplog.records)
        # Window for everything taken inline came back: 64 KiB more goes through.
        for _ in range(16):
            client.send(stream, b"take" + b"x" * 4092)
        client.send(stream, b"wake-last", end=True)
        client.pump_until(lambda: "end" in log.seen, "the end of the stream")
        assert bytes(log.body).endswith(b" got:;taken: got:;")
        assert bytes(log.body).count(b"take" + b"x" * 4092) == 16
        assert_connection_alive(server, client)


def test_an_inline_handler_sends_output_itself_when_it_can_go_out_in_order(duplex: None) -> None:
    """InlineBody.send: output a handler hands over goes out without waking the
    app; where the stream's window is too short for it, it is refused, and the
    app, woken, sends it the usual way, in order with everything else."""
    with running_server(App()) as server, connected(server.port) as client:
        stream = client.open("/inline")
        log = client.streams[stream]
        client.pump_until(lambda: log.status == 200, "the response")
        time.sleep(0.1)  # for the app to wait in receive()
        client.send(stream, b"send1")
        client.pump_until(lambda: bytes(log.body).endswith(b"<send1>"), "the handler's output")
        time.sleep(0.1)
        client.send(stream, b"plain2", end=True)
        client.pump_until(lambda: "end" in log.seen, "the end of the stream")
        # The app was not woken for send1: nothing was taken before plain2.
        assert bytes(log.body) == b"<send1>taken: got:plain2;taken: got:;"
        assert_connection_alive(server, client)

    # A stream window of 4 bytes: "<send3>" cannot go out as one frame.
    with running_server(App()) as server, connected(server.port, initial_window=4) as client:
        stream = client.open("/inline")
        log = client.streams[stream]
        client.pump_until(lambda: log.status == 200, "the response")
        time.sleep(0.1)
        client.send(stream, b"send3")
        client.pump_until(lambda: bytes(log.body).endswith(b"got:;"), "the app's answer")
        client.send(stream, b"plain4", end=True)
        client.pump_until(lambda: "end" in log.seen, "the end of the stream")
        assert bytes(log.body) == b"taken:send3 got:;taken: got:plain4;taken: got:;"
        assert_connection_alive(server, client)


def test_inline_output_never_overtakes_output_still_buffered(duplex: None) -> None:
    """InlineBody.send refuses before the response starts, while output the app
    sent is still in the stream's buffer, for nothing, for more than the window
    holds and after the response ended; what it takes (also outside the
    connection's task, which then flushes it) arrives in order."""
    with running_server(App()) as server, connected(server.port) as client:
        stream = client.open("/send-now")
        log = client.streams[stream]
        client.pump_until(lambda: bytes(log.body).endswith(b"[c]"), "[c]")
        client.send(stream, b"", end=True)
        client.pump_until(lambda: "end" in log.seen, "the end of the stream")
        assert bytes(log.body) == b"[a][b][c] 0,1,0,1,0,0"
        assert_connection_alive(server, client)


async def test_output_framed_while_a_batch_flush_waits_for_the_socket_is_still_written() -> None:
    """A review found this: InlineBody.send from an app's own task, while the
    connection's task waits in its batch's final flush (the socket backed up,
    h2's bytes already taken), framed the output and started no flush of its
    own. It stayed in h2's buffer until some other frame went out."""
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.asyncio.task_group import TaskGroup

    go = asyncio.Event()
    answers: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = scope["extensions"][INLINE_BODY_EXTENSION]

        def handler(data: bytes) -> bool:
            return not body.send(b"<" + data + b">")

        await send({"type": "http.response.start", "status": 200})
        if scope["path"] == "/3":  # sends from its own task
            await go.wait()
            answers.append(body.send(b"[x]"))
        body.handler = handler
        await receive()

    written: list[bytes] = []
    blocked = asyncio.Event()
    release = asyncio.Event()
    block_next = False

    async def send(event: Any) -> None:
        nonlocal block_next
        if isinstance(event, RawData):
            written.append(event.data)
            if block_next:  # a transport over its high-water mark: drain() waits
                block_next = False
                blocked.set()
                await release.wait()

    args = list(_constructor_args(tls=False))
    async with TaskGroup(asyncio.get_running_loop()) as task_group:
        args[0], args[3], args[-1] = ASGIWrapper(app), task_group, send
        protocol = DuplexH2Protocol(*args)
        await protocol.initiate()
        client = H2Connection(H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, _request_headers(1))
        client.send_headers(3, _request_headers(3))
        await protocol.handle(RawData(client.data_to_send()))
        await asyncio.sleep(0.05)  # both responses started; stream 1 waits in receive()
        client.send_data(1, b"hi")
        block_next = True
        reading = asyncio.create_task(protocol.handle(RawData(client.data_to_send())))
        await blocked.wait()  # the batch's flush, <hi> in it, waits for the socket
        go.set()
        await asyncio.sleep(0.05)
        assert answers == [True]
        release.set()
        await reading
        await asyncio.sleep(0.1)
        everything = b"".join(written)
        assert b"<hi>" in everything and b"[x]" in everything
        assert protocol.connection.data_to_send() == b""
        await protocol.handle(Closed())


def test_no_inline_output_where_the_response_has_no_body(duplex: None) -> None:
    """InlineBody.send refuses where HTTP allows no body (HEAD, 1xx, 204, 304),
    as hypercorn drops a body the app sends there."""
    with running_server(App()) as server, connected(server.port) as client:
        stream = client.open("/no-content")
        log = client.streams[stream]
        client.send(stream, b"", end=True)
        client.pump_until(lambda: "end" in log.seen, "the end of the stream")
        assert log.status == 204 and bytes(log.body) == b""
        assert_connection_alive(server, client)


# --- Counting a connection's open streams -----------------------------------------------------
def _server_connection(max_streams: int, *, stock: bool = False) -> H2Connection:
    """A DuplexH2Protocol's h2 connection (or stock h2's, configured alike), preface done."""
    args = list(_constructor_args(tls=False))
    config = Config()
    config.h2_max_concurrent_streams = max_streams
    args[1] = config
    connection = DuplexH2Protocol(*args).connection
    if stock:
        connection.__class__ = H2Connection
        # DuplexH2Protocol rebinds h2's frame handlers to its own class's: undo that too.
        table = connection._frame_dispatch_table
        for frame_type, handler in table.items():
            table[frame_type] = getattr(connection, handler.__name__)
    connection.initiate_connection()
    connection.data_to_send()
    return connection


def _client_for(*servers: H2Connection) -> H2Connection:
    client = H2Connection(H2Configuration(client_side=True))
    client.initiate_connection()
    preface = client.data_to_send()
    for server in servers:
        server.receive_data(preface)
        server.data_to_send()
    return client


def _request_headers(stream_id: int) -> list[tuple[str, str]]:
    path = f"/{stream_id}"
    return [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "a")]


def test_a_connection_counts_its_streams_only_when_the_limit_could_be_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """h2 walks every stream a connection holds for each new one; ours walks once
    the streams held have doubled (64 at least), and still forgets closed ones."""
    server = _server_connection(1000)
    assert type(server).__name__ == "_StreamCountingConnection"
    client = _client_for(server)
    walks = []
    walk = H2Connection._open_streams

    def counting_walk(self: H2Connection, remainder: int) -> int:
        if self is server:  # not the client's count of its own streams
            walks.append(len(self.streams))
        return walk(self, remainder)

    monkeypatch.setattr(H2Connection, "_open_streams", counting_walk)
    for n in range(600):
        stream_id = 2 * n + 1
        client.send_headers(stream_id, _request_headers(stream_id))
        if n % 2:  # every other stream is cancelled at once
            client.reset_stream(stream_id)
        server.receive_data(client.data_to_send())
    # h2 would have walked 600 times, over 150 streams on average.
    assert walks == [0, 64, 64, 96, 144, 216, 324]  # each at twice what the last kept
    # Each walk forgets the cancelled half: at most twice the open ones are held.
    assert len(server.streams) <= 2 * 300


def test_a_stream_is_refused_at_a_limit_of_zero() -> None:
    """hypercorn sets MAX_CONCURRENT_STREAMS to 0 once a graceful shutdown starts; a
    client that opens a stream regardless is refused it, as at any other limit."""
    server = _server_connection(0)
    client = _client_for(server)
    client.send_headers(1, _request_headers(1))
    assert server.receive_data(client.data_to_send()) == []
    answer = client.receive_data(server.data_to_send())
    assert [(type(e), e.stream_id, e.error_code) for e in answer] == [
        (h2.events.StreamReset, 1, ErrorCodes.REFUSED_STREAM)
    ]


@pytest.mark.parametrize("limit", [1, 5, 64, 70])
def test_a_stream_over_the_limit_is_refused_alone_where_h2_ends_the_connection(
    limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening, closing and reopening around MAX_CONCURRENT_STREAMS: the same streams
    are taken and the same one is over the limit, with the true count. h2 ends the
    connection there; ours resets that stream with REFUSED_STREAM (RFC 9113 §5.1.2)
    and the connection goes on: once a stream closes, a new one is taken."""
    ours, stock = _server_connection(limit), _server_connection(limit, stock=True)
    client = _client_for(ours, stock)
    plan = [("open", 3), ("close", 2), ("open", limit + 2)]
    stream_id, opened, refused = -1, [], []
    caplog.set_level("INFO", logger="medscribe.h2")
    for action, count in plan:
        for _ in range(count):
            if action == "open":
                stream_id += 2
                client.send_headers(stream_id, _request_headers(stream_id))
                opened.append(stream_id)
            else:
                client.reset_stream(opened.pop(0))
            data = client.data_to_send()
            events = ours.receive_data(data)
            try:
                stock_events = stock.receive_data(data)
            except h2.exceptions.TooManyStreamsError as error:
                assert events == []
                refused.append((stream_id, str(error)))
                break
            assert [type(e) for e in events] == [type(e) for e in stock_events]
        if refused:
            break
    open_now = limit  # the one refused found the connection full
    assert refused == [(stream_id, f"Max inbound streams is {limit}, {open_now} open")]
    assert f"stream {stream_id}: refused (Max inbound streams is {limit}, {open_now} open)" in (
        caplog.text
    )
    answer = client.receive_data(ours.data_to_send())
    assert [(type(e), e.stream_id, e.error_code) for e in answer] == [
        (h2.events.StreamReset, stream_id, ErrorCodes.REFUSED_STREAM)
    ]
    # The client retries once one of its streams is done: it is taken.
    client.reset_stream(opened[0])
    client.send_headers(stream_id + 2, _request_headers(stream_id + 2))
    events = ours.receive_data(client.data_to_send())
    assert [type(e) for e in events] == [h2.events.StreamReset, h2.events.RequestReceived]
    # DATA the client had already sent on the refused stream is dropped, and its
    # connection window handed back: twice the 64 KiB window goes through.
    for _ in range(8):
        assert ours.receive_data(DataFrame(stream_id, data=b"x" * 16 * KIB).serialize()) == []
    assert ours.inbound_flow_control_window > 0
