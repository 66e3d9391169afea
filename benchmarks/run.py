"""The benchmark suite's command: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

Runs the selected sections (bulk, realtime, startup, memory, codec, app, shared), prints
one table per section and the issue's targets, and saves everything as JSON.
Exits 0 when every selected section ran (missed targets included: this is a
measurement, not a test), 1 when a section failed, 2 on a bad option.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import servers  # noqa: E402
from benchmarks.report import check_targets, render, worst_second  # noqa: E402

__all__ = ["SECTIONS", "DEFAULT_SECTIONS", "Plan", "build_plan", "main"]

SECTIONS = ("bulk", "realtime", "startup", "memory", "codec", "app", "shared", "instructions")
#: What runs without --only: every section but ``instructions``, which takes
#: minutes under valgrind and is asked for by name (a tool for comparing builds).
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "instructions")


@dataclass(kw_only=True)
class Plan:
    """Sizes of every section; :func:`build_plan` fills it from the options."""

    quick: bool = False
    transports: tuple[str, ...] = ("h2c", "tls")
    bulk_rounds: int = 3
    bulk_seconds: float = 4.0
    bulk_warmup: float = 1.0
    bulk_connections: int = 4
    bulk_streams: int = 16
    bulk_audio_seconds: float = 10.0
    bulk_processes: int = 1
    bulk_framing: str = "sdk"
    #: Audio as audioEvent (``json``, base64) or binaryAudioEvent (``binary``):
    #: bulk, real-time and app sections.
    audio_events: str = "json"
    rt_sessions: tuple[int, ...] = (500, 1000, 2000, 3000)
    rt_seconds: int = 10
    #: Session starts spread over this many seconds.
    rt_ramp: float = 1.0
    rt_connections: int = 4
    rt_transport: str = "h2c"
    rt_grace: float = 10.0
    #: Also run the emulator as this many processes (connections split between
    #: them): what a multi-process emulator could reach. 1 = not run.
    rt_processes: int = 1
    memory_sessions: int = 1000
    memory_audio_seconds: int = 4
    startup_runs: int = 5
    fixture_runs: int = 3
    codec_seconds: float = 0.3
    codec_repeats: int = 5
    app_sessions: int = 100
    #: The shared section's round trips and sessions of bookkeeping.
    shared_round_trips: int = 20_000
    shared_sessions: int = 2_000
    #: Sessions of the two counted processes of the instructions section.
    instructions_sessions: tuple[int, int] = (10, 40)
    profile_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def _parsed(text: str, kind: type[int] | type[float], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _at_least_one(text: str) -> int:
    value: int = _parsed(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_seconds(text: str) -> float:
    value: float = _parsed(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _at_most(bound: int, why: str) -> Callable[[str], int]:
    """An option's type: an integer from 1 to ``bound``, ``why`` saying why not more."""

    def parse(text: str) -> int:
        value = _at_least_one(text)
        if value > bound:
            raise argparse.ArgumentTypeError(f"{text!r}: at most {bound}{why}")
        return value

    return parse


#: The most sessions the memory section can hold open: its 4 connections, each
#: at the 1,000 concurrent streams h2 allows a client by default.
MAX_MEMORY_SESSIONS = 4000
_memory_sessions = _at_most(MAX_MEMORY_SESSIONS, " (4 connections of 1,000 streams)")

#: The most sessions in flight on one bulk connection: the streams the servers
#: take at once on one (``emulator.server.MAX_CONCURRENT_STREAMS``, which the
#: baseline shares); more were refused and retried, uncounted, every 10 ms.
MAX_BULK_STREAMS = 1000
_bulk_streams = _at_most(
    MAX_BULK_STREAMS,
    ", the streams the servers take at once on one connection (use more --bulk-connections)",
)


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}"
        )
    return names


