"""Real-time capacity: N sessions streaming audio at the speed it is recorded.

One process, one event loop. Session ``i`` starts at ``t0 + i/N * stagger``
(starts spread over ``stagger`` seconds, as independent clients would be),
sends its configuration, then one signed 100 ms audio event every 100 ms on
its own schedule, then END_OF_SESSION and the final empty envelope. Against
the scripted scenario of :func:`benchmarks.servers.write_realtime_fixtures`
every 10th frame completes a segment (the baseline answers every 10th frame
too), and the load generator measures:

* **latency**: from the moment the audio event completing segment ``k`` was
  framed (handed to the socket) to the moment segment ``k``'s final result
  arrived;
* **lag**: how late each audio event was framed relative to its real-time
  schedule (scheduler delay plus any wait for HTTP/2 flow-control credit);
* **finals**: every session must receive one final per completed segment and
  end with HTTP 200 and no in-stream exception.

What a run did not get to see counts too, as what it waited at least: an audio
event still unframed when the run ended lags by at least the time from its
schedule to the end (``audio_unsent`` counts them), and a final that never came
has a latency of at least the time from its completing audio event (framed, or
due) to the end (``finals_missing``). Without them a server that stopped
answering half-way through showed the lag and latency of the half it served.

The lag is the sender's: it grows only once the server stops granting flow-
control credit, and a server that stops reading is granted a connection's
window in advance (the emulator's and the baseline's: 16 MiB a connection, 1
MiB a stream once it streams), a few seconds of audio at N = 2,000 over four
connections and more at smaller N. A server that falls behind shows first in
the latency, which is what the verdict reads together with the finals.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from .h2conn import ClientConnection, client_ssl_context, connect
from .servers import CpuMeter, ServerProcess, summed
from .stats import ClientMeter, MachineMeter, percentile
from .wire import (
    CHUNK_SECONDS,
    FrameSplitter,
    audio_frames,
    configuration_frame,
    end_of_session_frame,
    end_of_stream_frame,
    is_exception,
    is_final,
    new_session_id,
    request_headers,
)

__all__ = ["RealtimeResult", "run_realtime", "LATENCY_TARGET_S", "LAG_TARGET_S"]

#: The issue's pass mark: p99 latency under 100 ms...
LATENCY_TARGET_S = 0.100
#: ...and no sender more than 1 s behind real time.
LAG_TARGET_S = 1.0
#: Frames per segment: a segment ends with every 10th frame (see the module docstring).
_FRAMES_PER_SEGMENT = 10


@dataclass(kw_only=True)
class RealtimeResult:
    """One real-time run at one N against one server."""

    server: str
    sessions: int
    connections: int
    audio_seconds: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    #: The ramp (``stagger``): session starts spread over this many seconds.
    ramp_s: float
    #: p99 of the finals whose completing audio event was sent while every
    #: session was mid-stream (from one segment after the last start to the
    #: first session's end): the steady state, without the ramp's burst of
    #: session opens. ``None`` when the sessions are too short to have one.
    steady_p99_ms: float | None
    steady_finals: int
    #: p99 of the finals by the second of the run (from the first start) in
    #: which their completing audio event was sent: where the tail comes from,
    #: the ramp's opens, the steady state or the sessions' ends.
    p99_ms_by_second: list[float | None]
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    #: Audio events not framed when the run ended (counted in the lag, see above).
    audio_unsent: int
    finals_expected: int
    finals_received: int
    #: Finals that never came (counted in the latency, see above).
    finals_missing: int
    sessions_failed: int
    server_cpu: float
    #: The part of ``server_cpu`` in the servers' main threads (event loops).
    server_loop_cpu: float
    #: Shares of the wall time the servers' event loops waited for a core, and
    #: were not runnable at all (see :class:`benchmarks.servers.CpuMeter`);
    #: None without the kernel's scheduler statistics.
    server_loop_waiting: float | None
    server_loop_asleep: float | None
    #: The same three over the opening: from the first session's start until
    #: half a second after the last one's (the ramp's burst of stream opens,
    #: where a loaded server's worst second is).
    opening_server_cpu: float
    opening_loop_cpu: float
    opening_loop_waiting: float | None
    #: Server CPU milliseconds per second of one streaming session: the cost
    #: that does not depend on what else the machine is doing.
    server_cpu_ms_per_session_s: float
    client_cpu: float
    other_cpu: float
    peak_rss_mib: float
    first_error: str | None
    passed: bool

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class _Session:
    """Callbacks and measurements of one real-time session."""

    __slots__ = (
        "completing_sent",
        "finals",
        "latencies",
        "status",
        "error",
        "ended",
        "splitter",
        "done",
    )

    def __init__(self, latencies: list[tuple[float, float]], done: asyncio.Future[None]) -> None:
        self.completing_sent: list[float] = []
        self.finals = 0
        self.latencies = latencies
        self.status = 0
        self.error: str | None = None
        self.ended = False
        self.splitter = FrameSplitter()
        self.done = done

    def on_response(self, status: int) -> None:
        self.status = status
        if status != 200:
            self.error = f"HTTP {status}"

    def on_data(self, data: bytes) -> None:
        now = time.monotonic()
        for message in self.splitter.feed(data):
            if is_final(message):
                k = self.finals
                self.finals += 1
                if k < len(self.completing_sent):
                    sent = self.completing_sent[k]
                    self.latencies.append((sent, now - sent))
            elif is_exception(message) and self.error is None:
                self.error = "in-stream exception: " + bytes(message[-200:]).decode(
                    errors="replace"
                )

    def on_end(self) -> None:
        self.ended = True
        if not self.done.done():
            self.done.set_result(None)

    def on_reset(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        if not self.done.done():
            self.done.set_result(None)

    def completing_chunk_sent(self, at: float) -> None:
        self.completing_sent.append(at)


def _record_lag(lags: list[float], index: int, scheduled: float, at: float) -> None:
    lags[index] = at - scheduled


async def run_realtime(
    server: ServerProcess | Sequence[ServerProcess],
    *,
    sessions: int,
    audio_seconds: int,
    connections: int,
    transport: str = "h2c",
    stagger: float = 1.0,
    grace: float = 10.0,
    binary: bool = False,
) -> RealtimeResult:
    """Run ``sessions`` real-time sessions of ``audio_seconds`` each; return the measurements.

    ``audio_seconds`` must be a whole number (one segment per second); session
    starts are spread over ``stagger`` seconds (the ramp). The run
    ends at most ``grace`` seconds after the last scheduled send. Given several
    server processes, connections go to them in turn and their CPU and RSS add up
    (what a multi-process emulator would use). ``binary`` sends the audio as
    binaryAudioEvents.
    """
    group = [server] if isinstance(server, ServerProcess) else list(server)
    kind = group[0].kind if len(group) == 1 else f"{group[0].kind} x{len(group)}"
    chunks = int(round(audio_seconds / CHUNK_SECONDS))
    config = configuration_frame(counter=0)
    audio = audio_frames(chunks, first_counter=1, binary=binary)
    tail = end_of_session_frame(counter=chunks + 1) + end_of_stream_frame(counter=chunks + 2)
    scheme = "https" if transport == "tls" else "http"
    conns: list[ClientConnection] = []
    for n in range(max(connections, len(group))):
        target = group[n % len(group)]
        tls = client_ssl_context(target.ca_file) if transport == "tls" else None
        port = target.tls_port if transport == "tls" else target.h2c_port
        conns.append(await connect("127.0.0.1", port, tls=tls))
    connections = len(conns)
    loop = asyncio.get_running_loop()
    # (when the completing audio event was framed, latency of its final)
    latencies: list[tuple[float, float]] = []
    # Each audio event's lag, by session and step; NaN until it is framed.
    lags: list[float] = [math.nan] * (sessions * chunks)
    state = [_Session(latencies, loop.create_future()) for _ in range(sessions)]
    stream_ids = [0] * sessions
    t0 = time.monotonic() + 0.2
    starts = [t0 + stagger * i / sessions for i in range(sessions)]
    # (due time, session index, step): step 0 opens the stream and sends the
    # configuration, step j in 1..chunks sends audio chunk j (and, for the last,
    # END_OF_SESSION, the final envelope and END_STREAM).
    heap: list[tuple[float, int, int]] = [(starts[i], i, 0) for i in range(sessions)]
    heapq.heapify(heap)
    last_send = t0 + stagger + audio_seconds
    deadline = last_send + grace

    # CPU is measured while every session streams: after the last start, before
    # the first end. The servers' CPU is also measured over the opening: from
    # the first start until that window begins.
    server_meters = [CpuMeter(member.pid) for member in group]
    opening_meters = [CpuMeter(member.pid) for member in group]
    client_meter = ClientMeter()
    machine = MachineMeter()
    meters = (*server_meters, client_meter, machine)
    rss_peak = 0
    window_begin = t0 + stagger + 0.5
    window_end = t0 + audio_seconds
    # The metering phases: when each begins, the meters it stops and those it starts.
    phases: list[tuple[float, Sequence[Any], Sequence[Any]]] = [
        (t0, (), opening_meters),
        (window_begin, opening_meters, meters),
        (window_end, meters, ()),
    ]
    metering: Sequence[Any] = ()  # the meters running
    first_error: str | None = None

    async def sample_rss() -> None:
        nonlocal rss_peak
        from .servers import rss_bytes

        while True:
            try:
                rss_peak = max(rss_peak, sum(rss_bytes(member.pid) for member in group))
            except (OSError, RuntimeError):
                return
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_rss())
    try:
        while heap:
            now = time.monotonic()
            if now > deadline:
                break
            while phases and now >= phases[0][0]:
                _, stopping, starting = phases.pop(0)
                for meter in stopping:
                    meter.stop()
                for meter in starting:
                    meter.start()
                metering = starting
            due = heap[0][0]
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while heap and heap[0][0] <= now:
                scheduled, i, step = heapq.heappop(heap)
                conn = conns[i % connections]
                session = state[i]
                if step == 0:
                    headers = request_headers(
                        new_session_id(), scheme=scheme, authority=conn.authority
                    )
                    try:
                        stream_ids[i] = conn.start(headers, session)
                    except Exception as error:  # refused stream: counted as failed
                        session.on_reset(f"could not open a stream: {error}")
                        continue
                    conn.send(stream_ids[i], config)
                else:
                    stream_id = stream_ids[i]
                    conn.send(
                        stream_id,
                        audio[step - 1],
                        on_sent=partial(_record_lag, lags, i * chunks + step - 1, scheduled),
                    )
                    if step % _FRAMES_PER_SEGMENT == _FRAMES_PER_SEGMENT - 1:
                        # An empty write after the audio event: its callback runs
                        # when that event has been framed, like the lag's.
                        conn.send(stream_id, b"", on_sent=session.completing_chunk_sent)
                    if step == chunks:
                        conn.send(stream_id, tail, end_stream=True)
                if step < chunks:
                    heapq.heappush(heap, (starts[i] + (step + 1) * CHUNK_SECONDS, i, step + 1))
            for conn in conns:
                conn.flush()
        pending = [s.done for s in state if not s.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.1, deadline - time.monotonic()))
    finally:
        sampler.cancel()
        for meter in metering:  # the run ended early
            meter.stop()
        for conn in conns:
            conn.close()
    ended_at = time.monotonic()

    # What the run did not see counts as what it waited at least (see the module's
    # docstring): an audio event never framed, a final that never came.
    audio_unsent = 0
    for index, lag in enumerate(lags):
        if lag != lag:  # NaN
            i, step = divmod(index, chunks)
            lags[index] = max(0.0, ended_at - (starts[i] + (step + 1) * CHUNK_SECONDS))
            audio_unsent += 1
    finals_missing = 0
    for i, s in enumerate(state):
        for k in range(s.finals, audio_seconds):
            step = k * _FRAMES_PER_SEGMENT + _FRAMES_PER_SEGMENT - 1  # completes segment k
            sent = (
                s.completing_sent[k]
                if k < len(s.completing_sent)
                else starts[i] + step * CHUNK_SECONDS
            )
            latencies.append((sent, max(0.0, ended_at - sent)))
            finals_missing += 1

    finals_expected = sessions * audio_seconds
    finals_received = sum(min(s.finals, audio_seconds) for s in state)
    failed = 0
    for s in state:
        bad = s.error is not None or not s.ended or s.finals < audio_seconds
        failed += bad
        if bad and first_error is None:
            first_error = s.error or (
                f"{s.finals} of {audio_seconds} finals" + ("" if s.ended else ", unfinished")
            )
    lat_sorted = sorted(latency for _, latency in latencies)
    # Every session is mid-stream from one segment after the last start until
    # the first session's last audio event.
    steady_begin = t0 + stagger + _FRAMES_PER_SEGMENT * CHUNK_SECONDS
    steady_end = t0 + audio_seconds
    steady = sorted(latency for sent, latency in latencies if steady_begin <= sent <= steady_end)
    by_second: list[list[float]] = [[] for _ in range(int(stagger + audio_seconds) + 2)]
    for sent, latency in latencies:
        by_second[min(max(int(sent - t0), 0), len(by_second) - 1)].append(latency)
    lag_sorted = sorted(lags) or [0.0]
    p99 = percentile(lat_sorted, 99) if lat_sorted else None
    lag_max = lag_sorted[-1]
    passed = (
        failed == 0
        and p99 is not None
        and p99 < LATENCY_TARGET_S
        and lag_max < LAG_TARGET_S
        and finals_received == finals_expected
    )

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    server_cpu = sum(meter.share for meter in server_meters)
    client_cpu = client_meter.share
    return RealtimeResult(
        server=kind,
        sessions=sessions,
        connections=connections,
        audio_seconds=audio_seconds,
        latency_p50_ms=ms(percentile(lat_sorted, 50)) if lat_sorted else None,
        latency_p99_ms=ms(p99),
        latency_max_ms=ms(lat_sorted[-1]) if lat_sorted else None,
        ramp_s=stagger,
        steady_p99_ms=ms(percentile(steady, 99)) if steady else None,
        steady_finals=len(steady),
        p99_ms_by_second=[ms(percentile(sorted(v), 99)) if v else None for v in by_second],
        lag_p50_ms=ms(percentile(lag_sorted, 50)) or 0.0,
        lag_p99_ms=ms(percentile(lag_sorted, 99)) or 0.0,
        lag_max_ms=ms(lag_max) or 0.0,
        audio_unsent=audio_unsent,
        finals_expected=finals_expected,
        finals_received=finals_received,
        finals_missing=finals_missing,
        sessions_failed=failed,
        server_cpu=round(server_cpu, 3),
        server_loop_cpu=round(sum(meter.main_share for meter in server_meters), 3),
        server_loop_waiting=summed([meter.main_waiting for meter in server_meters]),
        server_loop_asleep=summed([meter.main_asleep for meter in server_meters]),
        opening_server_cpu=round(sum(meter.share for meter in opening_meters), 3),
        opening_loop_cpu=round(sum(meter.main_share for meter in opening_meters), 3),
        opening_loop_waiting=summed([meter.main_waiting for meter in opening_meters]),
        server_cpu_ms_per_session_s=round(server_cpu / sessions * 1000, 3),
        client_cpu=round(client_cpu, 3),
        other_cpu=round(max(0.0, machine.busy - server_cpu - client_cpu), 3),
        peak_rss_mib=round(rss_peak / 2**20, 1),
        first_error=first_error,
        passed=passed,
    )
