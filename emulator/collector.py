"""The server process's garbage collector: frozen survivors, full collections when idle.

A finished session is freed by reference counting alone: it holds no reference
cycle, and neither does a closed connection (``tests/test_server_gc.py`` checks
both). So the cyclic collector has
nothing of the sessions to free, and its older generations only make it rescan
the live ones: with 2,000 real-time sessions opening in a second, a
generation-1 collection paused the event loop for 71-88 ms, most of a p99
budget of 100 ms, and a full collection scans every live session again.

What the server process does instead (``python -m emulator``, the image; never
a test process that embeds the emulator, which keeps its own settings):

- :func:`settle`: once ready, collect, then freeze what start-up built
  (modules, Faker's data, the app: they live as long as the process; with
  1,000 real-time sessions opening in a second, full collections paused the
  loop for 44-50 ms before, 16-18 ms after); young collections every
  :data:`YOUNG_COLLECTION_THRESHOLD` allocations.
- :class:`SurvivorFreezer`: after every collection, freeze what survived it.
  The collector's own collections then scan only the objects made since the
  one before (about 1 ms at the threshold, where the generation-1 collection
  above took 71-88 ms).
- :func:`collect_when_idle`: a cycle that becomes garbage after its objects
  were frozen waits for a full collection of everything (start-up's objects
  included), which runs when no stream is open (CI fleets pause between test
  files), or at the latest every :data:`LONGEST_WITHOUT_FULL_COLLECTION`
  seconds under uninterrupted load, and only when a collection has run (and
  frozen its survivors) since the last one. That one pauses the loop as a
  full collection always did: 69-83 ms with 1,000 streams open, 106-113 ms
  with 2,000, 134-136 ms with 3,000.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from .logs import get_logger

__all__ = [
    "YOUNG_COLLECTION_THRESHOLD",
    "LONGEST_WITHOUT_FULL_COLLECTION",
    "SurvivorFreezer",
    "FREEZER",
    "settle",
    "unsettle",
    "full_collection",
    "collect_when_idle",
]

log = get_logger("medscribe")

#: The server process's generation-0 threshold. With the survivors frozen, a
#: young collection scans what was made since the one before it, whatever the
#: threshold: 2,000 streams opened in a burst cost 27-31 ms of collections at
#: 5,000 and 30-35 ms at 20,000, with the longest pause 0.9-1.1 ms against
#: 3.0-3.4 ms. (Before the freezer: 100-110 ms, and one generation-1
#: collection of 69-78 ms.) Measured through ``gc.callbacks``.
YOUNG_COLLECTION_THRESHOLD = 5_000

#: Seconds of uninterrupted load after which a full collection runs anyway.
LONGEST_WITHOUT_FULL_COLLECTION = 300.0


class SurvivorFreezer:
    """A ``gc.callbacks`` entry that freezes what survived each collection.

    Frozen objects are still freed by reference counting; only the cyclic
    collector stops scanning them. ``freezes`` counts the collections
    followed by a freeze, so :func:`collect_when_idle` knows whether a
    frozen cycle could be waiting. (Not whether anything was frozen:
    ``gc.get_freeze_count()`` walks the whole frozen list.)
    """

    __slots__ = ("freezes",)

    def __init__(self) -> None:
        self.freezes = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            gc.freeze()  # moves the generations' lists over, in constant time
            self.freezes += 1


#: The process's one freezer (``gc`` is process-wide too).
FREEZER = SurvivorFreezer()


def settle() -> None:
    """Collect once, freeze what start-up built, collect the young generation
    every :data:`YOUNG_COLLECTION_THRESHOLD` allocations and freeze what
    survives each collection (the module's docstring says why)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
    if FREEZER not in gc.callbacks:
        gc.callbacks.append(FREEZER)


def unsettle(thresholds: tuple[int, int, int]) -> None:
    """Undo :func:`settle`: no freezer, nothing frozen, ``thresholds`` back."""
    while FREEZER in gc.callbacks:
        gc.callbacks.remove(FREEZER)
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def full_collection() -> int:
    """Collect everything, frozen objects included; return what was freed.

    The freezer, when installed, freezes the survivors again afterwards.
    """
    gc.unfreeze()
    return gc.collect()


async def collect_when_idle(
    is_idle: Callable[[], bool],
    *,
    period: float = 1.0,
    longest: float = LONGEST_WITHOUT_FULL_COLLECTION,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run :func:`full_collection` when ``is_idle()`` at two checks in a row
    (``period`` seconds apart: one idle check may fall in the gap between a
    client's streams), or after ``longest`` seconds without one, whenever a
    collection has frozen survivors since the last. Runs until cancelled."""
    seen = FREEZER.freezes
    last = clock()
    was_idle = False
    while True:
        await asyncio.sleep(period)
        idle = is_idle()
        settled, was_idle = idle and was_idle, idle
        if FREEZER.freezes == seen:
            continue
        if not settled and clock() - last < longest:
            continue
        started = time.perf_counter()
        freed = full_collection()
        # After the collection: the freeze that followed it is not news.
        seen, last = FREEZER.freezes, clock()
        log.debug(
            "full garbage collection: %d objects freed in %.1f ms",
            freed,
            1000 * (time.perf_counter() - started),
        )
