"""Plain-text tables of the results, and the issue's targets checked against them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["table", "render", "check_targets"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table (``None`` shows as ``-``)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def worst_second(p99_by_second: list[float | None] | None) -> str | None:
    """``"k: p99"`` for the second of a real-time run whose finals had the highest p99."""
    seconds = [(p99, k) for k, p99 in enumerate(p99_by_second or ()) if p99 is not None]
    if not seconds:
        return None
    p99, k = max(seconds)
    return f"{k}: {p99:g}"


def _bulk(results: dict[str, Any]) -> str:
    bulk = results["bulk"]
    rows = []
    for transport, pair in bulk["best"].items():
        for kind, r in pair.items():
            ratio = cpu_ratio = None
            if kind == "emulator":
                ratio = bulk["ratio"].get(transport)
                cpu_ratio = bulk.get("cpu_ratio", {}).get(transport)
            elif kind != "baseline":  # several emulator processes
                ratio = bulk.get("ratio_processes", {}).get(transport)
            rows.append(
                [
                    transport,
                    kind,
                    r["sessions_per_s"],
                    r["audio_s_per_s"],
                    ratio,
                    # The median of the rounds (older results: the best round's).
                    bulk.get("cpu_ms_per_session", {})
                    .get(transport, {})
                    .get(kind, r.get("server_cpu_ms_per_session")),
                    cpu_ratio,
                    r["events_per_session"],
                    r["server_cpu"],
                    r.get("server_loop_cpu"),
                    r.get("server_loop_waiting"),
                    r.get("server_loop_asleep"),
                    r["client_cpu"],
                    r.get("other_cpu"),
                    r["failed"],
                ]
            )
    head = (
        f"Bulk ingest: {bulk['audio_seconds']:g} s sessions, {bulk['connections']} connections x "
        f"{bulk['streams']} streams, best of {bulk['rounds']} round(s) of {bulk['seconds']:g} s "
        f"after {bulk.get('warmup_seconds', 1.0):g} s of warm-up (CPU ms/session: median), "
        + (
            "one DATA frame per event (as the SDK)"
            if bulk.get("framing", "sdk") == "sdk"
            else "body packed into the largest DATA frames"
        )
        + _audio_note(bulk)
    )
    text = (
        head
        + "\n"
        + table(
            [
                "transport",
                "server",
                "sessions/s",
                "audio s/s",
                "emu/base",
                "CPU ms/session",
                "per-CPU emu/base",
                "events/session",
                "server CPU",
                "loop CPU",
                "loop waits",
                "loop asleep",
                "client CPU",
                "other CPU",
                "failed",
            ],
            rows,
        )
    )
    text += (
        "\nloop waits / asleep: the shares of the time the event loop was ready to run but "
        "waited for a core, and was not runnable at all (idle, or waiting for the GIL)"
    )
    if bulk.get("h2load"):
        text += f"\nh2load cross-check (baseline, h2c): {bulk['h2load']}"
    return text


def _realtime(results: dict[str, Any]) -> str:
    rt = results["realtime"]
    rows = []
    for r in rt["runs"]:
        rows.append(
            [
                r["sessions"],
                r["server"],
                r["latency_p50_ms"],
                r["latency_p99_ms"],
                r["latency_max_ms"],
                r.get("steady_p99_ms"),
                worst_second(r.get("p99_ms_by_second")),
                r["lag_p99_ms"],
                r["lag_max_ms"],
                f"{r['finals_received']}/{r['finals_expected']}"
                + (f" ({r['audio_unsent']} unsent)" if r.get("audio_unsent") else ""),
                r["server_cpu"],
                r.get("server_loop_cpu"),
                r.get("server_loop_waiting"),
                r.get("opening_server_cpu"),
                r.get("opening_loop_waiting"),
                r["client_cpu"],
                r["other_cpu"],
                r["peak_rss_mib"],
                r["passed"],
            ]
        )
    head = (
        f"Real-time capacity: 100 ms chunks, a segment every 1 s, {rt['audio_seconds']} s per "
        f"session, starts over {rt.get('ramp_s', 1.0):g} s, {rt['connections']} connections "
        f"({rt['transport']})" + _audio_note(rt)
    )
    largest = ", ".join(f"{k} {v if v else 'none'}" for k, v in rt["largest_passing"].items())
    return (
        head
        + "\n"
        + table(
            [
                "N",
                "server",
                "p50 ms",
                "p99 ms",
                "max ms",
                "steady p99",
                "worst second",
                "lag p99 ms",
                "lag max ms",
                "finals",
                "server CPU",
                "loop CPU",
                "loop waits",
                "opening CPU",
                "opening waits",
                "client CPU",
                "other CPU",
                "RSS MiB",
                "pass",
            ],
            rows,
        )
        + f"\nLargest N with p99 < 100 ms, lag < 1 s, every final: {largest}"
        + "\nfinals that never came count in the latencies, and audio events never sent in "
        "the lag, as the time they waited by the run's end (lower bounds)"
        + "\nsteady p99: finals sent while every session was mid-stream (after the ramp)"
        + "\nworst second: the second of the run (0 = the first start) whose finals had the "
        "highest p99, and that p99 in ms"
        + "\nloop CPU: the part of server CPU in the event loop's thread; the rest is in other "
        "threads (the emulator's journal writer)"
        + "\nloop waits: the share of the time the event loop was ready to run but waited for "
        "a core (the machine was full)"
        + "\nopening CPU / waits: server CPU and loop waits from the first start to half a "
        "second after the last (the ramp's stream opens)"
    )


def _startup(results: dict[str, Any]) -> str:
    s = results["startup"]
    p = s.get("process", {})
    f = s.get("fixture", {})
    rows = [
        ["python -m emulator -> healthy, cold (CA generated)", p.get("cold_ms")],
        ["python -m emulator -> healthy, warm (median)", p.get("warm_median_ms")],
        [
            "python -m emulator -> healthy, warm (min..max)",
            f"{p.get('warm_min_ms')}..{p.get('warm_max_ms')}",
        ],
        ["python -c pass (interpreter floor)", p.get("python_floor_ms")],
        [f"pytest fixture {f.get('fixture')} set-up (median)", f.get("setup_median_ms")],
        ["whole one-test pytest run (median)", f.get("pytest_wall_median_ms")],
    ]
    return "Start-up\n" + table(["what", "ms"], rows)


def _memory(results: dict[str, Any]) -> str:
    rows = [
        [
            m["server"],
            m["sessions"],
            m["idle_kib_per_session"],
            m["active_kib_per_session"],
            f"{m['idle_open']}/{m['sessions']}" if "idle_open" in m else m["sessions"],
            m["rss_before_idle_mib"],
            m["rss_idle_mib"],
            m.get("rss_before_active_mib"),
            m["rss_active_peak_mib"],
        ]
        for m in results["memory"]
    ]
    return (
        "Memory (RSS delta over N sessions)\n"
        + table(
            [
                "server",
                "N",
                "idle KiB/session",
                "active KiB/session",
                "idle open",
                "RSS 0 MiB",
                "RSS idle MiB",
                "RSS 0 active MiB",
                "RSS active MiB",
            ],
            rows,
        )
        + "\nidle and active are each measured in a fresh server process, each from its own "
        "RSS 0; idle open: streams answered 200 and held"
    )


def _codec(results: dict[str, Any]) -> str:
    rows = []
    for name, c in results["codec"].items():
        rows.append(
            [
                name,
                c["messages"],
                c["emulator_mb_s"],
                c["emulator_16k_pieces_mb_s"],
                c["smithy_mb_s"],
                c["emulator_msgs_s"],
                c["smithy_msgs_s"],
                c["ratio"],
                c["ratio_16k_pieces"],
                c.get("emulator_sdk_frames_mb_s", "-"),
                c.get("ratio_sdk_frames", "-"),
            ]
        )
    return "Codec: decode of signed input events (envelope + inner message)\n" + table(
        [
            "frames",
            "messages",
            "emulator MB/s",
            "emulator 16K MB/s",
            "smithy MB/s",
            "emulator msg/s",
            "smithy msg/s",
            "ratio",
            "ratio 16K",
            "emulator one-step MB/s",
            "ratio one-step",
        ],
        rows,
    )


def _audio_note(section: dict[str, Any]) -> str:
    """How the section sent audio, when not the issue's audioEvents."""
    if section.get("audio_events", "json") == "binary":
        return ", audio as binaryAudioEvent (raw bytes, no base64)"
    return ""


