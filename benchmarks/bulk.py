"""Bulk ingest: whole sessions posted as fast as the server takes them.

Each session is its own stream with its own session id: configuration, 10 s
of 16 kHz pcm as 100 ms signed audio events, END_OF_SESSION and the final
empty envelope, all pre-encoded. ``connections`` connections each keep
``streams`` sessions in flight; a finished session is replaced at once. A
connection that receives GOAWAY is replaced by a new one (the servers set
hypercorn's ``keep_alive_max_requests`` out of reach, so only a server closing
down sends it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .h2conn import ClientConnection, client_ssl_context, connect
from .servers import CpuMeter, ServerProcess, summed
from .stats import ClientMeter, MachineMeter
from .wire import FrameSplitter, is_exception, new_session_id, request_headers, session_body

__all__ = ["BulkResult", "FRAMINGS", "run_bulk"]


#: How a session's body is cut into DATA frames (see :func:`run_bulk`).
FRAMINGS = ("sdk", "packed")


@dataclass(kw_only=True)
class BulkResult:
    """Throughput of one bulk run (rates over the measured window only)."""

    server: str
    transport: str
    sessions: int
    failed: int
    window_s: float
    sessions_per_s: float
    audio_s_per_s: float
    events_per_session: float
    server_cpu: float
    #: The part of ``server_cpu`` in the servers' main threads, their event
    #: loops; the rest is in other threads (the emulator's journal writer).
    server_loop_cpu: float
    #: Shares of the wall time the servers' event loops were ready to run but
    #: waited for a core, and were not runnable at all (idle, or waiting for
    #: the GIL); see :class:`benchmarks.servers.CpuMeter`. None without the
    #: kernel's scheduler statistics.
    server_loop_waiting: float | None
    server_loop_asleep: float | None
    #: Server CPU milliseconds per ingested session: the cost that does not
    #: depend on what else the machine is doing.
    server_cpu_ms_per_session: float | None
    client_cpu: float
    other_cpu: float
    connections_opened: int
    #: Stream opens the connection refused (past the server's concurrent-stream
    #: limit, or after a GOAWAY), each retried 10 ms later: not sessions, and
    #: not failures, but a sign that fewer sessions were in flight than asked.
    streams_refused: int = 0

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class _Session:
    """One bulk session's response: status, events, and how it ended."""

    __slots__ = ("done", "status", "events", "error", "splitter")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.status = 0
        self.events = 0
        self.error: str | None = None
        self.splitter = FrameSplitter()

    def on_response(self, status: int) -> None:
        self.status = status

    def on_data(self, data: bytes) -> None:
        for message in self.splitter.feed(data):
            self.events += 1
            if is_exception(message):
                self.error = "in-stream exception"

    def on_end(self) -> None:
        if self.status != 200 and self.error is None:
            self.error = f"HTTP {self.status}"
        if not self.done.done():
            self.done.set_result(None)

    def on_reset(self, reason: str) -> None:
        self.error = reason
        if not self.done.done():
            self.done.set_result(None)


