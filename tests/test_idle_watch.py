"""The stream's idle timeout: one timer per stream instead of one per message.

Every test runs twice: through :meth:`_IdleWatch.receive`, and through the
steps the stream's pump takes inline (``begin``, ``await receive()``,
``timed_out`` on a cancel, ``since = None``).
"""

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


async def _inline(watch: _IdleWatch, receive):
    """What the pump does around ``receive()``, step for step."""
    watch.begin()
    try:
        return await receive()
    except asyncio.CancelledError:
        if not watch.timed_out():
            raise
        raise TimeoutError from None  # the pump fails the session here
    finally:
        watch.since = None


@pytest.fixture(params=["method", "inline"])
def via(request):
    """``await via(watch, receive)``: one receive, by the method or as the pump does it."""
    if request.param == "method":
        return lambda watch, receive: watch.receive(receive)
    return _inline


async def _never() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_steady_input_outlasting_the_timeout_is_never_timed_out(via) -> None:
    watch = _IdleWatch(0.15)
    receive = _ticker(0.04)
    numbers = [(await via(watch, receive))["n"] for _ in range(15)]  # ~0.6 s, 4x the timeout
    watch.stop()
    assert numbers == list(range(1, 16))


async def test_silence_longer_than_the_timeout_raises_timeout_error(via) -> None:
    watch = _IdleWatch(0.1)
    await via(watch, _ticker(0.01))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await via(watch, _never)
    assert loop.time() - started >= 0.1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # our own cancel was taken back
    watch.stop()


async def test_time_between_receives_does_not_count(via) -> None:
    # Like wait_for around each receive: a slow send between two receives is no idleness.
    watch = _IdleWatch(0.1)
    await via(watch, _ticker(0.01))
    await asyncio.sleep(0.25)  # e.g. blocked sending to a client that does not read
    message = await via(watch, _ticker(0.02))
    watch.stop()
    assert message["type"] == "http.request"


async def test_a_cancel_from_outside_stays_a_cancel(via) -> None:
    watch = _IdleWatch(5.0)

    async def pump() -> None:
        await via(watch, _never)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watch.stop()


async def test_zero_means_no_limit(via) -> None:
    watch = _IdleWatch(0)
    assert (await via(watch, _ticker(0.01)))["n"] == 1
    watch.stop()


async def test_a_cancellation_from_outside_in_the_same_step_wins(via) -> None:
    """The watch fires and, before the task runs again, someone else cancels it too
    (the client went away, the server stops): the task stays cancelled, not timed out."""
    watch = _IdleWatch(0.05)
    task = asyncio.ensure_future(via(watch, _never))
    await asyncio.sleep(0)
    assert watch.since is not None
    watch.since -= 1.0  # the timeout is long past
    assert watch._handle is not None
    watch._handle.cancel()
    watch._check()  # the watch fires now...
    task.cancel()  # ...and so does an outside cancel, before the task wakes
    with pytest.raises(asyncio.CancelledError):
        await task
    watch.stop()
