"""Flow between an HTTP/2 connection and its streams' apps, each way.

hypercorn 0.18 (``hypercorn/protocol/h2.py``) moves a stream's bytes between
the connection and the app through a response buffer, a request queue, h2's
receive windows and a priority tree. The emulator's
:class:`emulator.hypercorn_h2.DuplexH2Protocol` swaps in these pieces (that
module's docstring tells the fault each one answers):

* :class:`BoundedBuffer`, hypercorn's response buffer, holds an app in
  ``send`` until the client has taken its output below the low-water mark:
  with hypercorn's, a client granting no window had the server hold a
  session's whole output.
* :class:`WideningWindow` opens a stream's receive window past h2's 64 KiB
  with the next WINDOW_UPDATE h2 sends anyway, once its app is seen reading.
* :class:`RoundRobin` stands in for ``priority.PriorityTree``, which scanned
  every blocked stream on each send (13-30% of the server's time with 500-1,000
  live streams); the emulator uses no priorities.
* :func:`merge_into_last` appends a DATA frame to a request body already waiting in a
  stream's queue (up to :data:`MERGE_LIMIT` bytes), for an app that asks
  (``InlineBody.merge``); :func:`app_queue` finds that queue, and
  :func:`drop_unread_messages` empties it as the stream closes, so that the
  ``http.disconnect`` hypercorn then queues never waits for room.

:class:`BoundedBuffer` and :func:`merge_into_last` rest on hypercorn's and asyncio's
private state, which :func:`stream_buffer_internals_present` and
:func:`queue_internals_present` check at import. No upstream issue is cited
for these: hypercorn's own buffer, queue and tree work, only not for a client
that stops reading, an app that stops reading, or a thousand streams.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import priority
from h2.windows import WindowManager
from hypercorn.protocol.h2 import (
    BUFFER_HIGH_WATER,
    BUFFER_LOW_WATER,
    BufferCompleteError,
    StreamBuffer,
)
from hypercorn.protocol.http_stream import HTTPStream

from .extensions import MORE_BODIES

# What emulator.hypercorn_h2, the emulator's HTTP/2 layer, and its tests use.
__all__ = [
    "MERGE_LIMIT",
    "BoundedBuffer",
    "RoundRobin",
    "WideningWindow",
    "app_queue",
    "drop_unread_messages",
    "merge_into_last",
    "queue_internals_present",
    "stream_buffer_internals_present",
]


class BoundedBuffer(StreamBuffer):
    """hypercorn's response buffer, with its high-water mark kept.

    ``push`` (the app's send) waits once the buffer holds ``BUFFER_HIGH_WATER``
    (32 KiB) until ``pop`` lets it go on; hypercorn's ``pop`` does so whenever
    the bytes it *took* are fewer than ``BUFFER_LOW_WATER``, and the send task
    pops with a chunk size of 0 when the client's window is spent, taking
    nothing. So a client that grants no window released the app after every
    send, and the server held the session's whole output in memory (1.2 MB for
    five minutes of a busy scenario, as much as the session makes). Here the app
    goes on only once what is *left* is under the low-water mark: the buffer of
    a stream whose client reads nothing stays near 32 KiB, its app waits in
    ``send``, its request data is then held
    (:meth:`emulator.hypercorn_h2.DuplexH2Protocol._hold`) and flow control
    stops its client, while the connection's other streams go on.
    """

    #: An object whose ``since`` (a ``time.monotonic()``) is restarted by the
    #: pops while its ``sending`` is true: the app's output timer (see
    #: :meth:`emulator.hypercorn_h2.ConnectionControl.watch_output`), which must
    #: measure how long the client took no output, not how long one send waited.
    #: It restarts once :data:`_PROGRESS` bytes were taken since the last
    #: restart, or all that was waiting: a client taking a byte now and then
    #: does not count as reading.
    watch: Any = None
    _taken = 0

    async def push(self, data: bytes) -> None:
        # hypercorn's, except that crossing the mark always waits: its pause
        # event may still be set from an earlier pop, letting one more through.
        if self._complete:
            raise BufferCompleteError()
        self.buffer.extend(data)
        await self._is_empty.clear()
        if len(self.buffer) >= BUFFER_HIGH_WATER:
            await self._paused.clear()
            await self._paused.wait()

    async def pop(self, max_length: int) -> bytes:
        buffer = self.buffer
        length = min(len(buffer), max_length)
        data = bytes(buffer[:length])
        del buffer[:length]
        watch = self.watch
        if length and watch is not None and watch.sending:
            taken = self._taken + length
            if taken >= _PROGRESS or not buffer:
                taken = 0
                watch.since = time.monotonic()
            self._taken = taken
        if len(buffer) < BUFFER_LOW_WATER:
            await self._paused.set()
        if not buffer:
            await self._is_empty.set()
        return data


#: Response bytes a client must take to count as reading (see BoundedBuffer.watch).
_PROGRESS = 1024


def stream_buffer_internals_present() -> bool:
    """Whether hypercorn's StreamBuffer keeps the state BoundedBuffer.pop uses."""
    try:
        buffer = StreamBuffer(asyncio.Event)  # type: ignore[arg-type]
        return (
            isinstance(buffer.buffer, bytearray)
            and isinstance(buffer._paused, asyncio.Event)
            and isinstance(buffer._is_empty, asyncio.Event)
        )
    except Exception:
        return False