def _binary(results: dict[str, Any], key: str) -> bool:
    section = results.get(key)
    if isinstance(section, list):
        return any(row.get("audio_events") == "binary" for row in section)
    return isinstance(section, dict) and section.get("audio_events") == "binary"


def _app(results: dict[str, Any]) -> str:
    rows = [
        [
            a["server"],
            a["sessions"],
            a["cpu_ms_per_session"],
            a["us_per_input_event"],
            a["sessions_per_cpu_s"],
        ]
        for a in results["app"]
    ]
    return (
        "App layer alone (ASGI app driven in-process, no HTTP/2): CPU per 10 s session"
        + _audio_note(results["app"][0])
        + "\n"
        + table(
            ["app", "sessions", "CPU ms/session", "us/input event", "sessions per CPU-second"], rows
        )
    )


def _shared(results: dict[str, Any]) -> str:
    s = results["shared"]
    text = (
        "Shared state for a --workers emulator: CPU per round trip to a state owner "
        f"(Unix socket, JSON; {s['round_trips']} round trips) and the owner's bookkeeping "
        f"per session (the emulator's Backend; {s['sessions']} sessions)\n"
        + table(
            ["what", "us"],
            [
                ["round trip, asking (a worker)", s["round_trip_asker_us"]],
                ["round trip, answering (the owner)", s["round_trip_owner_us"]],
                ["owner's bookkeeping per session", s["bookkeeping_us_per_session"]],
                ["worker per session (2 round trips)", s["worker_us_per_session"]],
                ["owner per session", s["owner_us_per_session"]],
            ],
        )
        + f"\nthe owner at 1,000 sessions/s: {s['owner_cores_at_1000_sessions_s']} of a core"
    )
    estimates = s.get("estimates") or {}
    if estimates:
        rows = [
            [
                transport,
                e["baseline_cpu_ms"],
                e["emulator_cpu_ms"],
                f"{e['worker_share']:.1%}",
                *e["ratio_by_workers"].values(),
                e["workers_for_0_7"] or "-",
            ]
            for transport, e in estimates.items()
        ]
        text += (
            "\n\nBulk ratio K workers would reach, each on a core of its own, from this run's bulk"
            " CPU per session: K x baseline / (emulator + round trips)\n"
            + table(
                [
                    "transport",
                    "baseline ms",
                    "emulator ms",
                    "round trips' share",
                    "K=1",
                    "K=2",
                    "K=3",
                    "K=4",
                    "K for 0.7",
                ],
                rows,
            )
        )
    return text


