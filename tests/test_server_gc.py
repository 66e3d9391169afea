"""The server process settles its garbage collector once ready; an embedded one does not."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

from emulator import collector, server
from emulator.server import RunningServer, Settings

from .support import running_emulator


@pytest.mark.parametrize(
    ("app", "idle"),
    [
        (SimpleNamespace(backend=SimpleNamespace(active=0)), True),
        (SimpleNamespace(backend=SimpleNamespace(active=2)), False),
        (SimpleNamespace(), False),  # an app that does not count its streams
    ],
    ids=["no-stream-open", "streams-open", "no-count"],
)
def test_the_server_process_freezes_what_start_up_made_once_it_is_ready(
    monkeypatch, tmp_path, app, idle
):
    seen: list[tuple[int, bool]] = []
    tasks: list[asyncio.Task[None]] = []
    idle_checks: list[bool] = []

    async def fake_full_collections(is_idle, **_):
        idle_checks.append(is_idle())
        await asyncio.Event().wait()  # until cancelled

    async def serve(settings, *, shutdown, ready):
        seen.append((gc.get_freeze_count(), collector.FREEZER in gc.callbacks))
        ready(
            RunningServer(
                endpoint_url="https://x",
                h2c_url="http://x",
                ca_file=None,
                port=1,
                h2c_port=2,
                app=app,
            )
        )
        seen.append((gc.get_freeze_count(), collector.FREEZER in gc.callbacks))
        tasks.extend(t for t in asyncio.all_tasks() if t is not asyncio.current_task())
        await asyncio.sleep(0)

    monkeypatch.setattr(server, "serve", serve)
    monkeypatch.setattr(collector, "collect_when_idle", fake_full_collections)
    before = gc.get_freeze_count()
    thresholds = gc.get_threshold()
    try:
        assert server.run(Settings(state_dir=tmp_path, log_level="warning")) == 0
        settled = gc.get_threshold()
    finally:
        collector.unsettle(thresholds)  # give the test process its collector back
    assert seen[0] == (before, False)
    assert seen[1][0] > before  # start-up's objects are out of later collections
    assert seen[1][1]  # and so will be what survives each collection
    # Young collections less often; the older generations as they were.
    assert settled == (server.YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    # The full collections' task ran with the backend's stream count, and
    # ended with the server.
    assert idle_checks == [idle]
    assert len(tasks) == 1 and tasks[0].cancelled()


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture
def settled():
    thresholds = gc.get_threshold()
    collector.settle()
    try:
        yield
    finally:
        collector.unsettle(thresholds)


def test_what_survives_a_collection_is_frozen_and_still_freed_by_reference_count(settled):
    freezes = collector.FREEZER.freezes
    kept = [[index] for index in range(1000)]
    gc.collect(0)
    assert collector.FREEZER.freezes == freezes + 1
    scanned = {id(obj) for obj in gc.get_objects()}  # every generation, not the frozen
    assert not any(id(item) in scanned for item in kept) and id(kept) not in scanned
    assert gc.is_tracked(kept[0])
    probe = _Node()
    ref = weakref.ref(probe)
    gc.collect(0)
    del probe  # frozen, and freed by its reference count all the same
    assert ref() is None


def test_a_cycle_garbage_only_after_it_was_frozen_waits_for_a_full_collection(settled):
    held, ref = _cycle()
    gc.collect(0)  # held: it survives, and is frozen
    del held
    gc.collect()  # what the collector does by itself no longer reaches it
    assert ref() is not None
    assert collector.full_collection() >= 2
    assert ref() is None


def _frozen_garbage_cycle() -> weakref.ref[_Node]:
    held, ref = _cycle()
    gc.collect(0)  # a collection: the cycle, still held, is frozen
    del held
    return ref


def _full_collections_for_a_while(is_idle, *, clock=None, plant: bool = True):
    """Run collect_when_idle for a few of its periods, a frozen cycle turned
    garbage after it started (when ``plant``); return the cycle's weakref."""

    async def main() -> weakref.ref[_Node] | None:
        options = {"period": 0.001}
        if clock is not None:
            options["clock"] = clock
        task = asyncio.create_task(collector.collect_when_idle(is_idle, **options))
        await asyncio.sleep(0)  # the task takes its starting point
        ref = _frozen_garbage_cycle() if plant else None
        for _ in range(10):
            await asyncio.sleep(0.003)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return ref

    return asyncio.run(main())


def test_full_collections_wait_for_no_stream_open(settled):
    ref = _full_collections_for_a_while(lambda: False)
    assert ref() is not None  # streams open all along
    ref = _full_collections_for_a_while(lambda: True)
    assert ref() is None


def test_full_collections_run_under_load_after_the_longest_wait(settled):
    now = [0.0]

    def clock() -> float:
        now[0] += collector.LONGEST_WITHOUT_FULL_COLLECTION / 3
        return now[0]

    ref = _full_collections_for_a_while(lambda: False, clock=clock)
    assert ref() is None


def test_no_full_collection_without_a_collection_since_the_last(settled, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(collector, "full_collection", lambda: calls.append(1) or 0)
    gc.disable()  # no collection but the test's own
    try:
        _full_collections_for_a_while(lambda: True, plant=False)
        assert calls == []
        _full_collections_for_a_while(lambda: True)
        assert calls == [1]  # once, not once a period
    finally:
        gc.enable()


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
