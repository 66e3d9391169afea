"""File descriptors: the server process's open-file limit, and accept() failing
when they run out.

asyncio logged "socket.accept() out of system resource" with a traceback for
every accept attempt (32,000 lines in 6 s), and nothing named the limit.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from emulator import server
from emulator.server import (
    ACCEPT_SHORTAGE,
    ACCEPT_WARNING_INTERVAL,
    AcceptErrorReporter,
    Settings,
)
from emulator.testing import EmulatorThread


class FakeLoop:
    """What the reporter uses of a loop: timers it runs when told, and the default handler."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Any]] = []
        self.defaulted: list[dict[str, Any]] = []

    def call_later(self, delay: float, callback: Any) -> Any:
        self.timers.append((delay, callback))
        return self

    def cancel(self) -> None:  # the handle call_later returns
        self.timers.clear()

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.defaulted.append(context)


def _emfile(**more: Any) -> dict[str, Any]:
    """The context asyncio's selector loop passes when accept() fails for descriptors."""
    error = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    return {"message": ACCEPT_SHORTAGE, "exception": error, "socket": object(), **more}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_failed_accepts_make_one_warning_per_interval_counting_the_rest(caplog):
    caplog.set_level(logging.WARNING, logger="medscribe")
    now = [100.0]
    reporter = AcceptErrorReporter(None, clock=lambda: now[0])
    loop = FakeLoop()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

    reporter(loop, _emfile())  # type: ignore[arg-type]
    assert _warnings(caplog) == [
        f"out of file descriptors (limit {limit}): new connections wait until some close; "
        "raise ulimit -n"
    ]
    for _ in range(999):  # the same second: asyncio's 100 a readiness, each listener
        now[0] += 0.004
        reporter(loop, _emfile())  # type: ignore[arg-type]
    assert len(_warnings(caplog)) == 1
    (delay, flush) = loop.timers[0]
    assert len(loop.timers) == 1 and delay == pytest.approx(ACCEPT_WARNING_INTERVAL - 0.004)

    now[0] = 100.0 + ACCEPT_WARNING_INTERVAL
    flush()  # the shortage over: the ones left out are still told
    assert _warnings(caplog)[1].endswith(
        f"raise ulimit -n (999 more failed accept(s) in the last {ACCEPT_WARNING_INTERVAL:g} s)"
    )
    assert loop.defaulted == []


def test_a_failure_after_the_interval_is_told_at_once(caplog):
    caplog.set_level(logging.WARNING, logger="medscribe")
    now = [0.0]
    reporter = AcceptErrorReporter(None, clock=lambda: now[0])
    loop = FakeLoop()
    reporter(loop, _emfile())  # type: ignore[arg-type]
    now[0] = 1.0
    reporter(loop, _emfile())  # type: ignore[arg-type]
    now[0] = ACCEPT_WARNING_INTERVAL + 1
    reporter(loop, _emfile())  # type: ignore[arg-type]
    warnings = _warnings(caplog)
    assert len(warnings) == 2 and warnings[1].endswith("(1 more failed accept(s) in the last 5 s)")
    assert loop.timers == []  # the second one's timer, late, cancelled: nothing left to tell


def test_closing_tells_what_is_left(caplog):
    caplog.set_level(logging.WARNING, logger="medscribe")
    now = [0.0]
    reporter = AcceptErrorReporter(None, clock=lambda: now[0])
    loop = FakeLoop()
    for _ in range(3):
        reporter(loop, _emfile())  # type: ignore[arg-type]
    reporter.close()
    assert _warnings(caplog)[-1].endswith("(2 more failed accept(s) in the last 5 s)")
    assert loop.timers == []


def test_everything_else_goes_to_the_handler_it_replaced():
    seen: list[dict[str, Any]] = []
    loop = FakeLoop()
    reporter = AcceptErrorReporter(lambda _loop, context: seen.append(context))
    other = {"message": "Task exception was never retrieved", "exception": ValueError()}
    no_error = {"message": ACCEPT_SHORTAGE}
    reporter(loop, other)  # type: ignore[arg-type]
    reporter(loop, no_error)  # type: ignore[arg-type]
    assert seen == [other, no_error]
    AcceptErrorReporter(None)(loop, other)  # type: ignore[arg-type]
    assert loop.defaulted == [other]


def test_the_system_running_out_is_told_as_such(caplog):
    caplog.set_level(logging.WARNING, logger="medscribe")
    error = OSError(errno.ENFILE, os.strerror(errno.ENFILE))
    AcceptErrorReporter(None)(FakeLoop(), {"message": ACCEPT_SHORTAGE, "exception": error})  # type: ignore[arg-type]
    assert _warnings(caplog)[0].startswith("the system is out of file descriptors")


# -- the open-file limit ----------------------------------------------------------


class Limits:
    """Stands in for getrlimit/setrlimit of RLIMIT_NOFILE."""

    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard
        self.set: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.set.append(limits)
        self.soft, self.hard = limits


@pytest.fixture
def quick_run(monkeypatch, tmp_path):
    """``server.run`` with a serve that returns at once: the process's start-up alone."""

    async def serve(settings: Settings, **_: Any) -> None:
        return None

    monkeypatch.setattr(server, "serve", serve)
    return lambda: server.run(Settings(port=0, h2c_port=0, state_dir=tmp_path / "state"))


def test_the_server_process_raises_its_soft_limit_to_the_hard_one(monkeypatch, caplog, quick_run):
    limits = Limits(256, 65536)
    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limits.setrlimit)
    caplog.set_level(logging.DEBUG, logger="medscribe")
    assert quick_run() == 0
    assert limits.set == [(65536, 65536)]
    assert "raised the open-file limit (RLIMIT_NOFILE) from 256 to 65536" in caplog.messages
    assert _warnings(caplog) == []


def test_a_low_hard_limit_is_warned_of_once_naming_ulimit(monkeypatch, caplog, quick_run):
    limits = Limits(64, 64)
    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limits.setrlimit)
    caplog.set_level(logging.WARNING, logger="medscribe")
    quick_run()
    assert limits.set == []
    assert _warnings(caplog) == [
        "the open-file limit (ulimit -n) is 64, its hard limit too: about 48 client "
        "connections at once, past which new connections wait until some close; raise it "
        "(ulimit -n 65536, docker run --ulimit nofile=65536) before starting the emulator"
    ]


def test_a_limit_that_cannot_be_raised_is_left_and_warned_of(monkeypatch, caplog):
    limits = Limits(256, 4096)

    def refuse(which: int, wanted: tuple[int, int]) -> None:
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", refuse)
    caplog.set_level(logging.WARNING, logger="medscribe")
    assert server.raise_fd_limit() == 256
    assert (
        "is 256 (its hard limit 4096 refused): about 240 client connections"
        in (_warnings(caplog)[0])
    )


def test_the_embedded_emulator_leaves_its_host_process_limits_alone(monkeypatch, tmp_path: Path):
    """A test process embedding the emulator keeps its limits; the emulator's loop
    gets the accept-error reporter all the same."""
    limits = Limits(256, 4096)  # one a server process would raise
    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limits.setrlimit)
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / "state")
    thread = EmulatorThread(settings)
    with thread:
        loop = thread._loop
        assert loop is not None
        assert isinstance(loop.get_exception_handler(), AcceptErrorReporter)
    assert limits.set == []
