"""Shared state: what a ``--workers`` emulator would pay per session to share it.

One process misses the bulk target (see README "What the targets would take").
Several processes without shared state were measured (``--bulk-processes``,
``--rt-processes``); what a real multi-process mode adds is the state they
would share: the session registry, the rules (their use counts and draws),
quotas and resources, owned by one process and asked by the workers. A
session asks it twice: when its stream opens (its ids against the registry and
resources, the rule match, the quota, the row) and when it ends (status,
progress, counts).

Measured here, in CPU time:

* **round trip**: a request of a stream's opening (its ids and headers, as
  JSON, ~300 bytes) and an answer (its record, ~200 bytes), one JSON line each
  way over a Unix socket with asyncio streams, 16 connections in flight, to an
  owner process that only answers: the asking process's CPU and the owner's,
  per round trip;
* **bookkeeping**: what the owner would do per session, measured on the
  emulator's own :class:`~emulator.backend.Backend`: the rule match, the
  stream's opening (registry entry, journal entries, row), a session of no
  audio paused by its input's end, and its closing (row), rows written.

The estimate: a worker pays two round trips a session, the owner two round
trips and the bookkeeping; with a bulk run's CPU per session (from the bulk
section, when it ran) the worker's share, and the owner's cores at 1,000
sessions a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from . import servers

__all__ = ["measure_shared_state"]

#: A stream's opening as a worker would ask the owner.
_REQUEST = {
    "op": "open",
    "sessionId": "0f8fad5b-d9cb-469f-a165-70867728950e",
    "domainId": "dom-0123456789abcdefghij",
    "subscriptionId": "sub-0123456789abcdefghijk",
    "languageCode": "en-US",
    "mediaSampleRateHertz": 16000,
    "mediaEncoding": "pcm",
    "accessKey": "AKIDEXAMPLE",
    "requestId": "6a1c7e4e-2f7b-4a8e-9c1e-6d9f5b0f3e11",
}
#: The owner's answer: the record a worker continues from.
_REPLY = {
    "seq": 123456,
    "status": "IN_PROGRESS",
    "streams": 1,
    "ruleId": None,
    "progress": {"audioSeconds": 0.0, "nextSegment": 0},
    "journal": "/state/sessions/dom-0123456789abcdefghij/sub-0123456789abcdefghijk/x",
}

#: The owner stand-in: answers each request line with the record; ``cpu`` with its CPU seconds.
_OWNER = """
import asyncio, json, sys, time
REPLY = (json.dumps(%r) + "\\n").encode()
async def main(path):
    async def handle(reader, writer):
        while line := await reader.readline():
            if line == b"cpu\\n":
                writer.write(f"{time.process_time()}\\n".encode())
            else:
                json.loads(line)
                writer.write(REPLY)
            await writer.drain()
    server = await asyncio.start_unix_server(handle, path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main(sys.argv[1]))
