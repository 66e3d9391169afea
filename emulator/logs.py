"""The emulator's loggers, whose messages never carry what a client sent as it came.

A message may quote a header, an access key id, an S3 URI or a rule's text:
written raw, an escape sequence in it (ESC, BEL, C1 controls, a bidirectional
override) acts on the terminal or CI log viewer that shows the log; one in a
stream header erased the line before it and printed a green "ALL TESTS PASSED".
Each logger :func:`get_logger` gives escapes them (``\\x1b``) in the record
itself, so the log of a process that embeds the emulator (a pytest fixture's
thread, whose host formats the records) is as safe as the server process's,
whose formatter (:class:`emulator.server.LogFormatter`) escapes every other
library's messages too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable

__all__ = [
    "Throttle",
    "get_logger",
    "left_out_text",
    "escape_controls",
    "UNSAFE_IN_LOG",
    "UNSAFE_IN_TRACEBACK",
    "QUIET_WHEN_DEBUGGING",
]

#: Loggers kept at INFO when the emulator's own are at debug (``--log-level
#: debug``, the pytest plugin's emulator): hpack's decoded headers carry the
#: admin token (and SigV4 authorization), and Faker's locale look-ups were most
#: of a session's lines. Their import-time self-tests log too.
QUIET_WHEN_DEBUGGING = ("hpack", "h2", "faker")

#: What a log line must not carry as it came: C0 and C1 controls and DEL, line and
#: paragraph separators, and the bidirectional overrides and isolates (which
#: reorder what a reader sees).
UNSAFE_IN_LOG = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: The same, newlines allowed: a traceback's lines are the emulator's own.
UNSAFE_IN_TRACEBACK = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, unsafe: re.Pattern[str] = UNSAFE_IN_LOG) -> str:
    """``text`` with each character ``unsafe`` matches written as its escape."""
    return unsafe.sub(_escaped, text)


class _EscapeControls(logging.Filter):
    """Replaces a record's message by its text, escaped: formatted here once, so
    a handler's formatter does not format it again."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = escape_controls(record.getMessage()), None
        return True


_FILTER = _EscapeControls()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, its messages escaped (a logger's filters see
    only what is logged on it, not on its children: each module asks here)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


class Throttle:
    """At most one line every ``interval`` seconds for something a client (or many)
    can make happen at will, counting those left out for the next line to say.

    With ``flush``, those left out are also said once they stop coming: ``take``
    then sets a timer (on ``loop``, else the running loop) for the interval's end,
    which calls ``flush(left_out)`` unless a line said them first, and
    :meth:`close` calls it for any still unsaid. Without a loop they wait for the
    next line, or ``close``.
    """

    def __init__(
        self,
        interval: float,
        *,
        flush: Callable[[int], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._flush = flush
        self._clock = clock
        self._last = -math.inf
        self._left_out = 0
        self._timer: asyncio.TimerHandle | None = None

    def take(self, count: int = 1, *, loop: asyncio.AbstractEventLoop | None = None) -> int | None:
        """None when this line (standing for ``count`` things) is to be left out:
        they are counted. Else how many were left out since the last line, which
        the caller says with its own ``count``."""
        now = self._clock()
        if now - self._last < self.interval:
            self._left_out += count
            if self._flush is not None and self._timer is None:
                self._flush_at_the_end(now, loop)
            return None
        left_out, self._last, self._left_out = self._left_out, now, 0
        if self._timer is not None:  # due, but the loop was late: this line says them
            self._timer.cancel()
            self._timer = None
        return left_out

    def close(self) -> None:
        """Say, by ``flush``, those left out and not yet said (the caller stops)."""
        if self._timer is not None:
            self._timer.cancel()
        self._flushed()

    def _flush_at_the_end(self, now: float, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a tool using the code: said at the next line or close
                return
        self._timer = loop.call_later(self._last + self.interval - now, self._flushed)

    def _flushed(self) -> None:
        self._timer = None
        if self._left_out and self._flush is not None:
            left_out, self._last, self._left_out = self._left_out, self._clock(), 0
            self._flush(left_out)


def left_out_text(count: int, interval: float) -> str:
    """``; N more like it since the last such line (at most one every S s)`` after
    a throttled line, or nothing. Those left out are said with the next line:
    a burst with none after it keeps its count until one comes."""
    if not count:
        return ""
    return f"; {count} more like it since the last such line (at most one every {interval:g} s)"