def _transports(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names or any(n not in ("h2c", "tls") for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: transports are h2c and tls")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the emulator against a bare baseline app on the same hypercorn "
        "configuration. See benchmarks/README.md.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke-sized run, under a minute")
    parser.add_argument(
        "--only",
        type=_sections,
        default=DEFAULT_SECTIONS,
        metavar="LIST",
        help=f"comma-separated sections to run (default: {','.join(DEFAULT_SECTIONS)}; "
        "also: instructions, which counts the app layer's instructions under valgrind)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmark-results.json"),
        metavar="FILE",
        help="where to save the JSON results (default benchmark-results.json)",
    )
    parser.add_argument(
        "--emulator-root",
        type=Path,
        metavar="DIR",
        help="benchmark the emulator package under DIR instead of this repository's "
        "(e.g. a patched copy)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the emulator with py-spy during bulk and real-time runs; "
        "flame graphs and collapsed stacks go to DIR",
    )
    parser.add_argument(
        "--nice",
        type=int,
        metavar="N",
        help="run the load generators and every server at this nice value "
        "(e.g. -10 as root on a shared machine: it takes CPU from other processes)",
    )
    parser.add_argument(
        "--transports", type=_transports, metavar="LIST", help="bulk: h2c,tls (default both)"
    )
    parser.add_argument("--bulk-rounds", type=_at_least_one, metavar="N")
    parser.add_argument(
        "--bulk-seconds", type=_positive_seconds, metavar="S", help="measured seconds per bulk run"
    )
    parser.add_argument("--bulk-connections", type=_at_least_one, metavar="N")
    parser.add_argument(
        "--bulk-streams", type=_bulk_streams, metavar="N", help="sessions in flight per connection"
    )
    parser.add_argument(
        "--bulk-framing",
        choices=("sdk", "packed"),
        help="bulk: one DATA frame per event as the SDK writes them (default), or the "
        "body packed into the largest frames as h2load sends it",
    )
    parser.add_argument(
        "--audio-events",
        choices=("json", "binary"),
        help="bulk, realtime, app: send audio as audioEvent, base64 in JSON (default), "
        "or as binaryAudioEvent, the raw bytes",
    )
    parser.add_argument(
        "--bulk-processes",
        type=_at_least_one,
        metavar="K",
        help="also run bulk against K emulator processes, connections split (K > 1)",
    )
    parser.add_argument("--rt-sessions", type=_ints, metavar="LIST", help="real-time N values")
    parser.add_argument(
        "--rt-seconds", type=_at_least_one, metavar="S", help="audio seconds per real-time session"
    )
    parser.add_argument(
        "--rt-ramp",
        type=_positive_seconds,
        metavar="S",
        help="seconds over which the real-time sessions start (default 1)",
    )
    parser.add_argument("--rt-connections", type=_at_least_one, metavar="N")
    parser.add_argument("--rt-transport", choices=("h2c", "tls"))
    parser.add_argument(
        "--rt-processes",
        type=_at_least_one,
        metavar="K",
        help="also run each N against K emulator processes sharing the sessions (K > 1)",
    )
    parser.add_argument("--memory-sessions", type=_memory_sessions, metavar="N")
    parser.add_argument(
        "--state-root",
        type=Path,
        metavar="DIR",
        help="where the servers' state directories go, kept until the suite ends "
        "(default: the system's temporary directory; /dev/shm takes the disk out)",
    )
    return parser


