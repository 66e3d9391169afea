"""App cost: the ASGI apps driven in-process, without HTTP/2 or sockets.

The emulator's app (taken from a real :func:`emulator.server.serve` through its
``ready`` callback, so it is built exactly as in production, background tasks
and all) and the baseline app each ingest whole sessions fed straight to their
ASGI ``receive``: one request message per input event, the way hypercorn hands
the SDK's DATA frames over. CPU time of this process per session is the cost of
the app layer alone; the bulk figures minus these are hypercorn's and h2's
share. Being single-process CPU time, it barely depends on other load on the
machine.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from . import servers
from .baseline import baseline_app
from .wire import (
    STREAM_PATH,
    audio_frames,
    configuration_frame,
    end_of_session_frame,
    end_of_stream_frame,
    new_session_id,
    request_headers,
)

__all__ = ["measure_app_cost"]

App = Callable[..., Awaitable[None]]


def _scope(session_id: str) -> dict[str, Any]:
    headers = [
        (name, value)
        for name, value in request_headers(session_id, scheme="http", authority="127.0.0.1")
        if not name.startswith(b":")
    ]
    headers.append((b"host", b"127.0.0.1"))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "2",
        "method": "POST",
        "scheme": "http",
        "path": STREAM_PATH,
        "raw_path": STREAM_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }


async def _session(app: App, frames: list[bytes]) -> tuple[int, int]:
    """Run one session through ``app``; return (HTTP status, response body bytes)."""
    index = 0
    status = 0
    received = 0

    async def receive() -> MutableMapping[str, Any]:
        nonlocal index
        if index < len(frames):
            index += 1
            return {"type": "http.request", "body": frames[index - 1], "more_body": True}
        if index == len(frames):
            index += 1
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # nothing more will come: like hypercorn, wait
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, received
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            received += len(message.get("body", b""))

    await app(_scope(new_session_id()), receive, send)
    return status, received


def session_frames(*, audio_seconds: float = 10.0, binary: bool = False) -> list[bytes]:
    """One session's request frames: configuration, 100 ms audio events, END_OF_SESSION
    and the final empty envelope (``binary``: the audio as binaryAudioEvents)."""
    chunks = int(round(audio_seconds * 10))
    frames = [configuration_frame(counter=0), *audio_frames(chunks, binary=binary)]
    frames += [end_of_session_frame(counter=chunks + 1), end_of_stream_frame(counter=chunks + 2)]
    return frames


async def _emulator_app_running(
    state_dir: Path,
    ready: asyncio.Future[Any],
    stop: asyncio.Event,
    *,
    fixtures: Path | None = None,
    scenario: str | None = None,
    post_stream_delay: float | None = None,
) -> None:
    from emulator.server import Settings, serve

    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=state_dir,
        log_level="warning",
        fixtures=fixtures,
    )
    if scenario is not None:
        settings.scenario = scenario
    if post_stream_delay is not None:
        settings.post_stream_delay = post_stream_delay
    await serve(settings, shutdown=stop, ready=lambda running: ready.set_result(running.app))


async def _settled(backend: Any) -> None:
    """Wait until the work the sessions left behind is done: their post-stream
    artifacts, their rows and the journal's writes. It runs in other threads
    after the last session returns; timing stopped before it left about a
    third of the emulator's cost out."""
    from emulator.journal import Journal

    deadline = time.monotonic() + 60
    while backend._post_tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    backend.flush_saves()
    await asyncio.to_thread(Journal.wait_written)


async def _measure(
    kind: str, sessions: int, audio_seconds: float, binary: bool = False
) -> dict[str, object]:
    frames = session_frames(audio_seconds=audio_seconds, binary=binary)
    with tempfile.TemporaryDirectory(prefix="bench-app-", dir=servers.state_parent()) as tmp:
        stop = asyncio.Event()
        server_task = None
        if kind == "emulator":
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            # Post-stream actions at once, so that their cost is counted with
            # the sessions that caused it (see _settled).
            server_task = asyncio.create_task(
                _emulator_app_running(Path(tmp), ready, stop, post_stream_delay=0.0)
            )
            app = await asyncio.wait_for(ready, 30)
        else:
            app = baseline_app()
        try:
            status, _ = await _session(app, frames)  # warm-up
            if status != 200:
                raise RuntimeError(f"{kind} app answered HTTP {status}")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(sessions):
                await _session(app, frames)
            if kind == "emulator":
                await _settled(app.backend)
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
        finally:
            stop.set()
            if server_task is not None:
                await asyncio.wait_for(server_task, 30)
    per_session = cpu / sessions
    return {
        "server": kind,
        "audio_events": "binary" if binary else "json",
        "sessions": sessions,
        "cpu_ms_per_session": round(per_session * 1000, 3),
        "us_per_input_event": round(per_session / len(frames) * 1e6, 1),
        "sessions_per_cpu_s": round(1 / per_session, 1),
        "wall_s": round(wall, 2),
    }


def measure_app_cost(
    *, sessions: int = 100, audio_seconds: float = 10.0, binary: bool = False
) -> list[dict[str, object]]:
    """CPU cost per session of the baseline and the emulator app, without HTTP/2;
    ``binary`` sends the audio as binaryAudioEvents."""
    return [
        asyncio.run(_measure(kind, sessions, audio_seconds, binary))
        for kind in ("baseline", "emulator")
    ]