"""


async def _round_trips(path: str, count: int, connections: int) -> tuple[float, float]:
    """Seconds of this process's CPU and of the owner's, ``count`` round trips."""
    pairs = [await asyncio.open_unix_connection(path) for _ in range(connections)]
    request = (json.dumps(_REQUEST) + "\n").encode()

    async def asker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(n):
            writer.write(request)
            await writer.drain()
            json.loads(await reader.readline())

    async def owner_cpu() -> float:
        reader, writer = pairs[0]
        writer.write(b"cpu\n")
        await writer.drain()
        return float(await reader.readline())

    share = count // connections
    await asyncio.gather(*(asker(r, w, 20) for r, w in pairs))  # warm-up
    before = await owner_cpu()  # its start-up and the warm-up left out
    started = time.process_time()
    await asyncio.gather(*(asker(r, w, share) for r, w in pairs))
    asking = time.process_time() - started
    owner = await owner_cpu() - before
    for _, writer in pairs:
        writer.close()
    return asking / (share * connections), owner / (share * connections)


def _rpc(count: int, connections: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        path = os.path.join(tmp, "owner.sock")
        owner = subprocess.Popen(
            [sys.executable, "-c", _OWNER % (_REPLY,), path],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert owner.stdout is not None
            if owner.stdout.readline().strip() != "ready":
                raise RuntimeError("the owner stand-in did not start")
            return asyncio.run(_round_trips(path, count, connections))
        finally:
            owner.kill()
            owner.wait()


def _bookkeeping(sessions: int) -> float:
    """CPU seconds per session of the owner's part, on the emulator's Backend."""
    from emulator.backend import Backend
    from emulator.journal import Journal
    from emulator.validation import StreamRequest

    async def run(state: Path) -> float:
        backend = Backend(
            scenarios={}, state_dir=state, post_stream_delay=3600.0, retention=sessions + 10
        )
        backend.start()
        requests = [
            StreamRequest(
                session_id=str(uuid.UUID(int=n, version=4)),
                domain_id=_REQUEST["domainId"],  # type: ignore[arg-type]
                subscription_id=_REQUEST["subscriptionId"],  # type: ignore[arg-type]
                language_code="en-US",
                sample_rate=16000,
                media_encoding="pcm",
            )
            for n in range(1, sessions + 1)
        ]
        try:
            started = time.process_time()
            for request in requests:
                rule = backend.match_rule(request)
                record = backend.open_stream(request, request_id=_REQUEST["requestId"], rule=rule)
                session = backend.new_session(record, request, rule=rule, send=lambda event: None)
                session.input_closed()
                backend.close_stream(record)
            backend.flush_saves()
            Journal.wait_written()
            return (time.process_time() - started) / sessions
        finally:
            backend.close()

    with tempfile.TemporaryDirectory(prefix="bench-shared-", dir=servers.state_parent()) as tmp:
        return asyncio.run(run(Path(tmp)))


def measure_shared_state(
    *,
    round_trips: int = 20_000,
    sessions: int = 2_000,
    bulk_cpu_ms: dict[str, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Measure a round trip and the owner's bookkeeping; estimate what they cost
    a ``--workers`` emulator.

    ``bulk_cpu_ms`` is the bulk section's median CPU per session, by transport
    and server (``{"h2c": {"baseline": ms, "emulator": ms}}``): with it, per
    transport, the share of a worker's session the round trips take, and the
    bulk ratio K workers would reach, each with a core of its own (the owner
    and the load generator on others), against the one-process baseline:
    K x baseline CPU / (emulator CPU + the round trips).
    """
    asking, answering = _rpc(round_trips, connections=16)
    bookkeeping = _bookkeeping(sessions)
    worker_us = 2 * asking * 1e6
    owner_us = 2 * answering * 1e6 + bookkeeping * 1e6
    out: dict[str, Any] = {
        "round_trips": round_trips,
        "sessions": sessions,
        "round_trip_asker_us": round(asking * 1e6, 1),
        "round_trip_owner_us": round(answering * 1e6, 1),
        "bookkeeping_us_per_session": round(bookkeeping * 1e6, 1),
        "worker_us_per_session": round(worker_us, 1),
        "owner_us_per_session": round(owner_us, 1),
        "owner_cores_at_1000_sessions_s": round(owner_us * 1000 / 1e6, 3),
        "estimates": {},
    }
    for transport, cpu in (bulk_cpu_ms or {}).items():
        base, emu = cpu.get("baseline"), cpu.get("emulator")
        if not base or not emu:
            continue
        per_worker = base / (emu + worker_us / 1000)
        ratios = {workers: round(workers * per_worker, 3) for workers in (1, 2, 3, 4)}
        out["estimates"][transport] = {
            "baseline_cpu_ms": base,
            "emulator_cpu_ms": emu,
            "worker_share": round(worker_us / 1000 / (emu + worker_us / 1000), 4),
            "ratio_by_workers": ratios,
            "workers_for_0_7": next((k for k, r in ratios.items() if r >= 0.7), None),
        }
    return out
