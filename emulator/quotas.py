"""Quotas: the service's per-key limits (with ``--quotas``) and the server-wide stream cap.

Sans-IO: callers pass the access key id (from the request's SigV4 credential
scope, verified or not) and a clock. The numbers default to the service's:
10 concurrent streaming sessions per account, StartMedicalScribeListeningSession
at 2 requests per second and GetMedicalScribeListeningSession at 10.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .errors import ServiceQuotaExceededException, ThrottlingException

__all__ = ["QuotaSettings", "Quotas", "access_key_of", "ANONYMOUS"]

#: The key unsigned requests count against.
ANONYMOUS = "anonymous"

_CREDENTIAL = re.compile(rb"Credential=([^/,\s]+)/")


def access_key_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The access key id named in the Authorization header, or :data:`ANONYMOUS`."""
    for name, value in headers:
        if name.lower() == b"authorization":
            match = _CREDENTIAL.search(value)
            if match:
                return match.group(1).decode("latin-1")
    return ANONYMOUS


@dataclass(frozen=True, kw_only=True, slots=True)
class QuotaSettings:
    """``per_key`` turns the service quotas on; ``max_streams`` always applies."""

    per_key: bool = False
    concurrent_sessions: int = 10
    start_tps: float = 2.0
    get_tps: float = 10.0
    #: Streams the whole server runs at once: beyond it memory and latency suffer
    #: for everyone, so the next client is told, not slowed down.
    max_streams: int = 5000


#: The fewest windows of a kind held before idle ones are swept.
_MIN_SWEEP = 1024


@dataclass(slots=True)
class _Window:
    """Request times of the last :func:`_span` seconds, for a requests-per-second limit."""

    times: deque[float] = field(default_factory=deque)

    def admit(self, now: float, rate: float) -> bool:
        span = _span(rate)
        while self.times and now - self.times[0] >= span:
            self.times.popleft()
        # Never more than the rate: 2.5 a second is 2 in any second, 0.5 is
        # one in any two (compared as counts, 0.5 and 1 admitted the same).
        if len(self.times) + 1 > rate * span + 1e-9:
            return False
        self.times.append(now)
        return True


def _span(rate: float) -> float:
    """The window a rate is counted over: a second, or for a rate under one a
    second, the time one request takes (0.5 a second: two seconds)."""
    return max(1.0, 1.0 / rate)


class Quotas:
    """Admits or refuses streams and look-ups; raises the modeled errors."""

    def __init__(self, settings: QuotaSettings, *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._streams: dict[str, int] = {}
        self._total = 0
        self._starts: dict[str, _Window] = {}
        self._gets: dict[str, _Window] = {}
        # Windows held before the next sweep of those a second old (see _admit).
        self._sweep_at = {id(self._starts): _MIN_SWEEP, id(self._gets): _MIN_SWEEP}

    def reset(self) -> None:
        """Forget the requests each key made (its rate windows), as an emulator
        reset forgets the sessions: a test's first stream start after a quick one
        was throttled for the last test's starts. Streams still open are still
        counted: they go on, and their ends are counted down."""
        self._starts.clear()
        self._gets.clear()
        self._sweep_at = {id(self._starts): _MIN_SWEEP, id(self._gets): _MIN_SWEEP}

    def _admit(self, windows: dict[str, _Window], key: str, rate: float) -> bool:
        """Whether ``key`` may make one more request of ``windows``' kind now.

        Windows of keys idle for a second are swept once the windows held
        double: a fleet with a new access key per job (temporary credentials)
        grew the server by about 1 KB a key, for good.
        """
        now = self._clock()
        if len(windows) >= self._sweep_at[id(windows)]:
            span = _span(rate)
            for idle in [k for k, w in windows.items() if not w.times or now - w.times[-1] >= span]:
                del windows[idle]
            self._sweep_at[id(windows)] = max(_MIN_SWEEP, 2 * len(windows))
        window = windows.get(key)
        if window is None:
            window = windows[key] = _Window()
        return window.admit(now, rate)

    def open_stream(self, key: str) -> None:
        """Count a new stream for ``key``; call :meth:`close_stream` when it ends.

        Raises ThrottlingException (429) over the start rate and
        ServiceQuotaExceededException (402) over the concurrent-session quota or
        the server-wide cap.
        """
        s = self.settings
        if self._total >= s.max_streams:
            raise ServiceQuotaExceededException(
                f"the emulator is running {self._total} streams, its limit "
                f"(--max-streams {s.max_streams})"
            )
        if s.per_key:
            if not self._admit(self._starts, key, s.start_tps):
                raise ThrottlingException(
                    f"Rate exceeded: StartMedicalScribeListeningSession allows "
                    f"{_per_second(s.start_tps)} for access key {key} "
                    f"(--quota-start-tps {s.start_tps:g})"
                )
            if self._streams.get(key, 0) >= s.concurrent_sessions:
                count = s.concurrent_sessions
                raise ServiceQuotaExceededException(
                    f"access key {key} already has {count} concurrent streaming "
                    f"session{'s' if count != 1 else ''}, the quota "
                    f"(--quota-concurrent-sessions {count})"
                )
        self._streams[key] = self._streams.get(key, 0) + 1
        self._total += 1

    def close_stream(self, key: str) -> None:
        left = self._streams.get(key, 0) - 1
        if left > 0:
            self._streams[key] = left
        else:
            self._streams.pop(key, None)
        self._total = max(0, self._total - 1)

    def check_get(self, key: str) -> None:
        """Raises ThrottlingException over the GetMedicalScribeListeningSession rate."""
        s = self.settings
        if s.per_key and not self._admit(self._gets, key, s.get_tps):
            raise ThrottlingException(
                f"Rate exceeded: GetMedicalScribeListeningSession allows "
                f"{_per_second(s.get_tps)} for access key {key} (--quota-get-tps {s.get_tps:g})"
            )


def _per_second(rate: float) -> str:
    """``2`` -> "2 requests per second", ``1`` -> "1 request per second"."""
    return f"{rate:g} request{'' if rate == 1 else 's'} per second"
