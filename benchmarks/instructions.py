"""Instructions: the app layer's cost counted by valgrind rather than timed.

This machine's speed varies two- to threefold within an hour (other virtual
machines share the host), which hides any change of 5-10% in the timed
sections. Instruction counts do not vary that way: ``valgrind --tool=callgrind``
counts every user-space instruction the process executes, in all its threads,
and repeats to about half a percent.

What is counted is the app layer of the ``app`` section (the ASGI app driven
in-process, without HTTP/2 or sockets), in two processes: one running ``low``
sessions and one running ``high``, each after the same warm-up. The difference
divided by ``high - low`` is one session's cost, without the start-up and the
shutdown, and including what the session leaves to other threads (the
journal's writer, the post-stream artifacts, which run at once here). The
emulator runs twice: with its default scenario (a synthetic visit, as the bulk
section sees it) and with the real-time section's script (a segment ending
every second).

Instructions are not cycles: the C byte loops run many instructions a cycle,
the interpreter fewer, and with thousands of live sessions the caches miss
more than here. This section says which way a change to the code goes; the
timed sections say what it is worth on the wire.

Usage (one count, as the section runs it): ``valgrind --tool=callgrind
python -m benchmarks.instructions KIND SESSIONS [SCENARIO] [--binary]``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import servers

__all__ = ["SCENARIOS", "available", "count_instructions", "measure_instructions"]

#: ``default``: the emulator's own scenario; ``realtime``: the real-time section's.
SCENARIOS = ("default", "realtime")

#: Sessions run first in every counted process, so both counts start warm.
WARMUP_SESSIONS = 2

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def available() -> bool:
    """Whether a ``valgrind`` executable is on PATH."""
    return shutil.which("valgrind") is not None


def count_instructions(
    kind: str, sessions: int, *, scenario: str = "default", binary: bool = False
) -> int:
    """Instructions of one process that runs ``sessions`` sessions through ``kind``'s app.

    Raises RuntimeError with valgrind's output when the run fails or reports no
    count.
    """
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        kind,
        str(sessions),
        scenario,
    ]
    if binary:
        command.append("--binary")
    # cwd = the emulator root: ``-m`` imports from the cwd first (see servers).
    done = subprocess.run(
        command,
        cwd=servers.emulator_root,
        env=servers.server_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    found = _COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"valgrind run of {kind} ({scenario} scenario, {sessions} session(s)) failed "
            f"with exit status {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return int(found[-1])


def measure_instructions(
    *, low: int = 10, high: int = 40, binary: bool = False
) -> list[dict[str, object]]:
    """Instructions per session and per input event: the baseline app, then the
    emulator's with each of :data:`SCENARIOS`."""
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high sessions, got {low} and {high}")
    from .app import session_frames

    events = len(session_frames(binary=binary))
    rows: list[dict[str, object]] = []
    for kind, scenario in (("baseline", "-"), ("emulator", "default"), ("emulator", "realtime")):
        counts = [
            count_instructions(
                kind, n, scenario=scenario if kind == "emulator" else "default", binary=binary
            )
            for n in (low, high)
        ]
        per_session = (counts[1] - counts[0]) / (high - low)
        rows.append(
            {
                "server": kind,
                "scenario": scenario,
                "audio_events": "binary" if binary else "json",
                "sessions": [low, high],
                "instructions": counts,
                "per_session": round(per_session),
                "per_input_event": round(per_session / events),
            }
        )
    return rows


async def _run(kind: str, sessions: int, scenario: str, binary: bool) -> None:
    from .app import _emulator_app_running, _session, baseline_app, session_frames

    frames = session_frames(binary=binary)
    with tempfile.TemporaryDirectory(
        prefix="bench-instructions-", dir=servers.state_parent()
    ) as tmp:
        stop = asyncio.Event()
        server_task = None
        if kind == "emulator":
            fixtures = None
            if scenario == "realtime":
                fixtures = servers.write_realtime_fixtures(Path(tmp) / "fixtures", seconds=20)
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            server_task = asyncio.create_task(
                _emulator_app_running(
                    Path(tmp) / "state",
                    ready,
                    stop,
                    fixtures=fixtures,
                    scenario=servers.REALTIME_SCENARIO if fixtures is not None else None,
                    post_stream_delay=0.0,
                )
            )
            app = await asyncio.wait_for(ready, 600)
        else:
            app = baseline_app()
        try:
            for _ in range(WARMUP_SESSIONS + sessions):
                status, _ = await _session(app, frames)
                if status != 200:
                    raise RuntimeError(f"{kind} app answered HTTP {status}")
            await _settled()
            if kind == "emulator":
                # Every session's artifacts are written, so their cost was counted.
                written = len(list((Path(tmp) / "state" / "s3").rglob("transcript.json")))
                if written != WARMUP_SESSIONS + sessions:
                    raise RuntimeError(
                        f"{written} post-stream transcripts written after "
                        f"{WARMUP_SESSIONS + sessions} sessions: the count would miss their cost"
                    )
        finally:
            stop.set()
            if server_task is not None:
                await server_task


async def _settled() -> None:
    """Wait until the sessions' post-stream work has run (it is part of their cost)."""
    from emulator.journal import Journal

    current = asyncio.current_task()
    while True:
        pending = [
            task
            for task in asyncio.all_tasks()
            if task is not current and "post_stream" in repr(task.get_coro())
        ]
        if not pending:
            break
        await asyncio.wait(pending)
    await asyncio.to_thread(Journal.wait_written)


def main(argv: list[str] | None = None) -> int:
    """Run one counted process's sessions (see the module's usage)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("kind", choices=("baseline", "emulator"))
    parser.add_argument("sessions", type=int)
    parser.add_argument("scenario", nargs="?", default="default", choices=SCENARIOS)
    parser.add_argument("--binary", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(_run(args.kind, args.sessions, args.scenario, args.binary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
