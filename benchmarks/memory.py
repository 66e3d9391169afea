"""Memory: server RSS per idle and per active session, as a delta over N sessions.

Each figure comes from a fresh server process: Python rarely gives memory
back, so a second measurement in the same process would see the first's
arenas. Before the baseline RSS is read, 0.3 s of back-to-back bulk sessions
(tens of them) warm the server up (imports, caches, the first connection),
and the suite waits past the emulator's post-stream delay, so that their
artifacts are written before, not during, the measurement.

* **idle**: N streams opened and configured (headers and the configuration
  event sent, HTTP 200 received), then nothing; RSS after they settle. Only
  streams answered 200 are idle sessions: a stream refused (a 402 past a
  limit) holds nothing, and counted it made the figure smaller. The figure
  holds only when all N were (``idle_open`` = N, else the target is missed).
* **active**: N sessions streaming real-time audio (see :mod:`benchmarks.realtime`);
  the peak RSS while they stream.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from emulator.server import Settings

from .bulk import run_bulk
from .h2conn import connect
from .realtime import run_realtime
from .servers import REALTIME_SCENARIO, ServerProcess, rss_bytes, running_server
from .wire import configuration_frame, new_session_id, request_headers

__all__ = ["measure_memory"]


class _Idle:
    __slots__ = ("status", "answered")

    def __init__(self, answered: asyncio.Event, counter: list[int]) -> None:
        self.status = 0
        self.answered = (answered, counter)

    def on_response(self, status: int) -> None:
        self.status = status
        event, counter = self.answered
        counter[0] += 1
        if counter[0] >= counter[1]:
            event.set()

    def on_reset(self, reason: str) -> None:
        if self.status == 0:  # refused before an answer: it is answered, not open
            self.on_response(-1)

    def on_data(self, data: bytes) -> None:
        pass

    def on_end(self) -> None:
        pass


async def _warm_up(server: ServerProcess) -> None:
    await run_bulk(server, transport="h2c", duration=0.3, warmup=0.0, connections=1, streams=1)
    # Their post-stream artifacts are written this long after they end.
    await asyncio.sleep(Settings().post_stream_delay + 0.5)


async def _idle_rss(server: ServerProcess, sessions: int, connections: int) -> tuple[int, int, int]:
    """Return (RSS before, RSS with ``sessions`` idle streams, streams open: answered 200)."""
    await _warm_up(server)
    before = rss_bytes(server.pid)
    conns = [await connect("127.0.0.1", server.h2c_port) for _ in range(connections)]
    answered = asyncio.Event()
    counter = [0, sessions]
    config = configuration_frame(counter=0)
    streams = [_Idle(answered, counter) for _ in range(sessions)]
    for i, idle in enumerate(streams):
        conn = conns[i % connections]
        headers = request_headers(new_session_id(), scheme="http", authority=conn.authority)
        stream_id = conn.start(headers, idle)
        conn.send(stream_id, config)
        if i % 50 == 49:
            for c in conns:
                c.flush()
            await asyncio.sleep(0)
    for conn in conns:
        conn.flush()
    try:
        await asyncio.wait_for(answered.wait(), 30)
    except TimeoutError:
        pass
    await asyncio.sleep(0.5)
    during = max(rss_bytes(server.pid) for _ in range(3))
    for conn in conns:
        conn.close()
    return before, during, sum(idle.status == 200 for idle in streams)


async def _active_rss(
    server: ServerProcess, sessions: int, connections: int, audio_seconds: int
) -> tuple[int, int, bool]:
    await _warm_up(server)
    before = rss_bytes(server.pid)
    result = await run_realtime(
        server, sessions=sessions, audio_seconds=audio_seconds, connections=connections
    )
    return before, int(result.peak_rss_mib * 2**20), result.sessions_failed == 0


def measure_memory(
    kind: str,
    *,
    sessions: int,
    connections: int = 4,
    audio_seconds: int = 4,
    fixtures: Path | None = None,
) -> dict[str, object]:
    """Measure ``kind``'s RSS per idle and per active session over ``sessions`` sessions.

    Returns KiB per session (``idle_kib_per_session``, ``active_kib_per_session``)
    and the RSS figures they come from, in MiB.
    """
    started = time.monotonic()
    with running_server(kind) as server:
        idle_before, idle_during, idle_open = asyncio.run(_idle_rss(server, sessions, connections))
    with running_server(
        kind, fixtures=fixtures, scenario=REALTIME_SCENARIO if fixtures else None
    ) as server:
        active_before, active_peak, active_ok = asyncio.run(
            _active_rss(server, sessions, connections, audio_seconds)
        )
    return {
        "server": kind,
        "sessions": sessions,
        "idle_open": idle_open,
        "idle_kib_per_session": round((idle_during - idle_before) / max(idle_open, 1) / 1024, 1),
        "active_kib_per_session": round((active_peak - active_before) / sessions / 1024, 1),
        "active_all_ok": active_ok,
        "rss_before_idle_mib": round(idle_before / 2**20, 1),
        "rss_idle_mib": round(idle_during / 2**20, 1),
        "rss_before_active_mib": round(active_before / 2**20, 1),
        "rss_active_peak_mib": round(active_peak / 2**20, 1),
        "seconds": round(time.monotonic() - started, 1),
    }
