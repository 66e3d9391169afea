"""Small measuring helpers: percentiles and whole-machine CPU use."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

__all__ = ["percentile", "MachineMeter", "ClientMeter", "load_average"]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (nearest rank) of already sorted, non-empty values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    # The smallest rank with at least pct% of the values at or below it. (It was
    # round(x + 0.5), which rounds halves to even: the 99th of 100 gave the 100th.)
    rank = max(1, min(len(sorted_values), math.ceil(pct * len(sorted_values) / 100 - 1e-9)))
    return sorted_values[rank - 1]


def _busy_and_total() -> tuple[int, int]:
    """Busy and total clock ticks of all CPUs.

    Busy is user + nice + system time: interrupt and softirq time is left out,
    because loopback networking is mostly softirq work done for the very
    processes under test, not by other processes.
    """
    with open("/proc/stat", "rb") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    busy = fields[0] + fields[1] + fields[2]
    total = sum(fields[:8])  # guest time is already part of user time
    return busy, total


class MachineMeter:
    """Cores busy on the whole machine between :meth:`start` and :meth:`stop`.

    ``busy`` is in cores (2.0 = both cores of a 2-core machine fully used), so
    that subtracting the server's and the load generator's shares leaves what
    other processes took: a benchmark on a shared machine must say so.
    """

    def __init__(self) -> None:
        self.busy = 0.0
        self._start = (0, 0)
        self._wall = 0.0

    def start(self) -> None:
        self._start = _busy_and_total()
        self._wall = time.monotonic()

    def stop(self) -> float:
        busy, _total = _busy_and_total()
        wall = time.monotonic() - self._wall
        ticks = _clock_ticks()
        self.busy = (busy - self._start[0]) / ticks / wall if wall > 0 else 0.0
        return self.busy


class ClientMeter:
    """CPU share of this process between :meth:`start` and :meth:`stop` (1.0 = one core)."""

    def __init__(self) -> None:
        self.share = 0.0
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def stop(self) -> float:
        wall = time.monotonic() - self._wall
        self.share = (time.process_time() - self._cpu) / wall if wall > 0 else 0.0
        return self.share


def _clock_ticks() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    import os

    return os.getloadavg()
