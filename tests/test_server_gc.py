"""The server process settles its garbage collector once ready; an embedded one does not."""

from __future__ import annotations

import asyncio
import gc
import inspect
from pathlib import Path

from emulator import server
from emulator.server import RunningServer, Settings

from .support import running_emulator


def test_the_server_process_freezes_what_start_up_made_once_it_is_ready(monkeypatch, tmp_path):
    seen: list[int] = []

    async def serve(settings, *, shutdown, ready):
        seen.append(gc.get_freeze_count())
        ready(
            RunningServer(
                endpoint_url="https://x",
                h2c_url="http://x",
                ca_file=None,
                port=1,
                h2c_port=2,
                app=None,
            )
        )
        seen.append(gc.get_freeze_count())

    monkeypatch.setattr(server, "serve", serve)
    before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    try:
        assert server.run(Settings(state_dir=tmp_path, log_level="warning")) == 0
        settled = gc.get_threshold()
    finally:
        gc.unfreeze()  # give the test process its collector back
        gc.set_threshold(*thresholds)
    assert seen[0] == before
    assert seen[1] > before  # start-up's objects are out of later full collections
    # Young collections less often; the older generations as they were.
    assert settled == (server.YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])


def test_an_emulator_embedded_in_a_test_process_leaves_its_collector_alone(tmp_path: Path):
    before = gc.get_freeze_count()
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path)
    thresholds = gc.get_threshold()
    with running_emulator(settings):
        assert gc.get_freeze_count() == before
        assert gc.get_threshold() == thresholds


def test_a_finished_session_leaves_no_reference_cycle_behind(tmp_path: Path):
    # What makes rare young collections safe (settle_garbage_collector): a
    # session's objects are freed by reference counting when it ends, the
    # post-stream artifacts included, so the collector has nothing of them
    # to find.
    from benchmarks.app import _emulator_app_running, _session, session_frames

    async def main() -> list[object]:
        stop = asyncio.Event()
        ready: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            _emulator_app_running(tmp_path, ready, stop, post_stream_delay=0.0)
        )
        app = await ready
        frames = session_frames(audio_seconds=1.0)
        try:
            for _ in range(3):  # warm: first-use caches are not garbage
                assert (await _session(app, frames))[0] == 200
            await asyncio.sleep(0.3)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                for _ in range(20):
                    assert (await _session(app, frames))[0] == 200
                await asyncio.sleep(0.3)  # the post-stream jobs
                gc.collect()
                return [
                    obj
                    for obj in gc.garbage
                    if type(obj).__module__.startswith("emulator")
                    or (inspect.isfunction(obj) and obj.__module__.startswith("emulator"))
                    or (inspect.isframe(obj) and "/emulator/" in obj.f_code.co_filename)
                ]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
        finally:
            stop.set()
            await task

    assert asyncio.run(main()) == []
