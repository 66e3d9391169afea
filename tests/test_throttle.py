"""The throttled log lines' counter (:class:`emulator.logs.Throttle`): what its
callers (failed accepts, retention drops, broken connections) rely on."""

from __future__ import annotations

import asyncio
import time

from emulator.logs import Throttle, left_out_text


def test_lines_within_the_interval_are_counted_for_the_next():
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.take() == 0
    now[0] = 4.0
    assert throttle.take() is None
    assert throttle.take(3) is None  # a line standing for three things
    now[0] = 10.0
    assert throttle.take() == 4
    assert left_out_text(4, throttle.interval) == (
        "; 4 more like it since the last such line (at most one every 10 s)"
    )


async def test_those_left_out_are_flushed_at_the_intervals_end_unless_a_line_said_them():
    flushed: list[int] = []
    throttle = Throttle(0.2, flush=flushed.append)
    assert throttle.take() == 0
    assert throttle.take(2) is None
    assert throttle.take() is None
    await asyncio.sleep(0.35)
    assert flushed == [3]  # once, by the timer, though nothing more came
    assert throttle.take() is None  # the flush was a line: the next is within its interval
    throttle.close()
    assert flushed == [3, 1]
    throttle.close()  # nothing left: nothing said
    assert flushed == [3, 1]


def test_without_a_loop_those_left_out_wait_for_the_close():
    flushed: list[int] = []
    throttle = Throttle(60.0, flush=flushed.append)
    throttle.take()
    throttle.take()
    assert flushed == []
    throttle.close()
    assert flushed == [1]


async def test_a_line_said_when_the_timer_is_late_cancels_it():
    """A busy loop let the interval pass before the timer ran: the line said then
    carries those left out, and the overdue timer then said the next one at once
    (two lines in the same instant)."""
    flushed: list[int] = []
    throttle = Throttle(0.2, flush=flushed.append)
    assert throttle.take() == 0
    assert throttle.take() is None  # a timer for the interval's end
    time.sleep(0.3)  # the loop busy past it: the timer has not run
    assert throttle.take() == 1
    assert throttle.take() is None  # within the new interval
    await asyncio.sleep(0.05)
    assert flushed == []  # no overdue timer said it at once
    await asyncio.sleep(0.3)
    assert flushed == [1]  # at the new interval's end