def build_plan(args: argparse.Namespace) -> Plan:
    """The section sizes: defaults, shrunk by ``--quick``, then explicit options."""
    plan = Plan(quick=args.quick, profile_dir=args.profile)
    if args.quick:
        plan.bulk_rounds, plan.bulk_seconds, plan.bulk_warmup = 1, 1.5, 0.5
        plan.rt_sessions, plan.rt_seconds, plan.rt_grace = (200,), 3, 3.0
        plan.memory_sessions, plan.memory_audio_seconds = 200, 3
        plan.startup_runs, plan.fixture_runs = 2, 1
        plan.codec_seconds, plan.codec_repeats = 0.05, 2
        plan.app_sessions = 10
        plan.shared_round_trips, plan.shared_sessions = 1_600, 100
        plan.instructions_sessions = (1, 3)
    overrides = {
        "transports": args.transports,
        "bulk_rounds": args.bulk_rounds,
        "bulk_seconds": args.bulk_seconds,
        "bulk_connections": args.bulk_connections,
        "bulk_streams": args.bulk_streams,
        "bulk_processes": args.bulk_processes,
        "bulk_framing": args.bulk_framing,
        "audio_events": args.audio_events,
        "rt_sessions": args.rt_sessions,
        "rt_seconds": args.rt_seconds,
        "rt_ramp": args.rt_ramp,
        "rt_connections": args.rt_connections,
        "rt_transport": args.rt_transport,
        "rt_processes": args.rt_processes,
        "memory_sessions": args.memory_sessions,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(plan, name, value)
    if plan.rt_seconds < 3:
        _usage_error("--rt-seconds must be at least 3")
    if not 0 < plan.rt_ramp <= plan.rt_seconds - 2:
        # CPU is metered while every session streams: after the ramp, before the ends.
        _usage_error(
            f"--rt-ramp must be above 0 and at most --rt-seconds - 2 ({plan.rt_seconds - 2})"
        )
    return plan


def _usage_error(message: str) -> NoReturn:
    """One line on stderr and exit status 2, as argparse does for a bad option."""
    print(f"python -m benchmarks: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (``timeout``, a CI runner) unwinds as Ctrl-C does, stopping every
    server the suite started and removing its state directories."""
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- sections


def _profiler(plan: Plan, pid: int, name: str, seconds: float) -> Any:
    if plan.profile_dir is None:
        return None
    from benchmarks.profiling import Profiler, available

    if not available():
        print("py-spy not found: --profile ignored", file=sys.stderr)
        return None
    return Profiler(pid, plan.profile_dir / name, seconds=seconds)


def run_bulk_section(plan: Plan, results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.bulk import h2load_crosscheck, run_bulk
    from emulator.server import Settings

    runs: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    # The emulator writes a session's artifacts its post-stream delay after the
    # session ends: a warm-up at least that long puts as much of that work into
    # the window as its sessions leave after it (a shorter one left about a
    # quarter of it out). Both servers get the same warm-up.
    warmup = max(plan.bulk_warmup, Settings().post_stream_delay + 0.5)
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(servers.running_server("baseline"))
        emu = stack.enter_context(servers.running_server("emulator"))
        targets: list[servers.ServerProcess | list[servers.ServerProcess]] = [base, emu]
        if plan.bulk_processes > 1:
            targets.append(
                [
                    stack.enter_context(servers.running_server("emulator"))
                    for _ in range(plan.bulk_processes)
                ]
            )
        for round_no in range(plan.bulk_rounds):
            for transport in plan.transports:
                # Alternate the servers inside each round, so that load from
                # other processes on a shared machine hits both alike.
                for server in targets:
                    label = (
                        server.kind
                        if isinstance(server, servers.ServerProcess)
                        else f"emulator-x{len(server)}"
                    )
                    name = f"bulk-{label}-{transport}"
                    profiler = None
                    if server is emu and round_no == 0:
                        profiler = _profiler(plan, emu.pid, name, plan.bulk_seconds + warmup)
                    result = asyncio.run(
                        run_bulk(
                            server,
                            transport=transport,
                            duration=plan.bulk_seconds,
                            warmup=warmup,
                            connections=plan.bulk_connections,
                            streams=plan.bulk_streams,
                            audio_seconds=plan.bulk_audio_seconds,
                            framing=plan.bulk_framing,
                            binary=plan.audio_events == "binary",
                        )
                    )
                    if profiler is not None:
                        profiles[name] = profiler.wait()
                    # Its leftover work (artifacts, the journal's backlog) must
                    # not land on the next server's run.
                    pids = (
                        [server.pid]
                        if isinstance(server, servers.ServerProcess)
                        else [process.pid for process in server]
                    )
                    settled = servers.wait_idle(pids)
                    row = {
                        "round": round_no + 1,
                        **result.to_json(),
                        "settled_s": round(settled, 2),
                    }
                    runs.append(row)
                    _progress(
                        f"bulk {transport} {result.server}: {result.sessions_per_s} sessions/s "
                        f"(server CPU {result.server_cpu}, other {result.other_cpu})"
                    )
        h2load = h2load_crosscheck(
            base, audio_seconds=plan.bulk_audio_seconds, seconds=plan.bulk_seconds
        )
    best: dict[str, dict[str, Any]] = {}
    ratio: dict[str, float | None] = {}
    cpu_ratio: dict[str, float | None] = {}
    # CPU ms a session, the median of the rounds: what the table shows and the
    # per-CPU ratio divides (the best round's own figure is in "best").
    cpu_median: dict[str, dict[str, float | None]] = {}
    # K emulator processes against the one baseline process (--bulk-processes).
    ratio_processes: dict[str, float] = {}
    for transport in plan.transports:
        best[transport] = {}
        costs: dict[str, float | None] = {}
        for kind in ("baseline", "emulator", f"emulator x{plan.bulk_processes}"):
            mine = [r for r in runs if r["transport"] == transport and r["server"] == kind]
            if not mine:
                continue
            best[transport][kind] = max(mine, key=lambda r: r["sessions_per_s"])
            known = sorted(
                r["server_cpu_ms_per_session"] for r in mine if r["server_cpu_ms_per_session"]
            )
            costs[kind] = known[len(known) // 2] if known else None
        cpu_median[transport] = dict(costs)
        b, e = best[transport]["baseline"], best[transport]["emulator"]
        ratio[transport] = (
            round(e["sessions_per_s"] / b["sessions_per_s"], 3) if b["sessions_per_s"] else None
        )
        several = best[transport].get(f"emulator x{plan.bulk_processes}")
        if several is not None and b["sessions_per_s"]:
            ratio_processes[transport] = round(several["sessions_per_s"] / b["sessions_per_s"], 3)
        # Throughput per server CPU-second, emulator over baseline: what the
        # ratio would be with a core to spare for each, whatever else ran.
        if costs["baseline"] and costs["emulator"]:
            cpu_ratio[transport] = round(costs["baseline"] / costs["emulator"], 3)
        else:
            cpu_ratio[transport] = None
    out: dict[str, Any] = {
        "audio_seconds": plan.bulk_audio_seconds,
        "connections": plan.bulk_connections,
        "streams": plan.bulk_streams,
        "framing": plan.bulk_framing,
        "audio_events": plan.audio_events,
        "rounds": plan.bulk_rounds,
        "seconds": plan.bulk_seconds,
        "warmup_seconds": warmup,
        "best": best,
        "cpu_ms_per_session": cpu_median,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "ratio_processes": ratio_processes,
        "runs": runs,
        "h2load": h2load,
    }
    if profiles:
        out["profiles"] = profiles
    return out


def run_realtime_section(plan: Plan, results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.realtime import run_realtime

    runs: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fixtures-") as tmp:
        fixtures = servers.write_realtime_fixtures(Path(tmp), seconds=max(60, plan.rt_seconds + 10))
        for sessions in plan.rt_sessions:
            # Below hypercorn's 1000 streams per connection, with room to spare.
            connections = max(plan.rt_connections, math.ceil(sessions / 900))
            variants = [("baseline", 1), ("emulator", 1)]
            if plan.rt_processes > 1:
                variants.append(("emulator", plan.rt_processes))
            for kind, processes in variants:
                with contextlib.ExitStack() as stack:
                    group = [
                        stack.enter_context(
                            servers.running_server(
                                kind, fixtures=fixtures, scenario=servers.REALTIME_SCENARIO
                            )
                        )
                        for _ in range(processes)
                    ]
                    label = kind if processes == 1 else f"{kind}-x{processes}"
                    name = f"realtime-{label}-{sessions}"
                    profiler = None
                    if kind == "emulator" and processes == 1:
                        profiler = _profiler(plan, group[0].pid, name, plan.rt_seconds + 1)
                    result = asyncio.run(
                        run_realtime(
                            group,
                            sessions=sessions,
                            audio_seconds=plan.rt_seconds,
                            connections=max(connections, processes),
                            transport=plan.rt_transport,
                            grace=plan.rt_grace,
                            stagger=plan.rt_ramp,
                            binary=plan.audio_events == "binary",
                        )
                    )
                    if profiler is not None:
                        profiles[name] = profiler.wait()
                    runs.append(result.to_json())
                    _progress(
                        f"realtime N={sessions} {result.server}: p99 {result.latency_p99_ms} ms "
                        f"(steady {result.steady_p99_ms} ms, worst second "
                        f"{worst_second(result.p99_ms_by_second)} ms), "
                        f"lag max {result.lag_max_ms} ms, finals {result.finals_received}/"
                        f"{result.finals_expected}, server CPU {result.server_cpu}, "
                        f"other {result.other_cpu}"
                    )
    largest = {
        kind: max(
            (r["sessions"] for r in runs if r["server"] == kind and r["passed"]), default=None
        )
        for kind in ("baseline", "emulator")
    }
    out: dict[str, Any] = {
        "audio_seconds": plan.rt_seconds,
        "ramp_s": plan.rt_ramp,
        "connections": plan.rt_connections,
        "transport": plan.rt_transport,
        "audio_events": plan.audio_events,
        "runs": runs,
        "largest_passing": largest,
    }
    if profiles:
        out["profiles"] = profiles
    return out


def run_startup_section(plan: Plan, results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.startup import measure_fixture_startup, measure_process_startup

    process = measure_process_startup(runs=plan.startup_runs)
    _progress(f"startup: cold {process['cold_ms']} ms, warm {process['warm_median_ms']} ms")
    fixture = measure_fixture_startup(runs=plan.fixture_runs)
    _progress(f"fixture: {fixture.get('setup_median_ms', fixture.get('error'))}")
    return {"process": process, "fixture": fixture}


def run_memory_section(plan: Plan, results: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks.memory import measure_memory

    out = []
    with tempfile.TemporaryDirectory(prefix="bench-fixtures-") as tmp:
        fixtures = servers.write_realtime_fixtures(Path(tmp), seconds=60)
        for kind in ("baseline", "emulator"):
            row = measure_memory(
                kind,
                sessions=plan.memory_sessions,
                audio_seconds=plan.memory_audio_seconds,
                fixtures=fixtures,
            )
            out.append(row)
            _progress(
                f"memory {kind}: idle {row['idle_kib_per_session']} KiB/session, "
                f"active {row['active_kib_per_session']} KiB/session"
            )
    return out


def run_codec_section(plan: Plan, results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.codec import measure_codec

    out = measure_codec(min_seconds=plan.codec_seconds, repeats=plan.codec_repeats)
    audio = out["audio"]
    _progress(f"codec: emulator {audio['emulator_mb_s']} MB/s, smithy {audio['smithy_mb_s']} MB/s")
    return out


def run_app_section(plan: Plan, results: dict[str, Any]) -> list[dict[str, Any]]:
    from benchmarks.app import measure_app_cost

    out = measure_app_cost(sessions=plan.app_sessions, binary=plan.audio_events == "binary")
    for row in out:
        _progress(f"app {row['server']}: {row['cpu_ms_per_session']} ms CPU per session")
    return out


def run_shared_section(plan: Plan, results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.shared import measure_shared_state

    bulk = results.get("bulk") or {}
    out = measure_shared_state(
        round_trips=plan.shared_round_trips,
        sessions=plan.shared_sessions,
        bulk_cpu_ms=bulk.get("cpu_ms_per_session"),
    )
    _progress(
        f"shared: round trip {out['round_trip_asker_us']} us asking, "
        f"{out['round_trip_owner_us']} us answering; bookkeeping "
        f"{out['bookkeeping_us_per_session']} us a session"
    )
    return out


def run_instructions_section(plan: Plan, results: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.instructions import available, measure_instructions

    if not available():
        _progress("instructions: valgrind not found, section skipped")
        return {"skipped": "valgrind not found (Debian package valgrind)", "rows": []}
    low, high = plan.instructions_sessions
    rows = measure_instructions(low=low, high=high, binary=plan.audio_events == "binary")
    for row in rows:
        _progress(
            f"instructions {row['server']} ({row['scenario']}): {row['per_session']:,} per session"
        )
    return {"rows": rows}


_RUNNERS: dict[str, Callable[[Plan, dict[str, Any]], Any]] = {
    "bulk": run_bulk_section,
    "realtime": run_realtime_section,
    "startup": run_startup_section,
    "memory": run_memory_section,
    "codec": run_codec_section,
    "app": run_app_section,
    "shared": run_shared_section,
    "instructions": run_instructions_section,
}


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _meta(plan: Plan, sections: Sequence[str]) -> dict[str, Any]:
    root = servers.emulator_root
    dirty = _git(root, "status", "--porcelain", "--", "emulator")
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "emulator_root": str(root),
        "emulator_commit": _git(root, "rev-parse", "--short", "HEAD"),
        "emulator_dirty": bool(dirty) if dirty is not None else None,
        "sections": list(sections),
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }


def _run_sections(plan: Plan, sections: Sequence[str], state_root: Path) -> dict[str, Any]:
    """Run ``sections`` in order, the servers' state directories under ``state_root``."""
    results: dict[str, Any] = {"meta": _meta(plan, sections)}
    results["meta"]["state_file_system"] = servers.file_system_of(state_root)
    results["meta"]["state_file_creation_us"] = servers.file_creation_us(state_root)
    results["meta"]["emulator_speedups"] = servers.emulator_speedups()
    started = time.monotonic()
    for section in sections:
        _progress(f"{section}...")
        section_started = time.monotonic()
        try:
            results[section] = _RUNNERS[section](plan, results)
        except Exception as error:  # one broken section must not lose the others
            traceback.print_exc()
            results.setdefault("errors", {})[section] = f"{type(error).__name__}: {error}"
        elapsed = round(time.monotonic() - section_started, 1)
        results["meta"].setdefault("section_seconds", {})[section] = elapsed
        _progress(f"{section} done in {elapsed} s")
    results["meta"]["load_after"] = [round(v, 2) for v in os.getloadavg()]
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    _progress("removing the servers' state directories...")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return the exit status."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.out.is_dir():
        _usage_error(f"--out {args.out} is a directory: give a file name")
    if (problem := _unwritable(args.out)) is not None:
        _usage_error(f"--out {args.out}: {problem}")
    if args.emulator_root is not None:
        if not (args.emulator_root / "emulator" / "__init__.py").exists():
            print(
                f"python -m benchmarks: error: no emulator package under {args.emulator_root}",
                file=sys.stderr,
            )
            return 2
        servers.set_emulator_root(args.emulator_root)
    plan = build_plan(args)
    if args.nice is not None:
        # Child processes (servers, pytest, py-spy) inherit it.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as error:
            print(
                f"python -m benchmarks: error: cannot set nice {args.nice}: {error}",
                file=sys.stderr,
            )
            return 2
    sections = [s for s in SECTIONS if s in args.only]
    if args.state_root is not None and not args.state_root.is_dir():
        print(f"python -m benchmarks: error: no directory {args.state_root}", file=sys.stderr)
        return 2
    with servers.held_state_dirs(args.state_root) as state_root:
        results = _run_sections(plan, sections, state_root)
    results["targets"] = check_targets(results)
    print(render(results))
    document = json.dumps(results, indent=2) + "\n"
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(document)
    except OSError as error:  # checked at the start, but it may have changed since
        print(document)
        print(
            f"python -m benchmarks: error: cannot write {args.out} ({error}); "
            "the results are above, as JSON",
            file=sys.stderr,
        )
        return 1
    print(f"\nResults saved to {args.out} ({results['meta']['seconds']} s)")
    return 1 if results.get("errors") else 0


def _unwritable(out: Path) -> str | None:
    """Why the results could not be written to ``out`` once the suite has run, if
    so: tried before it runs (the folders made, the file opened to append and,
    if new, removed), so that minutes of measurements are not lost at the end."""
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a"):
            pass
    except OSError as error:
        return f"cannot write it ({error.strerror or error})"
    if not existed:
        out.unlink()
    return None


if __name__ == "__main__":
    sys.exit(main())
