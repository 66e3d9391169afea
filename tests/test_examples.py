"""``examples/stream_wav.py``: the minimal client, run as a user would, against an emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.server import RunningServer, Settings

from .support import admin, pcm_tone, running_emulator

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "stream_wav.py"
#: The example's fixed ids, which rules below match on.
EXAMPLE_DOMAIN = "dom-exampledomain0001"
EXAMPLE_SUBSCRIPTION = "sub-ExampleSubscription01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    state = tmp_path_factory.mktemp("example-state")
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=state, seed=5)
    with running_emulator(settings) as running:
        yield running


@pytest.fixture
def emulator(server: RunningServer) -> RunningServer:
    status, _ = admin(server.h2c_url, "POST", "/_emulator/reset")
    assert status == 200
    return server


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("example-audio") / "tone.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm_tone(4.0))
    return path


def run_example(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    env.update(
        PYTHONPATH=str(REPO),
        MEDSCRIBE_ENDPOINT=server.endpoint_url,
        MEDSCRIBE_CA_FILE=str(server.ca_file),
    )
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def add_rule(server: RunningServer, rule: dict) -> None:
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body


def test_the_example_prints_each_final_segment_and_exits_0(emulator, tone):
    add_rule(
        emulator,
        {
            "match": {"domainId": EXAMPLE_DOMAIN, "subscriptionId": EXAMPLE_SUBSCRIPTION},
            "scenario": {
                "segments": [
                    {"begin": 0.5, "end": 1.5, "content": "Good morning.", "partials": 2},
                    {"begin": 2.0, "end": 3.5, "content": "What brings you in?", "partials": 1},
                ]
            },
        },
    )
    result = run_example(emulator, str(tone))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[   0.5s] Good morning.",
        "[   2.0s] What brings you in?",
    ]
    status, listing = admin(emulator.h2c_url, "GET", "/_emulator/sessions")
    assert [s["status"] for s in listing["sessions"]] == ["COMPLETED"]
    assert listing["sessions"][0]["audioSeconds"] == pytest.approx(4.0)


def test_the_example_exits_non_zero_with_the_service_error(emulator, tone):
    add_rule(
        emulator,
        {
            "match": {"domainId": EXAMPLE_DOMAIN},
            "error": {"type": "ThrottlingException", "message": "slow down"},
        },
    )
    result = run_example(emulator, str(tone))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "error: ThrottlingException: slow down"


def test_the_example_does_not_hang_when_the_service_resets_the_stream(emulator, tone):
    add_rule(
        emulator,
        {
            "match": {"domainId": EXAMPLE_DOMAIN},
            "scenario": {"faults": [{"at": 1.0, "disconnect": True}]},
        },
    )
    result = run_example(emulator, str(tone))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the stream was reset before all audio was sent"
    ]


@pytest.mark.parametrize("at", [3.95, 4.0], ids=["on-the-last-event", "at-the-end"])
def test_the_example_reports_a_reset_after_its_last_audio(emulator, tone, at):
    """Every event already sent, the sender returned and the output ended as after a
    whole session: the example said nothing and exited 0. Get says PAUSED."""
    add_rule(
        emulator,
        {
            "match": {"domainId": EXAMPLE_DOMAIN},
            "scenario": {"faults": [{"at": at, "disconnect": True}]},
        },
    )
    result = run_example(emulator, str(tone))
    assert result.returncode == 1
    # Every audio event had gone, and the example said "reset before all audio was
    # sent" when the reset caught its sender in the SDK's close.
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the stream ended with the session PAUSED, not COMPLETED"
    )


def test_the_example_without_a_file_prints_its_usage(emulator):
    result = run_example(emulator)
    assert result.returncode == 1
    assert result.stderr.strip() == "usage: stream_wav.py FILE.wav"


def test_without_the_sdk_the_example_names_the_extra_to_install(tmp_path):
    hidden = tmp_path / "no-sdk" / "aws_sdk_connecthealth"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ImportError('No module named aws_sdk_connecthealth')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent), str(REPO)])
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "any.wav"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "this example needs the AWS SDK: pip install 'medscribe-emulator[sdk]'"
    )


def test_the_example_refuses_a_wav_it_would_time_wrongly(emulator, tmp_path):
    """A stereo WAV was streamed as mono (twice its audio seconds), without a word."""
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm_tone(0.5, channels=2))
    result = run_example(emulator, str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{path}: this example streams mono 16-bit WAV only"
    assert admin(emulator.h2c_url, "GET", "/_emulator/sessions")[1]["sessions"] == []
