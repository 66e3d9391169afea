"""The benchmark suite (``python -m benchmarks``) still runs and reports every section.

The numbers themselves are the benchmark's business, not the tests': nothing
here looks at a speed. What is checked is what a reader of the report relies
on: each section ran against both servers, every real-time final arrived, the
JSON holds what the text table shows, and the servers' state directories are
gone afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report, servers
from benchmarks.run import build_parser, build_plan
from emulator import speedups

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_a_small_suite_measures_every_section_and_leaves_no_state(tmp_path: Path) -> None:
    state_root = tmp_path / "state"
    state_root.mkdir()
    out = tmp_path / "results.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--only",
        "bulk,realtime,startup,codec,app,shared",
        "--transports",
        "h2c",
        "--bulk-seconds",
        "0.5",
        "--rt-sessions",
        "20",
        "--state-root",
        str(state_root),
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    results = json.loads(out.read_text())
    assert "errors" not in results
    assert results["meta"]["state_file_system"] == servers.file_system_of(state_root)
    assert results["meta"]["state_file_creation_us"] > 0
    # The servers run this checkout, whose extension the test run has (or not).
    assert results["meta"]["emulator_speedups"] == speedups.describe()
    assert list(state_root.iterdir()) == []  # every server's state directory removed

    bulk = {run["server"]: run for run in results["bulk"]["runs"]}
    assert set(bulk) == {"baseline", "emulator"}
    for run in bulk.values():
        assert run["sessions"] > 0 and run["sessions_per_s"] > 0
        assert run["failed"] == 0
        # The event loop's thread is one of the server's threads.
        assert 0 < run["server_loop_cpu"] <= run["server_cpu"]
        _check_loop_split(run)

    realtime = {run["server"]: run for run in results["realtime"]["runs"]}
    assert set(realtime) == {"baseline", "emulator"}
    for run in realtime.values():
        assert run["sessions"] == 20 and run["ramp_s"] == 1.0
        assert run["finals_received"] == run["finals_expected"] == 20 * 3
        assert run["sessions_failed"] == 0 and run["first_error"] is None
        # 3 s sessions starting over 1 s: every session is mid-stream when the
        # last one's first segment ends (t = 2 s), and until the first ends (3 s).
        assert 0 < run["steady_finals"] <= 20 * 3
        assert run["steady_p99_ms"] is not None
        # Every final falls in some second of the run (1 s ramp + 3 s of audio),
        # and the worst of those seconds is the run's worst.
        by_second = run["p99_ms_by_second"]
        assert len(by_second) == 6 and any(p99 is not None for p99 in by_second)
        assert max(p99 for p99 in by_second if p99 is not None) <= run["latency_max_ms"]
        assert 0 < run["server_loop_cpu"] <= run["server_cpu"]
        _check_loop_split(run)
        # The opening (20 streams opened) is measured apart from the steady state.
        assert 0 < run["opening_loop_cpu"] <= run["opening_server_cpu"]
        if run["opening_loop_waiting"] is not None:
            assert 0 <= run["opening_loop_waiting"] <= 1

    # What a --workers emulator would pay to share its state, and the bulk ratio it
    # would reach, from this run's bulk CPU per session.
    shared = results["shared"]
    assert shared["round_trip_asker_us"] > 0 and shared["round_trip_owner_us"] > 0
    assert shared["bookkeeping_us_per_session"] > 0
    assert shared["worker_us_per_session"] == pytest.approx(2 * shared["round_trip_asker_us"], 0.01)
    estimate = shared["estimates"]["h2c"]
    cpu = results["bulk"]["cpu_ms_per_session"]["h2c"]
    assert (estimate["baseline_cpu_ms"], estimate["emulator_cpu_ms"]) == (
        cpu["baseline"],
        cpu["emulator"],
    )
    one = cpu["baseline"] / (cpu["emulator"] + shared["worker_us_per_session"] / 1000)
    assert estimate["ratio_by_workers"]["3"] == pytest.approx(3 * one, abs=0.002)
    assert "Shared state for a --workers emulator" in done.stdout and "K for 0.7" in done.stdout

    assert {row["target"] for row in results["targets"]} >= {
        "bulk ingest ratio, h2c",
        "real-time sessions, one emulator process",
        "codec vs smithy_aws_event_stream (audio events)",
    }
    text = done.stdout
    assert "steady p99" in text and "starts over 1 s" in text
    assert "worst second" in text and "loop CPU" in text
    assert "loop waits" in text and "loop asleep" in text and "opening CPU" in text
    assert f"state directories on {results['meta']['state_file_system']}" in text
    made = results["meta"]["state_file_creation_us"]
    assert f"(a directory and a file made in {made:g} us)" in text
    assert f"emulator byte loops: {results['meta']['emulator_speedups']}" in text


def test_held_state_dirs_keep_each_server_directory_until_the_block_ends(
    tmp_path: Path,
) -> None:
    with servers.held_state_dirs(tmp_path) as parent:
        assert parent.parent == tmp_path
        with servers.running_server("baseline") as server:
            state_dir = server.state_dir
            assert state_dir.parent == parent
        assert state_dir.is_dir()  # the server stopped; its directory stays
    assert not parent.exists()
    with servers.running_server("baseline") as server:
        state_dir = server.state_dir
        assert state_dir.parent != parent
    assert not state_dir.exists()  # outside the block: removed with the server


def test_the_file_creation_probe_times_a_directory_and_a_file_and_leaves_nothing(tmp_path):
    us = servers.file_creation_us(tmp_path, count=20)
    assert 0 < us < 10_000_000
    assert list(tmp_path.iterdir()) == []


def test_file_system_of_reads_the_longest_mount_point() -> None:
    assert servers.file_system_of(Path("/proc/self")) == "proc"
    assert servers.file_system_of(Path("/")) is not None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rt-ramp", "9"], "--rt-ramp must be above 0 and at most --rt-seconds - 2 (8)"),
        (["--rt-seconds", "4", "--rt-ramp", "3"], "at most --rt-seconds - 2 (2)"),
    ],
)
def test_a_ramp_that_leaves_no_steady_state_is_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(argv)
    with pytest.raises(SystemExit) as raised:
        build_plan(args)
    assert raised.value.code == 2  # a bad option's status
    assert message in capsys.readouterr().err


def test_the_ramp_reaches_the_real_time_runs() -> None:
    plan = build_plan(build_parser().parse_args(["--rt-ramp", "4"]))
    assert plan.rt_ramp == 4.0
    assert build_plan(build_parser().parse_args([])).rt_ramp == 1.0


def test_worst_second_names_the_second_with_the_highest_p99() -> None:
    assert report.worst_second([3.5, None, 120.25, 7.0]) == "2: 120.25"
    assert report.worst_second([None, None]) is None
    assert report.worst_second(None) is None  # results saved before the field existed


def _check_loop_split(run: dict[str, Any]) -> None:
    """A run's loop shares (running, waiting for a core, asleep) fit in its wall time,
    where the kernel keeps the statistics."""
    if servers.thread_schedule(os.getpid()) is None:
        assert run["server_loop_waiting"] is None and run["server_loop_asleep"] is None
        return
    waiting, asleep = run["server_loop_waiting"], run["server_loop_asleep"]
    assert 0 <= waiting <= 1 and 0 <= asleep <= 1
    # Ticks against nanoseconds, read a moment apart: a few hundredths of slack.
    assert run["server_loop_cpu"] + waiting + asleep == pytest.approx(1.0, abs=0.06)


def test_a_busy_thread_counts_for_the_process_and_not_for_its_main_thread() -> None:
    pid = os.getpid()
    used: list[float] = []

    def spin() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.3:
            pass
        used.append(time.thread_time() - start)

    total0, main0 = servers.cpu_seconds(pid), servers.cpu_seconds(pid, thread=pid)
    busy = threading.Thread(target=spin)
    busy.start()
    busy.join()
    total1, main1 = servers.cpu_seconds(pid), servers.cpu_seconds(pid, thread=pid)
    # Clock ticks are 10 ms: the thread's 0.3 s shows in the process, not in main.
    assert (total1 - total0) - (main1 - main0) >= used[0] - 0.05


def test_the_loop_share_never_reads_above_its_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc scales a thread's and its process's CPU times separately, in ticks: an
    almost idle server's main thread read 0.013 of a core against its process's
    0.007 in one CI run. The loop's share is at most the process's."""
    readings = {None: iter([10.00, 10.01]), 7: iter([5.00, 5.02])}
    monkeypatch.setattr(servers, "cpu_seconds", lambda pid, *, thread=None: next(readings[thread]))
    meter = servers.CpuMeter(7)
    meter.start()
    meter.stop()
    assert 0 < meter.main_share == meter.share


