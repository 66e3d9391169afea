"""The server process settles its garbage collector once ready; an embedded one does not."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

from emulator import collector, server
from emulator.server import RunningServer, Settings

from .support import running_emulator


def _running(app: object) -> RunningServer:
    """What serve() hands ``ready``, for a stand-in serve() that serves nothing."""
    return RunningServer(
        endpoint_url="https://x", h2c_url="http://x", ca_file=None, port=1, h2c_port=2, app=app
    )


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
        ready(_running(app))
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
        frozen_at_exit = gc.get_freeze_count()
    finally:
        collector.unsettle(thresholds)  # give the test process its collector back
    assert frozen_at_exit == 0  # the exit's collection sees everything
    assert seen[0] == (before, False)
    assert seen[1][0] > before  # start-up's objects are out of later collections
    assert seen[1][1]  # and so will be what survives each collection
    # Young collections less often; the older generations as they were.
    assert settled == (collector.YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    # The full collections' task ran with the backend's stream count, and
    # ended with the server.
    assert idle_checks == [idle]
    assert len(tasks) == 1 and tasks[0].cancelled()


def test_full_collections_that_fail_say_so_in_the_log(monkeypatch, tmp_path, caplog):
    async def failing(is_idle, **_):
        raise RuntimeError("the stream count broke")

    async def serve(settings, *, shutdown, ready):
        ready(_running(SimpleNamespace(backend=SimpleNamespace(active=0))))
        await asyncio.sleep(0.01)  # the task runs, and fails

    monkeypatch.setattr(server, "serve", serve)
    monkeypatch.setattr(collector, "collect_when_idle", failing)
    thresholds = gc.get_threshold()
    try:
        assert server.run(Settings(state_dir=tmp_path, log_level="warning")) == 0
    finally:
        collector.unsettle(thresholds)
    (record,) = [r for r in caplog.records if "full garbage collections stopped" in r.message]
    assert record.levelname == "ERROR" and "the stream count broke" in record.message


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture
def settled():
    """The server's settings, with no automatic collection: the tests' own
    ``gc.collect()`` calls are the only ones, and still run the freezer."""
    thresholds = gc.get_threshold()
    collector.settle()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
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


def test_one_idle_check_between_streams_is_not_enough(settled):
    # A client running its streams one after another: every other check
    # falls in a gap. The full collection's pause would land on its next open.
    checks = itertools.cycle([True, False])
    ref = _full_collections_for_a_while(lambda: next(checks))
    assert ref() is not None
    checks = itertools.cycle([True, True, False])
    ref = _full_collections_for_a_while(lambda: next(checks))
    assert ref() is None


def test_full_collections_run_under_load_after_the_longest_wait(settled):
    now = [0.0]

    def clock() -> float:
        now[0] += collector.LONGEST_WITHOUT_FULL_COLLECTION / 3
        return now[0]

    ref = _full_collections_for_a_while(lambda: False, clock=clock)
    assert ref() is None


def test_a_full_collection_runs_once_for_the_collections_before_it(settled, monkeypatch):
    calls: list[int] = []

    def counted() -> int:
        calls.append(1)
        return full_collection()  # the real one: its own collection runs the freezer

    full_collection = collector.full_collection
    monkeypatch.setattr(collector, "full_collection", counted)
    _full_collections_for_a_while(lambda: True, plant=False)
    assert calls == []  # no collection since the task started
    _full_collections_for_a_while(lambda: True)
    assert calls == [1]  # once, not once a period after its own freeze


def test_an_emulator_embedded_in_a_test_process_leaves_its_collector_alone(tmp_path: Path):
    before = gc.get_freeze_count()
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path)
    thresholds = gc.get_threshold()
    with running_emulator(settings):
        assert gc.get_freeze_count() == before
        assert gc.get_threshold() == thresholds


def test_a_finished_session_leaves_no_reference_cycle_behind(tmp_path: Path):
    # What makes freezing survivors safe (emulator.collector): a
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


#: A client process that opens two SDK streams sending audio, says so, and
#: waits to be killed.
_DOOMED_CLIENT = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from tests.support import audio_event, configuration_event, new_session_id, pcm_tone
from emulator.sdk import make_client
from aws_sdk_connecthealth import models as m

async def one(client):
    stream = await client.start_medical_scribe_listening_session(
        input=m.StartMedicalScribeListeningSessionInput(
            session_id=new_session_id(), domain_id={domain!r}, subscription_id={sub!r},
            language_code="en-US", media_sample_rate_hertz=16000, media_encoding="pcm"))
    await stream.input_stream.send(configuration_event())
    await stream.input_stream.send(audio_event(pcm_tone(0.2)))
    print("open", flush=True)
    while True:
        await stream.input_stream.send(audio_event(pcm_tone(0.1)))
        await asyncio.sleep(0.05)

async def main():
    client = await make_client(endpoint_url={url!r}, ca_file={ca!r})
    await asyncio.gather(one(client), one(client))

asyncio.run(main())
"""


def _connection_objects(objects: list[object]) -> list[object]:
    """The objects of an HTTP/2 connection's stack among ``objects``."""
    prefixes = ("emulator.", "hypercorn.", "h2.", "hpack.", "asyncio.sslproto", "asyncio.streams")
    return [o for o in objects if type(o).__module__.startswith(prefixes)]


def test_a_closed_connection_is_freed_at_once_and_leaves_no_cycle(tmp_path: Path):
    """A connection was a reference cycle (hypercorn's send callback, h2's table
    of bound methods), which the server process's collector frees only when it
    runs a full collection: up to 300 s under load, each TLS connection with its
    read buffer (a review's busy emulator grew by 170 MB). And one whose
    client was killed lingered, its keep-alive timer restarted by its streams'
    end, for --idle-timeout more. Now it is freed by reference counting as it
    closes, after a clean close through the SDK and after its client is killed."""
    import subprocess
    import sys
    import time

    from .support import DOMAIN_ID, SUBSCRIPTION_ID, new_session_id, pcm_tone, run_session

    settings = Settings(port=0, h2c_port=0, state_dir=tmp_path, log_level="warning")
    with running_emulator(settings) as running:

        async def clean() -> None:
            from emulator.sdk import make_client

            client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
            async with client:
                result = await run_session(client, new_session_id(), audio=pcm_tone(0.3))
                assert result.error is None, result.error

        asyncio.run(clean())  # warm: first-use caches are not garbage
        time.sleep(0.3)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            asyncio.run(clean())
            code = _DOOMED_CLIENT.format(
                repo=str(Path(__file__).parents[1]),
                domain=DOMAIN_ID,
                sub=SUBSCRIPTION_ID,
                url=running.endpoint_url,
                ca=str(running.ca_file),
            )
            with subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
            ) as doomed:
                try:
                    assert doomed.stdout is not None
                    for _ in range(2):
                        assert doomed.stdout.readline().startswith("open")
                    time.sleep(0.3)
                finally:
                    doomed.kill()
            deadline = time.monotonic() + 5  # --idle-timeout is 15 s
            held = -1
            while held and time.monotonic() < deadline:
                time.sleep(0.1)
                held = sum(1 for o in gc.get_objects() if type(o).__name__ == "QuietTCPServer")
            assert held == 0, f"{held} closed connection(s) still held"
            gc.collect()
            assert _connection_objects(gc.garbage) == []
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