async def run_bulk(
    server: ServerProcess | Sequence[ServerProcess],
    *,
    transport: str,
    duration: float,
    warmup: float,
    connections: int = 4,
    streams: int = 16,
    audio_seconds: float = 10.0,
    framing: str = "sdk",
    binary: bool = False,
) -> BulkResult:
    """Post sessions for ``warmup + duration`` seconds; return the rates over ``duration``.

    ``transport`` is ``"h2c"`` or ``"tls"``. ``framing`` ``"sdk"`` writes each
    event in a DATA frame of its own, as the SDK does; ``"packed"`` writes the
    body in frames as large as the server allows, as h2load does. ``binary``
    sends the audio as binaryAudioEvents. Given several server processes,
    connections go to them in turn and their CPU adds up (what a multi-process
    emulator would reach). Raises ConnectionError if a server cannot be reached.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing {framing!r}: expected one of {', '.join(FRAMINGS)}")
    group = [server] if isinstance(server, ServerProcess) else list(server)
    kind = group[0].kind if len(group) == 1 else f"{group[0].kind} x{len(group)}"
    connections = max(connections, len(group))
    body = session_body(audio_seconds, binary=binary)
    tls = [client_ssl_context(member.ca_file) if transport == "tls" else None for member in group]
    ports = [member.tls_port if transport == "tls" else member.h2c_port for member in group]
    scheme = "https" if transport == "tls" else "http"
    pool: list[ClientConnection | None] = [None] * connections
    locks = [asyncio.Lock() for _ in range(connections)]
    opened = 0
    refused = 0  # stream opens refused (past the server's stream limit, or a GOAWAY)
    completions: list[tuple[float, bool, int]] = []
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + duration
    meters = [CpuMeter(member.pid) for member in group]
    client = ClientMeter()
    machine = MachineMeter()

    async def connection(slot: int) -> ClientConnection:
        nonlocal opened
        async with locks[slot]:
            conn = pool[slot]
            if conn is None or not conn.usable:
                if conn is not None and conn.active == 0:
                    conn.close()
                target = slot % len(group)
                conn = await connect("127.0.0.1", ports[target], tls=tls[target])
                pool[slot] = conn
                opened += 1
            return conn

    async def worker(slot: int) -> None:
        nonlocal refused
        while time.monotonic() < stop_at:
            conn = await connection(slot)
            done: asyncio.Future[None] = loop.create_future()
            session = _Session(done)
            headers = request_headers(new_session_id(), scheme=scheme, authority=conn.authority)
            try:
                stream_id = conn.start(headers, session)
            except Exception as error:  # refused: the connection is going away
                session.on_reset(f"could not open a stream: {error}")
                refused += 1
                await asyncio.sleep(0.01)
                continue
            if framing == "sdk":
                conn.send_messages(stream_id, body.messages)
            else:
                conn.send(stream_id, body.data, end_stream=True)
            conn.flush()
            try:
                await asyncio.wait_for(done, 60)
            except TimeoutError:
                session.error = "timed out"
            completions.append((time.monotonic(), session.error is None, session.events))
            if conn.active == 0 and not conn.usable:
                conn.close()

    cpu_task = asyncio.create_task(_meter_window((*meters, client, machine), measure_from, stop_at))
    workers = [asyncio.create_task(worker(i % connections)) for i in range(connections * streams)]
    await asyncio.gather(*workers)
    await cpu_task
    for conn in pool:
        if conn is not None:
            conn.close()

    counted = [c for c in completions if measure_from <= c[0] <= stop_at]
    ok = [c for c in counted if c[1]]
    window = duration
    rate = len(ok) / window if window > 0 else 0.0
    server_cpu = sum(meter.share for meter in meters)
    return BulkResult(
        server=kind,
        transport=transport,
        sessions=len(ok),
        failed=sum(1 for c in counted if not c[1]),  # in the window, as sessions are
        window_s=round(window, 3),
        sessions_per_s=round(rate, 2),
        audio_s_per_s=round(rate * body.audio_seconds, 1),
        events_per_session=round(sum(c[2] for c in ok) / len(ok), 2) if ok else 0.0,
        server_cpu=round(server_cpu, 3),
        server_loop_cpu=round(sum(meter.main_share for meter in meters), 3),
        server_loop_waiting=summed([meter.main_waiting for meter in meters]),
        server_loop_asleep=summed([meter.main_asleep for meter in meters]),
        server_cpu_ms_per_session=round(server_cpu * window / len(ok) * 1000, 2) if ok else None,
        client_cpu=round(client.share, 3),
        other_cpu=round(max(0.0, machine.busy - server_cpu - client.share), 3),
        connections_opened=opened,
        streams_refused=refused,
    )


async def _meter_window(
    meters: tuple[CpuMeter, ClientMeter, MachineMeter], begin: float, end: float
) -> None:
    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    for meter in meters:
        meter.start()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    for meter in meters:
        meter.stop()


def h2load_crosscheck(
    server: ServerProcess, *, audio_seconds: float, seconds: float
) -> dict[str, object] | None:
    """Post the same body with ``h2load`` (nghttp2-client) over h2c, if it is installed.

    h2load sends one fixed session id, which the baseline does not care about
    (the emulator would treat it as one session), so this cross-checks the
    baseline only. Returns ``None`` when h2load is missing.
    """
    import re
    import shutil
    import subprocess
    import tempfile

    if shutil.which("h2load") is None:
        return None
    body = session_body(audio_seconds)
    with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
        handle.write(body.data)
        handle.flush()
        args = ["h2load", "-c", "4", "-m", "16", "-D", str(max(1, int(seconds))), "-d", handle.name]
        for name, value in request_headers(new_session_id(), scheme="http", authority="x"):
            if not name.startswith(b":"):
                args += ["-H", f"{name.decode()}: {value.decode()}"]
        args.append(f"http://127.0.0.1:{server.h2c_port}/medical-scribe-stream/")
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
    match = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", done.stdout)
    ok = re.search(r"requests: .*?(\d+) succeeded", done.stdout)
    if match is None:
        return {"error": (done.stdout + done.stderr)[-500:]}
    return {
        "sessions_per_s": float(match.group(2)),
        "succeeded": int(ok.group(1)) if ok else None,
        "seconds": float(match.group(1)),
    }