def test_the_loop_meter_tells_a_busy_loop_from_an_asleep_one() -> None:
    pid = os.getpid()
    if servers.thread_schedule(pid) is None:
        pytest.skip("this kernel keeps no scheduler statistics (/proc/<pid>/task/<tid>/schedstat)")
    asleep = servers.CpuMeter(pid)
    asleep.start()
    time.sleep(0.3)
    asleep.stop()
    assert asleep.main_asleep is not None and asleep.main_waiting is not None
    assert asleep.main_asleep > 0.8 and asleep.main_share < 0.2

    busy = servers.CpuMeter(pid)
    busy.start()
    start = time.monotonic()
    while time.monotonic() - start < 0.3:
        pass
    busy.stop()
    assert busy.main_asleep is not None and busy.main_waiting is not None
    # Running or waiting for a core the whole time, whatever else the machine does.
    assert busy.main_asleep < 0.2
    assert 0.0 <= busy.main_waiting <= 1.0


def test_the_loop_meter_splits_a_thread_schedule_between_running_waiting_and_asleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over 2 s of wall time, 1.0 s on a core and 0.4 s waiting for one leave 0.6 s asleep."""
    clock = iter([100.0, 102.0])
    schedules = iter([(50.0, 10.0), (51.0, 10.4)])
    monkeypatch.setattr(servers.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(servers, "thread_schedule", lambda pid: next(schedules))
    monkeypatch.setattr(servers, "cpu_seconds", lambda pid, *, thread=None: 0.0)
    meter = servers.CpuMeter(7)
    meter.start()
    meter.stop()
    assert meter.main_waiting == pytest.approx(0.2)
    assert meter.main_asleep == pytest.approx(0.3)


def test_without_scheduler_statistics_the_loop_split_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(servers, "thread_schedule", lambda pid: None)
    meter = servers.CpuMeter(os.getpid())
    meter.start()
    meter.stop()
    assert meter.main_waiting is None and meter.main_asleep is None
    assert servers.summed([0.25, None]) is None
    assert servers.summed([0.25, 0.5]) == 0.75
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert servers.thread_schedule(pid_max + 1) is None  # no such process


# A stand-in for valgrind: runs the command natively, then reports a count
# that grows by exactly 1,000 instructions per session run (after the warm-up).
_FAKE_VALGRIND = """#!{python}
import subprocess, sys
command = [arg for arg in sys.argv[1:] if not arg.startswith("--tool") and
           not arg.startswith("--callgrind")]
