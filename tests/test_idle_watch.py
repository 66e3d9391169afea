"""The stream's idle timeout: one timer per stream instead of one per message."""

from __future__ import annotations

import asyncio

import pytest

from emulator.stream import _IdleWatch


def _ticker(interval: float):
    count = 0

    async def receive() -> dict[str, object]:
        nonlocal count
        await asyncio.sleep(interval)
        count += 1
        return {"type": "http.request", "body": b"x", "more_body": True, "n": count}

    return receive


async def _never() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_steady_input_outlasting_the_timeout_is_never_timed_out() -> None:
    watch = _IdleWatch(0.15)
    receive = _ticker(0.04)
    numbers = [(await watch.receive(receive))["n"] for _ in range(15)]  # ~0.6 s, 4x the timeout
    watch.stop()
    assert numbers == list(range(1, 16))


async def test_silence_longer_than_the_timeout_raises_timeout_error() -> None:
    watch = _IdleWatch(0.1)
    await watch.receive(_ticker(0.01))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await watch.receive(_never)
    assert loop.time() - started >= 0.1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our own cancel was taken back
    watch.stop()


async def test_time_between_receives_does_not_count() -> None:
    # Like wait_for around each receive: a slow send between two receives is no idleness.
    watch = _IdleWatch(0.1)
    await watch.receive(_ticker(0.01))
    await asyncio.sleep(0.25)  # e.g. blocked sending to a client that does not read
    message = await watch.receive(_ticker(0.02))
    watch.stop()
    assert message["type"] == "http.request"


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    watch = _IdleWatch(5.0)

    async def pump() -> None:
        await watch.receive(_never)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watch.stop()


async def test_zero_means_no_limit() -> None:
    watch = _IdleWatch(0)
    assert (await watch.receive(_ticker(0.01)))["n"] == 1
    watch.stop()