def _instructions(results: dict[str, Any]) -> str:
    section = results["instructions"]
    title = "App layer in instructions (valgrind callgrind, all threads): per 10 s session"
    if section.get("skipped"):
        return f"{title}: skipped, {section['skipped']}"
    rows_in = section["rows"]
    base = next((r["per_session"] for r in rows_in if r["server"] == "baseline"), None)
    rows = [
        [
            r["server"],
            r["scenario"],
            f"{r['sessions'][0]} / {r['sessions'][1]}",
            f"{r['per_session'] / 1e6:.2f}M",
            f"{r['per_input_event'] / 1e3:.1f}k",
            round(r["per_session"] / base, 2) if base else None,
        ]
        for r in rows_in
    ]
    return (
        title
        + (_audio_note(rows_in[0]) if rows_in else "")
        + "\n"
        + table(
            [
                "app",
                "scenario",
                "sessions counted",
                "per session",
                "per input event",
                "x baseline",
            ],
            rows,
        )
        + "\nper session: (count of the larger run - count of the smaller) / the session "
        "difference; it includes the post-stream artifacts, written at once here"
    )


def check_targets(results: dict[str, Any]) -> list[dict[str, object]]:
    """The issue's targets, each with the measured value and whether it is met."""
    out: list[dict[str, object]] = []

    def add(name: str, value: object, met: bool | None, goal: str) -> None:
        out.append({"target": name, "goal": goal, "measured": value, "met": met})

    if "bulk" in results:
        # The targets are set for audioEvents; a binaryAudioEvent run is reported
        # under its own name and judged against the same goal.
        binary = " (binaryAudioEvent)" if _binary(results, "bulk") else ""
        for transport, ratio in results["bulk"]["ratio"].items():
            add(
                f"bulk ingest ratio, {transport}{binary}",
                ratio,
                None if ratio is None else ratio >= 0.7,
                ">= 0.7 (0.85 stretch)",
            )
        for transport, ratio in results["bulk"].get("cpu_ratio", {}).items():
            add(
                f"bulk ingest per server CPU-second, {transport}{binary}",
                ratio,
                None if ratio is None else ratio >= 0.7,
                ">= 0.7 (same, load-independent)",
            )
    if "realtime" in results:
        largest = results["realtime"]["largest_passing"].get("emulator")
        add(
            "real-time sessions, one emulator process"
            + (" (binaryAudioEvent)" if _binary(results, "realtime") else ""),
            largest,
            bool(largest and largest >= 2000),
            ">= 2000",
        )
    if "startup" in results and "process" in results["startup"]:
        warm = results["startup"]["process"].get("warm_median_ms")
        add("start-up to healthy (warm)", warm, None if warm is None else warm < 1000, "< 1000 ms")
        cold = results["startup"]["process"].get("cold_ms")
        add("start-up to healthy (cold)", cold, None if cold is None else cold < 1000, "< 1000 ms")
    if "memory" in results:
        for m in results["memory"]:
            if m["server"] == "emulator":
                idle = m["idle_kib_per_session"]
                whole = m.get("idle_open", m["sessions"]) == m["sessions"]
                add("memory per idle session", idle, idle < 50 and whole, "< 50 KiB")
    if "codec" in results:
        audio = results["codec"].get("audio", {})
        ratio = audio.get("ratio")
        add(
            "codec vs smithy_aws_event_stream (audio events)",
            ratio,
            None if ratio is None else ratio >= 3,
            ">= 3x",
        )
        one_step = audio.get("ratio_sdk_frames")
        if one_step is not None:
            add(
                "same, SDK audio frames read in one step",
                one_step,
                one_step >= 3,
                ">= 3x",
            )
    return out