done = subprocess.run(command)
sessions = int(command[command.index("benchmarks.instructions") + 2])
sys.stderr.write(f"==1== Events    : Ir\\n==1== Collected : {{5_000_000 + 1_000 * sessions}}\\n")
sys.exit(done.returncode)
"""


def _fake_valgrind(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = directory / "valgrind"
    tool.write_text(_FAKE_VALGRIND.format(python=sys.executable))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def test_the_instructions_section_counts_each_app_and_scenario_by_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import instructions
    from benchmarks.run import run_instructions_section

    _fake_valgrind(tmp_path, monkeypatch)
    plan = build_plan(build_parser().parse_args(["--only", "instructions", "--quick"]))
    section = run_instructions_section(plan, {})

    rows = section["rows"]
    assert [(r["server"], r["scenario"]) for r in rows] == [
        ("baseline", "-"),
        ("emulator", "default"),
        ("emulator", "realtime"),
    ]
    for row in rows:
        # The child ran its sessions for real (a failing one raises), and the
        # start-up's 5M cancels out of the difference.
        assert row["sessions"] == [1, 3]
        assert row["instructions"] == [5_001_000, 5_003_000]
        assert row["per_session"] == 1_000
        assert row["per_input_event"] == round(1_000 / 103)
    text = report.render({"instructions": section})
    assert "App layer in instructions" in text and "emulator  realtime" in text
    assert instructions.SCENARIOS == ("default", "realtime")


def test_the_instructions_section_is_skipped_with_a_reason_without_valgrind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import instructions
    from benchmarks.run import run_instructions_section

    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    plan = build_plan(build_parser().parse_args(["--quick"]))
    section = run_instructions_section(plan, {})
    assert section == {"skipped": "valgrind not found (Debian package valgrind)", "rows": []}
    assert "skipped, valgrind not found" in report.render({"instructions": section})
    # Not one of the sections a plain run does: it takes minutes.
    assert "instructions" not in build_parser().parse_args([]).only


def test_a_failed_count_names_the_run_and_shows_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.instructions import count_instructions

    _fake_valgrind(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError) as raised:
        count_instructions("emulator", 1, scenario="no-such-scenario")
    message = str(raised.value)
    assert "valgrind run of emulator (no-such-scenario scenario, 1 session(s)) failed" in message
    assert "invalid choice: 'no-such-scenario'" in message


def test_the_baseline_counts_its_open_streams_for_the_collector() -> None:
    """The server's full collections wait for no stream open (emulator.collector),
    reading ``app.backend.active``: the baseline keeps that count as the
    emulator's backend does, so both servers collect alike."""
    import asyncio

    from benchmarks.baseline import baseline_app

    app = baseline_app()
    counts: list[int] = []

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        sent: list[dict[str, object]] = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/medical-scribe-stream/"}
        task = asyncio.create_task(app(scope, inbox.get, send))
        await asyncio.sleep(0)
        counts.append(app.backend.active)
        await inbox.put({"type": "http.request", "body": b"", "more_body": False})
        await task
        counts.append(app.backend.active)
        task = asyncio.create_task(app(scope, inbox.get, send))
        await asyncio.sleep(0)
        await inbox.put({"type": "http.disconnect"})
        await task
        counts.append(app.backend.active)

    asyncio.run(main())
    assert counts == [1, 0, 0]


