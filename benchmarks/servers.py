"""Server processes under test: the emulator and the bare baseline, and their CPU and memory.

Both run as child processes started the way a user starts the emulator
(``python -m emulator ...``; the baseline with the same options through
:mod:`benchmarks.baseline`) and announce their endpoints on stdout. CPU time
and RSS are read from ``/proc/<pid>`` (Linux).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "REPO_ROOT",
    "set_emulator_root",
    "server_env",
    "ServerProcess",
    "start_server",
    "running_server",
    "held_state_dirs",
    "state_parent",
    "wait_idle",
    "file_system_of",
    "file_creation_us",
    "emulator_speedups",
    "cpu_seconds",
    "thread_schedule",
    "rss_bytes",
    "CpuMeter",
    "summed",
    "write_realtime_fixtures",
    "REALTIME_SCENARIO",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Where the emulator under test is imported from: the repository, or a copy
#: given with ``--emulator-root`` (to compare a patched copy, say).
emulator_root = REPO_ROOT


def set_emulator_root(root: Path) -> None:
    """Run servers (and in-process codec code) from the emulator package under ``root``."""
    global emulator_root
    emulator_root = root.resolve()
    if str(emulator_root) not in sys.path:
        sys.path.insert(0, str(emulator_root))


def server_env() -> dict[str, str]:
    """The environment of child processes: the emulator root first, then this repository."""
    env = dict(os.environ)
    roots = [str(emulator_root), str(REPO_ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(filter(None, roots)))
    return env


#: Name of the scripted real-time scenario written by :func:`write_realtime_fixtures`.
REALTIME_SCENARIO = "bench-realtime"

_TLS_LINE = re.compile(r"endpoint \(TLS[^)]*\):\s*(https://\S+)")
_H2C_LINE = re.compile(r"endpoint \(cleartext[^)]*\):\s*(http://\S+)")
_CA_LINE = re.compile(r"CA certificate:\s*(\S.*)$")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(kw_only=True)
class ServerProcess:
    """A started server: its process, endpoints and CA."""

    kind: str
    process: subprocess.Popen[bytes]
    tls_port: int
    h2c_port: int
    ca_file: Path | None
    state_dir: Path
    started_at: float
    ready_at: float
    stderr: Any = None

    def stderr_text(self, limit: int = 4000) -> str:
        """The last ``limit`` characters the server wrote to stderr."""
        if self.stderr is None or self.stderr.closed:  # closed by stop()
            return ""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-limit:]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; then close its pipe and log."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            if self.stderr is not None:
                self.stderr.close()


def _command(kind: str) -> list[str]:
    if kind == "emulator":
        return [sys.executable, "-m", "emulator"]
    if kind == "baseline":
        return [sys.executable, "-m", "benchmarks.baseline"]
    raise ValueError(f"unknown server kind {kind!r}")


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def start_server(
    kind: str,
    *,
    state_dir: Path,
    fixtures: Path | None = None,
    scenario: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> ServerProcess:
    """Start ``kind`` ("emulator" or "baseline") on free ports and wait for its endpoints.

    Raises :class:`RuntimeError` (with the server's stderr) if it exits or stays
    silent for ``timeout`` seconds.
    """
    args = [*_command(kind), "--host", "127.0.0.1", "--port", "0", "--h2c-port", "0"]
    args += ["--state-dir", str(state_dir), "--log-level", "warning"]
    if fixtures is not None:
        args += ["--fixtures", str(fixtures)]
    if scenario is not None:
        args += ["--scenario", scenario]
    args += list(extra_args)
    stderr = tempfile.TemporaryFile()
    started = time.monotonic()
    # cwd = the emulator root: ``python -m emulator`` imports from the cwd first.
    process = subprocess.Popen(
        args,
        cwd=emulator_root,
        env=server_env(),
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    tls = h2c = None
    ca: Path | None = None
    buffered = b""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = started + timeout
    try:
        while not (tls and h2c and ca):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                break
            if not selector.select(min(remaining, 0.5)):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                if m := _TLS_LINE.search(line):
                    tls = m.group(1)
                elif m := _H2C_LINE.search(line):
                    h2c = m.group(1)
                elif m := _CA_LINE.search(line):
                    ca = Path(m.group(1).strip())
    except BaseException:  # Ctrl-C or SIGTERM while it starts: it must not outlive us
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(5)
        raise
    finally:
        selector.close()
    if not (tls and h2c):
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(5)
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{kind} did not announce its endpoints within {timeout} s:\n{detail}")
    # Drain stdout from here on so the server never blocks on a full pipe.
    process.stdout.close()
    return ServerProcess(
        kind=kind,
        process=process,
        tls_port=_port_of(tls),
        h2c_port=_port_of(h2c),
        ca_file=ca,
        state_dir=state_dir,
        started_at=started,
        ready_at=time.monotonic(),
        stderr=stderr,
    )


#: Where :func:`running_server` makes state directories while
#: :func:`held_state_dirs` is active; ``None``: each its own, removed at once.
_held_parent: Path | None = None


@contextlib.contextmanager
def held_state_dirs(root: Path | None = None) -> Iterator[Path]:
    """Keep every server's state directory until the block ends, then remove them all.

    Made under ``root`` (default: the system's temporary directory). Removing a
    run's directory as soon as it ends taxes the next run on some file systems:
    ext4 without a journal (this machine's root file system) skips, one by one,
    every inode freed in the last one to six minutes when it allocates a new one
    (its ``recently_deleted`` check), so the thousands of files one emulator run
    leaves made the next run's session directories several times dearer to
    create (0.06 ms -> 1.4 ms of kernel time a session, measured). That is one
    run's clean-up billed to another, not the emulator's cost; deletions the
    emulator makes itself (``--retention``) still count.
    """
    global _held_parent
    previous = _held_parent
    with tempfile.TemporaryDirectory(prefix="bench-state-", dir=root) as parent:
        _held_parent = Path(parent)
        try:
            yield _held_parent
        finally:
            _held_parent = previous


def wait_idle(pids: Sequence[int], *, cpu_share: float = 0.05, limit: float = 20.0) -> float:
    """Wait until the processes ``pids`` together use under ``cpu_share`` of a
    core over 0.1 s, twice running, or ``limit`` seconds pass; return the
    seconds waited.

    The emulator goes on working after a run's load stops: post-stream
    artifacts two seconds after each session, the journal's backlog. Without
    this the next run, of the other server, shared the machine with it.
    """
    started = time.monotonic()
    quiet = 0
    last = sum(cpu_seconds(pid) for pid in pids)
    while quiet < 2 and time.monotonic() - started < limit:
        time.sleep(0.1)
        now = sum(cpu_seconds(pid) for pid in pids)
        quiet = quiet + 1 if now - last < cpu_share * 0.1 else 0
        last = now
    return time.monotonic() - started


def state_parent() -> Path | None:
    """Where a section's own temporary directories go: under the held parent
    (``--state-root``) while :func:`held_state_dirs` is active, else the
    system's temporary directory (None)."""
    return _held_parent


_DESCRIBE_SPEEDUPS = """
import os, emulator
package = os.path.dirname(emulator.__file__)
if os.path.exists(os.path.join(package, "speedups.py")):
    from emulator import speedups
    print(speedups.describe())
else:  # an emulator from before the speedups
    print("pure Python (this emulator has no emulator.speedups)")
"""


def emulator_speedups() -> str | None:
    """Which code runs the emulator's per-event byte loops, as its servers will
    import it (``emulator.speedups.describe()``), or None if that cannot be told."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _DESCRIBE_SPEEDUPS],
            env=server_env(),
            cwd=emulator_root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def file_system_of(path: Path) -> str | None:
    """The type of the file system ``path`` is on (from ``/proc/mounts``), if known."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            entries = [line.split() for line in mounts]
    except OSError:
        return None
    resolved = str(path.resolve())
    best: tuple[int, str] | None = None
    for fields in entries:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fields[2])
    return best[1] if best else None


def file_creation_us(root: Path, *, count: int = 200) -> float:
    """Microseconds to create a directory holding one small file, as a session's
    journal does, under ``root``: the median of ``count``, cleaned up after.

    How fast a file system creates files varies by orders of magnitude, and
    with its recent history: on this project's machine (ext4 without a
    journal) from 50 us to 1.7 ms within the same hour, slow where many files
    were deleted in the last minutes; on tmpfs 17-19 us. Each session's first
    journal batch makes a directory and two files, in the writer thread whose
    GIL the event loop shares, so the real-time results depend on it.
    """
    timings = []
    with tempfile.TemporaryDirectory(prefix="bench-probe-", dir=root) as tmp:
        for n in range(count):
            started = time.perf_counter()
            directory = os.path.join(tmp, str(n))
            os.mkdir(directory)
            fd = os.open(os.path.join(directory, "events.jsonl"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"{}\n")
            finally:
                os.close(fd)
            timings.append(time.perf_counter() - started)
    timings.sort()
    return round(timings[len(timings) // 2] * 1e6, 1)


@contextlib.contextmanager
def running_server(
    kind: str,
    *,
    fixtures: Path | None = None,
    scenario: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """Start ``kind`` in a fresh state directory; stop it afterwards.

    The directory is removed with the server, or with :func:`held_state_dirs`'s
    block when one is active.
    """
    with contextlib.ExitStack() as stack:
        if _held_parent is not None:
            tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir=_held_parent)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{kind}-"))
        server = start_server(
            kind, state_dir=Path(tmp), fixtures=fixtures, scenario=scenario, extra_args=extra_args
        )
        try:
            yield server
        finally:
            server.stop()


def cpu_seconds(pid: int, *, thread: int | None = None) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads),
    or with ``thread`` by that one thread of it (a thread id; ``pid`` is the main one).
    """
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path, "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    # After the ")" closing comm: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def thread_schedule(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) so far of the
    main thread of ``pid`` (a server's event loop). From the scheduler's own
    nanosecond counts in ``/proc/<pid>/task/<pid>/schedstat`` (Linux); None
    where the kernel keeps none, or there is no such process.
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", "rb") as handle:
            on_cpu, waiting = handle.read().split()[:2]
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU share of a process between :meth:`start` and :meth:`stop` (1.0 = one core).

    ``main_share`` is the main thread's part: a server's event loop, against
    ``share - main_share`` in its other threads (the emulator's journal writer).

    Where the kernel keeps scheduler statistics (:func:`thread_schedule`), the
    rest of the main thread's time is split too: ``main_waiting``, the share of
    the wall time it was ready to run but waited for a core (the machine was
    full), and ``main_asleep``, the share it was not runnable at all (the loop
    idle in ``epoll_wait``, or waiting for the GIL or a lock). A loop that is
    the bottleneck shows nearly no sleep; one that waits for a core is short
    of CPU, not of work. Both are None without the statistics.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = 0.0
        self._main = 0.0
        self._wall = 0.0
        self._schedule: tuple[float, float] | None = None
        self.share = 0.0
        self.main_share = 0.0
        self.main_waiting: float | None = None
        self.main_asleep: float | None = None

    def start(self) -> None:
        self._cpu = cpu_seconds(self.pid)
        self._main = cpu_seconds(self.pid, thread=self.pid)
        self._schedule = thread_schedule(self.pid)
        self._wall = time.monotonic()

    def stop(self) -> float:
        wall = time.monotonic() - self._wall
        schedule = thread_schedule(self.pid)
        if wall > 0:
            self.share = (cpu_seconds(self.pid) - self._cpu) / wall
            main = (cpu_seconds(self.pid, thread=self.pid) - self._main) / wall
            # Linux scales a thread's and its process's utime/stime from the
            # scheduler's runtime separately, in clock ticks: for a nearly idle
            # server the thread can read a tick above its whole process.
            self.main_share = min(main, self.share)
            if schedule is not None and self._schedule is not None:
                running = schedule[0] - self._schedule[0]
                waiting = schedule[1] - self._schedule[1]
                self.main_waiting = _share(waiting, wall)
                self.main_asleep = _share(wall - running - waiting, wall)
        return self.share


def _share(seconds: float, wall: float) -> float:
    """``seconds`` as a share of ``wall``, within [0, 1]: the counters and the
    clock are read a moment apart."""
    return min(max(seconds / wall, 0.0), 1.0)


def summed(values: Sequence[float | None], digits: int = 3) -> float | None:
    """The sum of ``values`` rounded, or None if any is None (the shares of a
    group of servers, where one without scheduler statistics leaves no total)."""
    if any(value is None for value in values):
        return None
    return round(sum(value for value in values if value is not None), digits)


def write_realtime_fixtures(directory: Path, *, seconds: int) -> Path:
    """Write a fixtures dir whose scenario has a segment ending every second.

    Segment ``k`` runs from ``k + 0.1`` to ``k + 0.9`` s with no partials, so its
    end coincides with the end of the 9th 100 ms chunk of second ``k``: the
    client's 10th, 20th, 30th... frame (the configuration is the first), which is
    exactly where the baseline answers too. Returns ``directory``.
    """
    scenarios = directory / "scenarios"
    scenarios.mkdir(parents=True, exist_ok=True)
    lines = [
        "description: benchmark scenario, one segment ending every second",
        "segments:",
    ]
    for k in range(seconds):
        lines.append(
            f"  - {{channel: 0, begin: {k}.1, end: {k}.9, partials: 0, "
            f'content: "Segment {k}: the patient reports a mild cough for about ten days."}}'
        )
    (scenarios / f"{REALTIME_SCENARIO}.yaml").write_text("\n".join(lines) + "\n")
    return directory