class WideningWindow(WindowManager):
    """h2's receive-window bookkeeping for one stream, whose next WINDOW_UPDATE
    (h2 sends one once half the window's 64 KiB has been taken by the app's
    queue, or once the window is shut and 1 KiB has been taken) also opens the
    window to ``widen_to``; from then on it is h2's own again.

    h2 sends that frame anyway, so opening a stream costs no extra one. A
    WINDOW_UPDATE of its own as each stream opened cost 7 us of the server's CPU
    each, in the second in which 2,000 real-time streams open, for no more bulk
    gain. (Its runs there, 8 of 13 passing, were no worse than this build's 5 of
    12 in a noisier hour: see benchmarks/README.md, round 17.)
    """

    widen_to: int

    def process_bytes(self, size: int) -> int | None:
        increment = super().process_bytes(size)
        if increment:
            extra = self.widen_to - self.max_window_size
            if extra > 0:
                self.window_opened(extra)
                increment += extra
                # Bytes received and not yet taken come back later, up to it.
                self.max_window_size = self.widen_to
            self.__class__ = WindowManager  # type: ignore[assignment]
        return increment


class RoundRobin:
    """O(1) stand-in for ``priority.PriorityTree`` as hypercorn's H2Protocol uses it.

    Ready streams take turns; the same exceptions as the tree signal the same
    conditions (hypercorn catches them).
    """

    def __init__(self) -> None:
        self._streams: set[int] = set()
        self._ready: dict[int, None] = {}

    def insert_stream(
        self, stream_id: int, depends_on: Any = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        if stream_id in self._streams:
            raise priority.DuplicateStreamError(stream_id)
        self._streams.add(stream_id)
        self._ready[stream_id] = None

    def reprioritize(
        self, stream_id: int, depends_on: Any = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        # Priorities are not used. For a stream not open (yet), PriorityTree raises
        # and hypercorn then inserts it: an entry that no stream would ever remove
        # (a client's PRIORITY frames for streams it never opens grew the set for
        # the connection's life), and a stream opened after its PRIORITY frame
        # would be inserted twice. Nothing to do either way.
        return

    def block(self, stream_id: int) -> None:
        if stream_id not in self._streams:
            raise priority.MissingStreamError(stream_id)
        self._ready.pop(stream_id, None)

    def unblock(self, stream_id: int) -> None:
        if stream_id not in self._streams:
            raise priority.MissingStreamError(stream_id)
        self._ready[stream_id] = None

    def remove_stream(self, stream_id: int) -> None:
        if stream_id not in self._streams:
            raise priority.MissingStreamError(stream_id)
        self._streams.discard(stream_id)
        self._ready.pop(stream_id, None)

    def __iter__(self) -> RoundRobin:
        return self

    def __next__(self) -> int:
        if not self._ready:
            raise priority.DeadlockError("no stream has data to send")
        stream_id = next(iter(self._ready))
        del self._ready[stream_id]
        self._ready[stream_id] = None  # to the back of the queue
        return stream_id


#: Bytes of further bodies one queued message takes at most. DATA merged is
#: acknowledged, as DATA queued is, and so outside the flow-control windows,
#: which bound only what waits unacknowledged: a stream whose app stops reading
#: (its queue full) holds its queue's ten messages with up to this much more
#: each, about 800 KiB, before its DATA waits unacknowledged and flow control
#: stops its client (hypercorn's own queue: about 160 KiB). Stopping at two
#: merged messages (about 290 KiB) made bulk ingest up to 14% slower in slow
#: hours: the queue then filled with a message a frame again, and the rest
#: went through the held-data path.
MERGE_LIMIT = 64 * 1024


def merge_into_last(queue: asyncio.Queue[Any], data: bytes) -> bool:
    """Append ``data`` to the last message waiting in ``queue`` as one more body
    (:data:`MORE_BODIES`); False, having done nothing, when that message is not
    a request body with more to come, or when ``data`` would take its further
    bodies past :data:`MERGE_LIMIT` bytes."""
    last = queue._queue[-1]  # type: ignore[attr-defined]
    if last.get("type") != "http.request" or not last.get("more_body"):
        return False
    size = last.get(_MORE_SIZE, 0) + len(data)
    if size > MERGE_LIMIT:
        return False
    more = last.get(MORE_BODIES)
    if more is None:
        last[MORE_BODIES] = [data]
    else:
        more.append(data)
    last[_MORE_SIZE] = size
    return True


_MORE_SIZE = "medscribe.more_size"


def queue_internals_present() -> bool:
    """Whether ``asyncio.Queue`` keeps its items in a deque ``_queue``, the last
    one still the newest (what :func:`merge_into_last` appends to)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    queue.put_nowait({"n": 1})
    queue.put_nowait({"n": 2})
    items = getattr(queue, "_queue", None)
    return isinstance(items, collections.deque) and items[-1] == {"n": 2}


def app_queue(stream: object) -> asyncio.Queue[Any] | None:
    """The ``asyncio.Queue`` hypercorn feeds ``stream``'s app from, if it is one.

    ``app_put`` is the bound ``put`` of the queue that hypercorn's asyncio task
    group creates for an HTTP stream's app; anything else (a WebSocket stream,
    trio's memory channel, a stream that never started its app) gives ``None``.
    """
    if not isinstance(stream, HTTPStream):
        return None
    queue = getattr(getattr(stream, "app_put", None), "__self__", None)
    return queue if isinstance(queue, asyncio.Queue) else None


def drop_unread_messages(stream: HTTPStream) -> None:
    """Empty the app queue of ``stream`` so that no put on it waits any longer."""
    queue = app_queue(stream)
    if queue is not None:
        while not queue.empty():
            queue.get_nowait()
