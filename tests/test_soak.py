"""Soak: many concurrent sessions of every kind against one emulator process.

Good clients, broken frames, abrupt resets, slow readers and injected faults run
side by side over a few HTTP/2 connections. Afterwards the server is healthy, its
memory is back near the baseline of an earlier identical round, and every
session's journal accounts for exactly the events its client got through.

CI runs a small size; ``pytest -m soak --soak-sessions 600`` runs a bigger one.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from .support import H2Client, admin, new_session_id, pcm_tone
from .test_stream_wire import END, audio, config_event, headers, signed

pytestmark = pytest.mark.soak

AUDIO_EVENTS = 20  # 2 s of 16 kHz mono in 100 ms events
CHUNK = pcm_tone(0.1)
KINDS = ("good", "bad-frame", "reset", "slow-reader", "fault")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A separate emulator process, so its memory can be measured on its own."""
    state = tmp_path_factory.mktemp("soak-state")
    command = [
        sys.executable,
        "-m",
        "emulator",
        "--port",
        "0",
        "--h2c-port",
        "0",
        "--state-dir",
        str(state),
        "--log-level",
        "warning",
        "--retention",
        "100000",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            h2c = None
            for line in process.stdout:
                if "cleartext" in line:
                    h2c = line.split()[-1]
                    break
            assert h2c, process.stderr.read()
            yield {"pid": process.pid, "h2c": h2c, "port": int(h2c.rsplit(":", 1)[1])}
        finally:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()
                process.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def plan(count: int, rng: random.Random) -> list[tuple[str, str]]:
    return [(KINDS[i % len(KINDS)], new_session_id()) for i in range(count)]


def inner_events(kind: str) -> list[tuple[str, bytes]]:
    """(event type, wire bytes) of what this kind of client sends, in order."""
    events = [("configurationEvent", config_event())]
    events += [("audioEvent", audio(CHUNK)) for _ in range(AUDIO_EVENTS)]
    events.append(("sessionControlEvent", END))
    return events


def run_round(
    server: dict[str, object], sessions: list[tuple[str, str]], connections: int
) -> dict[str, int]:
    """Run every session once; return, per session id, how many input events got through."""
    sent: dict[str, int] = {}
    for kind, session_id in sessions:
        if kind == "fault":
            status, body = admin(
                str(server["h2c"]),
                "POST",
                "/_emulator/rules",
                {
                    "match": {"sessionId": session_id},
                    "scenario": {
                        "faults": [
                            {
                                "at": 1.0,
                                "exception": "internalFailureException",
                                "message": "soak fault",
                            }
                        ]
                    },
                },
            )
            assert status == 201, body
    groups = [sessions[i::connections] for i in range(connections)]
    for group in groups:
        client = H2Client("127.0.0.1", int(server["port"]), timeout=60)
        slow = H2Client("127.0.0.1", int(server["port"]), timeout=60)
        try:
            streams = {}
            for kind, session_id in group:
                owner = slow if kind == "slow-reader" else client
                stream_id = owner.request(headers(session_id))
                streams[session_id] = (owner, stream_id, kind)
                events = inner_events(kind)
                if kind == "bad-frame":
                    # The 6th event's CRC is broken: events 1-5 get through.
                    broken = bytearray(signed(events[5][1]))
                    broken[-1] ^= 0xFF
                    body = b"".join(signed(e) for _, e in events[:5]) + bytes(broken)
                    owner.send(stream_id, body, end_stream=True)
                    sent[session_id] = 5
                elif kind == "reset":
                    owner.send(stream_id, b"".join(signed(e) for _, e in events[:8]))
                    sent[session_id] = 8
                else:
                    owner.send(stream_id, b"".join(signed(e) for _, e in events), end_stream=True)
                    sent[session_id] = len(events)
            # Resets go out after everything else was sent, so the server has
            # processed part of those sessions before they vanish.
            for owner, stream_id, kind in streams.values():
                if kind == "reset":
                    owner.wait(stream_id, for_headers=True)
                    owner.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                    owner._flush()
            for owner, stream_id, kind in streams.values():
                if kind != "reset":
                    response = owner.wait(stream_id)
                    assert response["ended"], (kind, response)
            assert not client.goaway and not slow.goaway
        finally:
            client.close()
            slow.close()
    return sent


def journal_inputs(server: dict[str, object], session_id: str) -> list[str]:
    status, body = admin(str(server["h2c"]), "GET", f"/_emulator/sessions/{session_id}/events")
    assert status == 200, body
    entries = body["events"] if isinstance(body, dict) else body
    return [e["type"] for e in entries if e.get("direction") == "in"]


def check_journals(
    server: dict[str, object], sessions: list[tuple[str, str]], sent: dict[str, int]
) -> None:
    expected_types = [t for t, _ in inner_events("good")]
    for kind, session_id in sessions:
        inputs = journal_inputs(server, session_id)
        status, details = admin(str(server["h2c"]), "GET", f"/_emulator/sessions/{session_id}")
        if kind in ("good", "slow-reader"):
            assert inputs == expected_types, (kind, session_id, inputs)
            assert details["status"] == "COMPLETED"
        elif kind == "bad-frame":
            assert inputs == expected_types[: sent[session_id]], (kind, inputs)
            assert details["status"] == "FAILED"
        elif kind == "fault":
            # The fault fires at 1.0 s: the 10th audio event (event 11) completes that second.
            assert inputs == expected_types[:11], (kind, inputs)
            assert details["status"] == "FAILED"
        else:  # reset: whatever arrived before the reset, in order, nothing twice
            assert inputs == expected_types[: len(inputs)], (kind, inputs)
            assert len(inputs) <= sent[session_id]
            assert details["status"] == "PAUSED"


def test_soak_every_session_is_accounted_for_and_memory_returns(server, request):
    count = request.config.getoption("--soak-sessions")
    rng = random.Random(1)
    connections = max(2, count // 60)

    warmup = plan(count, rng)
    sent = run_round(server, warmup, connections)
    check_journals(server, warmup, sent)
    baseline = rss_kib(int(server["pid"]))

    for _ in range(2):
        sessions = plan(count, rng)
        sent = run_round(server, sessions, connections)
        check_journals(server, sessions, sent)
    after = rss_kib(int(server["pid"]))

    status, health = admin(str(server["h2c"]), "GET", "/_emulator/health")
    assert status == 200 and health["status"] == "ready"
    assert health["sessions"]["active"] == 0
    # Two more rounds of the same size may grow the process a little (records of
    # finished sessions are kept), but not by anything like a leak of buffers:
    # 20 KiB per extra session is far below one session's audio (64 KiB).
    allowance = 20 * 2 * count + 16 * 1024
    assert after - baseline < allowance, (baseline, after)