def _creation(us: float | None) -> str:
    return "" if us is None else f" (a directory and a file made in {us:g} us)"


def render(results: dict[str, Any]) -> str:
    """Every section present in ``results`` as text, then the targets."""
    parts = []
    meta = results.get("meta", {})
    if meta:
        parts.append(
            f"Machine: {meta.get('cpus')} CPUs, Python {meta.get('python')}, "
            f"load average before {meta.get('load_before')}, after {meta.get('load_after')}, "
            f"state directories on {meta.get('state_file_system') or 'an unknown file system'}"
            f"{_creation(meta.get('state_file_creation_us'))}, "
            f"emulator byte loops: {meta.get('emulator_speedups') or 'unknown'}"
        )
    for key, fn in (
        ("bulk", _bulk),
        ("realtime", _realtime),
        ("startup", _startup),
        ("memory", _memory),
        ("codec", _codec),
        ("app", _app),
        ("shared", _shared),
        ("instructions", _instructions),
    ):
        if key in results:
            parts.append(fn(results))
    for key, error in results.get("errors", {}).items():
        parts.append(f"{key}: FAILED: {error}")
    targets = results.get("targets") or []
    if targets:
        rows = [
            [
                t["target"],
                t["goal"],
                t["measured"],
                "met" if t["met"] else ("-" if t["met"] is None else "MISSED"),
            ]
            for t in targets
        ]
        parts.append("Targets\n" + table(["target", "goal", "measured", "status"], rows))
    return "\n\n".join(parts)