@pytest.mark.parametrize(
    ("count", "pct", "rank"),
    [(100, 99, 99), (500, 99, 495), (300, 99, 297), (1000, 50, 500), (7, 99, 7), (1, 50, 1)],
)
def test_percentile_is_the_nearest_rank(count: int, pct: float, rank: int) -> None:
    """round(x + 0.5) rounded halves to even: the 99th percentile of 100 values
    was the largest, of 500 the 496th."""
    from benchmarks.stats import percentile

    assert percentile([float(n) for n in range(1, count + 1)], pct) == rank


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--rt-seconds", "2"], "--rt-seconds must be at least 3"),
        (["--rt-ramp", "0"], "argument --rt-ramp: '0' must be a positive number of seconds"),
        (["--bulk-rounds", "0"], "argument --bulk-rounds: '0' must be at least 1"),
        (["--bulk-streams", "0"], "argument --bulk-streams: '0' must be at least 1"),
        (["--memory-sessions", "0"], "argument --memory-sessions: '0' must be at least 1"),
        (["--memory-sessions", "4001"], "'4001': at most 4000"),
        (["--out", "."], "--out . is a directory: give a file name"),
        (["--out", "README.md/results.json"], "--out README.md/results.json: cannot write it"),
        (["--bulk-streams", "1001"], "'1001': at most 1000, the streams the servers take"),
    ],
)
def test_a_bad_option_exits_2_with_one_line_before_running_anything(option, message) -> None:
    """Several crashed after minutes, or with exit status 1, or ran with zeros."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", *option, "--only", "codec"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]  # argparse's usage may come first
    assert last.startswith("python -m benchmarks: error: ") and message in last


def test_sigterm_stops_the_servers_and_removes_their_state(tmp_path: Path) -> None:
    """As Ctrl-C did: `timeout` or a CI runner sends SIGTERM, which left both
    servers running and their state directories behind."""
    import signal

    suite = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "bulk"]
        + ["--state-root", str(tmp_path), "--out", str(tmp_path / "out.json")],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def servers_running() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        if str(tmp_path).encode() in handle.read() and int(entry) != suite.pid:
                            found.append(int(entry))
                except OSError:
                    continue
        return found

    try:
        deadline = time.monotonic() + 60
        while len(servers_running()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(servers_running()) >= 2, "the servers did not start"
        suite.send_signal(signal.SIGTERM)
        suite.wait(timeout=30)
    finally:
        if suite.poll() is None:
            suite.kill()
    deadline = time.monotonic() + 10
    while servers_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers_running() == []
    assert [p.name for p in tmp_path.iterdir()] == []


def test_the_bulk_streams_bound_is_the_servers_stream_limit() -> None:
    from benchmarks.run import MAX_BULK_STREAMS
    from emulator.server import MAX_CONCURRENT_STREAMS

    assert MAX_BULK_STREAMS == MAX_CONCURRENT_STREAMS


def test_a_server_that_stops_answering_shows_in_the_lag_and_latency(tmp_path: Path) -> None:
    """The figures were taken over what arrived: a server frozen for the second
    half of the run showed a lag of 3.7 ms and a p99 of 2.7 ms (8 finals of 80)."""
    import asyncio
    import os
    import signal

    from benchmarks.realtime import run_realtime

    async def frozen_half_way(server: servers.ServerProcess):
        async def freeze() -> None:
            await asyncio.sleep(1.5)
            os.kill(server.pid, signal.SIGSTOP)

        freezer = asyncio.create_task(freeze())
        try:
            return await run_realtime(
                server, sessions=10, audio_seconds=4, connections=2, grace=3.0
            )
        finally:
            await freezer
            os.kill(server.pid, signal.SIGCONT)

    with servers.held_state_dirs(tmp_path):
        with servers.running_server("baseline") as server:
            result = asyncio.run(frozen_half_way(server))
    assert not result.passed
    assert result.finals_missing > 0
    assert result.finals_received + result.finals_missing == result.finals_expected
    # A missing final waited at least from its audio event (the last one due at
    # 5.2 s) to the run's end (7.2 s + 3 s of grace): seconds, not milliseconds.
    assert result.latency_max_ms is not None and result.latency_max_ms > 1000
    assert result.latency_p99_ms is not None and result.latency_p99_ms > 1000


def test_the_suite_runs_as_a_script_too() -> None:
    """benchmarks/README.md gives `python benchmarks/run.py`: it once lost its
    `__main__` block, and did nothing, exiting 0, whatever it was given."""
    result = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--only", "nothing-of-the-kind"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "nothing-of-the-kind" in result.stderr.strip().splitlines()[-1]


def test_only_streams_answered_200_count_as_idle_sessions(tmp_path: Path) -> None:
    """Against an emulator refusing most streams (402 past its concurrent-session
    quota), every answer counted as an idle session, and the figure per session
    fell by a third, its target still "met"."""
    import asyncio

    from benchmarks import memory

    quota = ["--quotas", "--quota-concurrent-sessions", "10", "--quota-start-tps", "1000"]
    with servers.held_state_dirs(tmp_path):
        with servers.running_server("emulator", extra_args=quota) as server:
            _, _, idle_open = asyncio.run(memory._idle_rss(server, 30, 2))
    # The warm-up's sessions have ended: the quota's 10 are free for the idle streams.
    assert idle_open == 10


def test_the_bulk_session_carries_the_sdks_own_events_byte_for_byte() -> None:
    """The END_OF_SESSION payload had a space the SDK's codec does not write."""
    from aws_sdk_connecthealth import models
    from smithy_aws_event_stream._private.serializers import EventSerializer
    from smithy_json import JSONCodec

    from benchmarks import wire
    from emulator.eventstream import EventStreamDecoder, open_envelope

    def by_sdk(event: Any) -> tuple[dict[str, Any], bytes]:
        serializer = EventSerializer(payload_codec=JSONCodec())
        event.serialize(serializer)
        message = serializer.get_result()
        return dict(message.headers), bytes(message.payload)

    def by_benchmark(frame: bytes) -> tuple[dict[str, Any], bytes]:
        (message,) = EventStreamDecoder().receive_data(frame)
        inner = open_envelope(message).inner
        return dict(inner.headers), bytes(inner.payload)

    end = models.MedicalScribeInputStreamSessionControlEvent(
        value=models.MedicalScribeSessionControlEvent(type="END_OF_SESSION")
    )
    assert by_benchmark(wire.end_of_session_frame(counter=1)) == by_sdk(end)
    chunk = wire._pcm(wire.CHUNK_SECONDS)
    audio = models.MedicalScribeInputStreamAudioEvent(
        value=models.MedicalScribeAudioEvent(audio_chunk=chunk)
    )
    assert by_benchmark(wire.audio_frame(chunk, counter=1)) == by_sdk(audio)
