"""``medscribe-emulator stream``: run as a real subprocess against a real emulator."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import unicodedata
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest
import soundfile

from emulator import streamer
from emulator.cli import build_parser
from emulator.server import RunningServer, Settings

from .support import admin, new_session_id, pcm_tone, running_emulator

REPO = Path(__file__).resolve().parent.parent

SCRIPT = {
    "segments": [
        {
            "channel": 0,
            "begin": 0.5,
            "end": 2.0,
            "content": "Good morning, what brings you in today?",
            "partials": 2,
        },
        {
            "channel": 1,
            "begin": 2.2,
            "end": 4.0,
            "content": "I have had a cough for two weeks.",
            "partials": 1,
        },
        {"channel": 0, "begin": 9.0, "end": 11.0, "content": "Never reached.", "partials": 1},
    ]
}
FINAL_LINES = [
    "[00:00.5-00:02.0] Good morning, what brings you in today?",
    "[00:02.2-00:04.0] I have had a cough for two weeks.",
]
SUMMARY = re.compile(
    r"^done: (\d+) segments? \((\d+) partials?\), ([\d.]+) s of audio in [\d.]+ s, session (\S+)$"
)
#: A failed stream's summary: segments, partials, audio seconds, session, what now.
STOPPED = re.compile(
    r"^stopped: (\d+) segments? \((\d+) partials?\), ([\d.]+) s of audio in [\d.]+ s, "
    r"session ([^\s,]+), (.*)$"
)


def stopped(line: str) -> tuple[str, ...]:
    """The groups of a ``stopped: ...`` line, which must be one."""
    match = STOPPED.match(line)
    assert match is not None, line
    return match.groups()


def resumes(session_id: str, heard_to: float | None, *, resume_at: float | None = None) -> str:
    """What a stopped line says of a PAUSED session whose last final received
    ended at ``heard_to`` (None: no final came back); ``resume_at`` the file
    position given when the command started the session itself."""
    if resume_at is not None:
        return (
            f"now PAUSED: the same command with --session-id {session_id} --start-at "
            f"{resume_at:g} resumes it from its last final's end (audio sent after that may "
            "not have reached it)"
        )
    if heard_to is not None:
        return (
            f"now PAUSED: the same command with --session-id {session_id} and a --start-at "
            f"in the file resumes it; its last final ended at {heard_to:g} s of the session's "
            "audio, a position in the file only if the session's streams sent the file from "
            "its start, once"
        )
    return (
        f"now PAUSED: the same command with --session-id {session_id} resumes it; no "
        "final came back, so how much of the audio it holds is not known (--start-at "
        "SECONDS skips what it has)"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    state = tmp_path_factory.mktemp("stream-cli-state")
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=state, seed=11)
    with running_emulator(settings) as running:
        yield running


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WAV files shared by the tests: a tone's content does not matter to the emulator."""
    folder = tmp_path_factory.mktemp("audio")
    write_wav(folder / "mono5.wav", 5.0)
    write_wav(folder / "stereo5.wav", 5.0, channels=2)
    write_wav(folder / "half.wav", 0.5)
    (folder / "notes.txt").write_text("not audio\n")
    with wave.open(str(folder / "eight.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(bytes(8000))
    one_second = write_wav(folder / "one.wav", 1.0).read_bytes()
    # Sample rate (bytes 24-27 of the canonical header) 0; data cut to 1,001 of 32,000.
    (folder / "zero-rate.wav").write_bytes(one_second[:24] + bytes(4) + one_second[28:])
    (folder / "truncated.wav").write_bytes(one_second[: 44 + 1001])
    flac = io.BytesIO()
    soundfile.write(flac, numpy.zeros(16000 * 5, dtype="int16"), 16000, format="FLAC")
    (folder / "truncated.flac").write_bytes(flac.getvalue()[: len(flac.getvalue()) // 2])
    return folder


def write_wav(path: Path, seconds: float, *, channels: int = 1, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm_tone(seconds, sample_rate=rate, channels=channels))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def emulator_argv(*args: str) -> list[str]:
    """``python -m emulator ARGS`` with this interpreter."""
    return [sys.executable, "-m", "emulator", *args]


def command(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    text: bool = True,
    **run: Any,
) -> subprocess.CompletedProcess[Any]:
    """Run ``python -m emulator ARGS`` to its end, its output captured (as text
    unless ``text`` is false); ``run`` adds ``subprocess.run`` arguments."""
    return subprocess.run(
        emulator_argv(*args),
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=text,
        timeout=90,
        **run,
    )


def stream(
    server: RunningServer, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return command(
        "stream",
        "--endpoint",
        server.endpoint_url,
        "--ca",
        str(server.ca_file),
        *args,
        env=env,
    )


def scripted(server: RunningServer, scenario: dict = SCRIPT) -> str:
    session_id = new_session_id()
    rule = {"match": {"sessionId": session_id}, "scenario": scenario}
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return session_id


def failing(server: RunningServer, error_type: str, message: str) -> str:
    session_id = new_session_id()
    rule = {"match": {"sessionId": session_id}, "error": {"type": error_type, "message": message}}
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return session_id


def _mono5_args(
    server: RunningServer, audio_dir: Path, session_id: str, *extra: str, json_lines: bool
) -> list[str]:
    """The command line streaming mono5.wav as ``session_id`` (for a process run by hand)."""
    args = ["stream", str(audio_dir / "mono5.wav"), "--endpoint", server.endpoint_url]
    args += ["--ca", str(server.ca_file), *extra, "--session-id", session_id]
    return args + (["--json"] if json_lines else [])


def session_details(server: RunningServer, session_id: str) -> dict:
    status, details = admin(server.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 200, details
    return details


# --------------------------------------------------------------------------- success


def test_final_lines_print_as_time_span_and_text_then_a_summary(server, audio_dir):
    """Not on a terminal: only final lines on stdout, no partials, no in-place redraws."""
    session_id = scripted(server)
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == FINAL_LINES
    assert "\r" not in result.stdout
    summary = SUMMARY.match(result.stderr.strip().splitlines()[-1])
    assert summary is not None, result.stderr
    assert summary.groups() == ("2", "3", "5.0", session_id)
    assert session_details(server, session_id)["status"] == "COMPLETED"


def test_json_prints_session_every_event_and_summary_as_json_lines(server, audio_dir):
    session_id = scripted(server)
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id, "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["session"]["sessionId"] == session_id
    assert lines[0]["session"]["mediaEncoding"] == "pcm"
    assert lines[0]["session"]["requestId"]
    segments = [line["transcriptEvent"]["transcriptSegment"] for line in lines[1:-1]]
    finals = [s for s in segments if not s["isPartial"]]
    partials = [s for s in segments if s["isPartial"]]
    assert [s["content"] for s in finals] == [seg["content"] for seg in SCRIPT["segments"][:2]]
    assert len(partials) == 3
    assert all(any(f["content"].startswith(p["content"]) for f in finals) for p in partials)
    assert lines[-1]["summary"] == {
        "sessionId": session_id,
        "requestId": lines[0]["session"]["requestId"],
        "segments": 2,
        "partials": 3,
        "audioSeconds": 5.0,
        "wallSeconds": lines[-1]["summary"]["wallSeconds"],
        "error": None,
        "sessionStatus": None,  # looked up after a failure only
        "lastFinalEnd": 4.0,
        "resumeAt": None,  # a session the command did not start: not known
    }


def test_two_channel_wav_declares_the_given_roles_and_labels_lines_with_them(server, audio_dir):
    session_id = scripted(server)
    result = stream(
        server,
        str(audio_dir / "stereo5.wav"),
        "--session-id",
        session_id,
        "--channels",
        "PATIENT,CLINICIAN",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[00:00.5-00:02.0] ch_0 PATIENT: Good morning, what brings you in today?",
        "[00:02.2-00:04.0] ch_1 CLINICIAN: I have had a cough for two weeks.",
    ]
    details = session_details(server, session_id)
    assert details["configuration"]["channelDefinitions"] == [
        {"channelId": 0, "participantRole": "PATIENT"},
        {"channelId": 1, "participantRole": "CLINICIAN"},
    ]
    assert details["audioSeconds"] == pytest.approx(5.0)


def test_two_channel_wav_without_roles_declares_clinician_then_patient(server, audio_dir):
    session_id = scripted(server)
    result = stream(server, str(audio_dir / "stereo5.wav"), "--session-id", session_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("[00:00.5-00:02.0] ch_0 CLINICIAN: ")
    roles = session_details(server, session_id)["configuration"]["channelDefinitions"]
    assert [r["participantRole"] for r in roles] == ["CLINICIAN", "PATIENT"]


def test_flac_is_sent_as_is_with_the_sample_rate_from_streaminfo(server, tmp_path):
    import numpy as np
    import soundfile

    path = tmp_path / "tone.flac"
    samples = np.frombuffer(pcm_tone(5.0, sample_rate=22050), dtype="<i2")
    soundfile.write(path, samples, 22050, format="FLAC", subtype="PCM_16")
    session_id = scripted(server)
    result = stream(server, str(path), "--session-id", session_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == FINAL_LINES
    details = session_details(server, session_id)
    assert details["headers"]["mediaEncoding"] == "flac"
    assert details["headers"]["mediaSampleRateHertz"] == 22050
    assert details["audioBytes"] == path.stat().st_size
    assert details["audioSeconds"] == pytest.approx(5.0)


def test_a_flac_file_ending_with_a_tag_streams_every_frame(server, tmp_path):
    """The cut-frame check took an ID3v1 tag after the last frame for a cut frame:
    the file was refused as truncated, and through the SDK its last frame lost."""
    from .test_audio import encode_flac

    path = tmp_path / "tagged.flac"
    path.write_bytes(encode_flac(16_000, 1, 16_000 * 3) + b"TAG" + bytes(125))
    session_id = scripted(server)
    result = stream(server, str(path), "--session-id", session_id)
    assert result.returncode == 0, result.stderr
    details = session_details(server, session_id)
    assert (details["status"], details["audioSeconds"]) == ("COMPLETED", pytest.approx(3.0))


def test_realtime_paces_a_short_file_and_completes(server, audio_dir):
    session_id = scripted(server)
    result = stream(server, str(audio_dir / "half.wav"), "--session-id", session_id, "--realtime")
    assert result.returncode == 0, result.stderr
    summary = SUMMARY.match(result.stderr.strip().splitlines()[-1])
    assert summary is not None and summary.group(3) == "0.5"
    assert session_details(server, session_id)["audioSeconds"] == pytest.approx(0.5)


def test_binary_sends_binary_audio_events_of_chunk_ms_each(server, audio_dir):
    session_id = scripted(server)
    result = stream(
        server,
        str(audio_dir / "mono5.wav"),
        "--session-id",
        session_id,
        "--binary",
        "--chunk-ms",
        "250",
    )
    assert result.returncode == 0, result.stderr
    received = session_details(server, session_id)["eventsReceived"]
    assert received["binaryAudioEvent"] == 20  # 5 s in 250 ms events
    assert "audioEvent" not in received


def test_raw_pcm_streams_with_the_given_sample_rate_and_channels(server, tmp_path):
    path = tmp_path / "audio.raw"
    path.write_bytes(pcm_tone(5.0, sample_rate=8000, channels=2))
    session_id = scripted(server)
    result = stream(
        server, str(path), "--session-id", session_id, "--sample-rate", "8000", "--channels", "2"
    )
    assert result.returncode == 0, result.stderr
    details = session_details(server, session_id)
    assert details["headers"]["mediaSampleRateHertz"] == 8000
    assert details["audioSeconds"] == pytest.approx(5.0)


def test_endpoint_and_ca_default_to_the_environment(server, audio_dir):
    env = clean_env(MEDSCRIBE_ENDPOINT=server.endpoint_url, MEDSCRIBE_CA_FILE=str(server.ca_file))
    result = command("stream", str(audio_dir / "half.wav"), env=env)
    assert result.returncode == 0, result.stderr


def test_the_state_directory_ca_is_trusted_without_ca(server, audio_dir):
    assert server.ca_file is not None
    env = clean_env(
        MEDSCRIBE_ENDPOINT=server.endpoint_url, MEDSCRIBE_STATE_DIR=str(server.ca_file.parent)
    )
    result = command("stream", str(audio_dir / "half.wav"), env=env)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- failures


def test_service_error_before_the_stream_exits_1_with_type_and_message(server, audio_dir):
    session_id = failing(server, "ValidationException", "injected by the test")
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id)
    assert result.returncode == 1
    assert result.stdout == ""
    error, summary = result.stderr.strip().splitlines()
    assert error == "error: ValidationException: injected by the test"
    assert stopped(summary) == ("0", "0", "0.0", session_id, "no stream started")


def test_json_reports_a_service_error_then_the_summary(server, audio_dir):
    session_id = failing(server, "ThrottlingException", "slow down")
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id, "--json")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-2] == {"error": {"type": "ThrottlingException", "message": "slow down"}}
    assert lines[-1]["summary"]["error"] == "ThrottlingException"
    assert result.stderr.strip() == "error: ThrottlingException: slow down"


def test_in_stream_fault_exits_1_after_the_finals_before_it(server, audio_dir):
    scenario = {
        "segments": SCRIPT["segments"][:1],
        "faults": [{"at": 3.0, "exception": "internalFailureException", "message": "outage"}],
    }
    session_id = scripted(server, scenario)
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id)
    assert result.returncode == 1
    assert result.stdout.splitlines() == FINAL_LINES[:1]
    error, summary = result.stderr.strip().splitlines()[-2:]
    assert error == "error: InternalServerException: outage"
    assert session_details(server, session_id)["status"] == "FAILED"
    assert stopped(summary)[3:] == (session_id, "now FAILED: a failed session cannot be resumed")


def test_stream_reset_by_the_service_exits_1_and_does_not_hang(server, audio_dir):
    session_id = scripted(server, {"faults": [{"at": 1.0, "disconnect": True}]})
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-2].startswith("error: StreamReset: ")
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr


def test_a_reset_stream_names_its_paused_session_and_the_command_that_resumes_it(server, audio_dir):
    """The id was only in --json's summary: a user who let the command pick one
    could neither resume the session nor look it up. The summary line now ends
    the output on failure too, with the status Get gives; the same command with
    --session-id, as it says, resumes the session to COMPLETED."""
    domain_id = "dom-" + new_session_id().replace("-", "")[:20]
    rule = {
        "match": {"domainId": domain_id},
        "scenario": {"faults": [{"at": 1.0, "disconnect": True}]},
    }
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    args = [str(audio_dir / "mono5.wav"), "--domain-id", domain_id]
    result = stream(server, *args)
    assert result.returncode == 1
    error, summary = result.stderr.strip().splitlines()[-2:]
    assert error == "error: StreamReset: the service ended the stream before all audio was sent"
    session_id = stopped(summary)[3]
    assert session_details(server, session_id)["status"] == "PAUSED"
    assert stopped(summary)[4] == resumes(session_id, None)
    again = stream(server, *args, "--session-id", session_id)
    assert again.returncode == 0, again.stderr
    assert session_details(server, session_id)["status"] == "COMPLETED"


def _domain_rule(server: RunningServer, scenario: dict, chaos: dict) -> str:
    """A rule for a domain of its own (the command then makes the session id up);
    return the domain id."""
    domain_id = "dom-" + new_session_id().replace("-", "")[:20]
    rule = {"match": {"domainId": domain_id}, "scenario": scenario, "chaos": chaos}
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return domain_id


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
def test_a_reset_stream_resumes_from_its_last_finals_end_with_start_at(
    server, audio_dir, json_lines
):
    """The stopped line said to run the same command again, "sending the whole file
    again": the session got the file's start twice (18 s of audio for a 12 s
    visit). A session the command started is now resumed with --start-at at the
    last final's end, which it holds at least: the resume sends the file from
    there (the audio between that end and the break, which the session may
    hold too, goes again), and --json's summary gives the same position."""
    domain_id = _domain_rule(server, SCRIPT, {"disconnect": {"at": 3.0, "mode": "reset"}})
    args = [str(audio_dir / "mono5.wav"), "--domain-id", domain_id]
    first = stream(server, *args, *(["--json"] if json_lines else []))
    assert first.returncode == 1
    if json_lines:
        summary = json.loads(first.stdout.splitlines()[-1])["summary"]
        session_id = summary["sessionId"]
        assert (summary["lastFinalEnd"], summary["resumeAt"]) == (2.0, 2.0)
    else:
        session_id = stopped(first.stderr.strip().splitlines()[-1])[3]
        expected = resumes(session_id, 2.0, resume_at=2.0)
        assert stopped(first.stderr.strip().splitlines()[-1])[4] == expected
    held = session_details(server, session_id)["audioSeconds"]
    assert 2.0 <= held < 5.0
    again = stream(server, *args, "--session-id", session_id, "--start-at", "2")
    assert again.returncode == 0, again.stderr
    assert SUMMARY.match(again.stderr.strip().splitlines()[-1]).group(3) == "3.0"  # sent
    details = session_details(server, session_id)
    assert details["status"] == "COMPLETED"
    assert details["audioSeconds"] == pytest.approx(held + 3.0)  # not held + 5.0


def test_a_sender_cancelled_in_the_sdks_close_is_stopped():
    """The reset test above hung about one run in seven: the reset came while the
    sender was in the SDK's ``input_stream.close()``, writing its end frame into a
    full buffer the reset stream no longer drained. Cancelled there, the SDK's
    publisher flushes that buffer in a ``finally``, which waits for ever: the
    one cancel was spent, and the command waited on its sender. The same SDK
    classes, over a buffer nobody drains, show it; the command's stop cancels
    again until the task has ended."""
    from smithy_aws_event_stream.aio import AWSEventPublisher, SigningConfig
    from smithy_core.aio.types import AsyncBytesProvider
    from smithy_json import JSONCodec

    class Unsigned:  # the end frame's signature does not matter to the buffer
        async def get_identity(self, **_: Any) -> object:
            return object()

        async def sign_empty(self, *, event: Any, **_: Any) -> Any:
            return event

    async def closing() -> asyncio.Task[None]:
        """Return a task in the SDK publisher's close(), writing its end frame."""
        buffer = AsyncBytesProvider(max_buffered_chunks=1)
        await buffer.write(b"the last audio event, never sent")  # the buffer is full
        signing = SigningConfig(
            signer=Unsigned(),  # type: ignore[arg-type]
            signing_properties={},  # type: ignore[typeddict-item]
            identity_resolver=Unsigned(),  # type: ignore[arg-type]
            identity_properties={},  # type: ignore[typeddict-item]
        )
        publisher: Any = AWSEventPublisher(JSONCodec(), buffer, signing_config=signing)
        task = asyncio.create_task(publisher.close())
        await asyncio.sleep(0.05)
        assert not task.done()
        return task

    async def scenario() -> tuple[bool, bool]:
        cancelled_once = await closing()
        cancelled_once.cancel()
        await asyncio.wait({cancelled_once}, timeout=0.5)
        ended_after_one_cancel = cancelled_once.done()
        cancelled_once.cancel()  # (a second cancel ends it)
        stopped = await closing()
        await asyncio.wait_for(streamer._stop(stopped), timeout=10)
        return ended_after_one_cancel, stopped.cancelled()

    ended_after_one_cancel, stopped = asyncio.run(scenario())
    assert not ended_after_one_cancel  # what the command met
    assert stopped


def test_a_resumed_stream_that_breaks_names_the_sessions_time_and_where_it_began():
    """Given --session-id, the session's times need not be the file's (audio may
    repeat or be missing between streams): no number is advised, the last final's
    end is named as the session's time, and the stream's own start in the file."""
    summary = streamer.StreamSummary(
        session_id="s-1", answered=True, session_status="PAUSED", heard_to=15.9, started_at=7.0
    )
    line = streamer._failure_line(summary, "https://localhost:8443")
    assert line.endswith(
        "now PAUSED: the same command with --session-id s-1 and a --start-at in the file "
        "resumes it; its last final ended at 15.9 s of the session's audio, a position in the "
        "file only if the session's streams sent the file from its start, once (this stream "
        "sent it from 7 s)"
    ), line


def test_json_gives_no_resume_point_for_a_session_that_completed(server, audio_dir):
    """resumeAt was given for a COMPLETED session, which nothing resumes."""
    result = stream(server, str(audio_dir / "mono5.wav"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert summary["resumeAt"] is None and summary["sessionStatus"] is None


def test_a_session_holding_the_whole_file_resumes_with_start_at_its_end(server, audio_dir):
    """Reset after its last final, at the file's end: the advice named a start the
    option refused (past the audio). At the very end it sends no audio, only
    END_OF_SESSION, which completes the session."""
    scenario = {"segments": [{"channel": 0, "begin": 0.5, "end": 5.0, "content": "All of it."}]}
    domain_id = _domain_rule(server, scenario, {"disconnect": {"at": 5.0, "mode": "reset"}})
    args = [str(audio_dir / "mono5.wav"), "--domain-id", domain_id]
    first = stream(server, *args)
    assert first.returncode == 1, first.stderr
    session_id = stopped(first.stderr.strip().splitlines()[-1])[3]
    assert stopped(first.stderr.strip().splitlines()[-1])[4] == resumes(
        session_id, 5.0, resume_at=5.0
    )
    again = stream(server, *args, "--session-id", session_id, "--start-at", "5")
    assert again.returncode == 0, again.stderr
    details = session_details(server, session_id)
    assert (details["status"], details["audioSeconds"]) == ("COMPLETED", 5.0)


@pytest.mark.parametrize(
    ("file", "start", "message"),
    [
        (
            "mono5.wav",
            "5.0004",  # as given, not rounded to a start the option takes
            "error: --start-at 5.0004: {dir}/mono5.wav holds 5.000 s of audio",
        ),
        (
            "mono5.wav",
            "5",
            "error: --start-at 5.0 leaves none of {dir}/mono5.wav's audio: that completes a "
            "paused session given by --session-id, and would start an empty one",
        ),
        (
            "five.flac",
            "1.5",
            "error: --start-at takes WAV or raw PCM; {dir}/five.flac is FLAC: cut it first "
            "(e.g. sox {dir}/five.flac rest.flac trim 1.5)",
        ),
        ("mono5.wav", "-1", "--start-at: '-1' must be 0 or more seconds"),
        ("mono5.wav", "nan", "--start-at: 'nan' must be 0 or more seconds"),
        ("mono5.wav", "abc", "--start-at: 'abc' is not a number of seconds"),
    ],
    ids=["past-the-end", "the-end-for-a-new-session", "flac", "negative", "nan", "not-a-number"],
)
def test_a_start_the_file_cannot_have_is_a_usage_error(server, audio_dir, file, start, message):
    if file.endswith(".flac") and not (audio_dir / file).exists():
        soundfile.write(audio_dir / file, numpy.zeros(16000 * 5, dtype="int16"), 16000)
    result = stream(server, str(audio_dir / file), "--start-at", start)
    assert result.returncode == 2
    assert message.format(dir=audio_dir) in result.stderr, result.stderr


@pytest.mark.parametrize("mode", ["reset", "close"])
def test_a_stream_reset_after_the_last_audio_exits_1_naming_the_session_status(
    server, audio_dir, mode
):
    """Reset or closed after the last audio event, the output ended as a whole
    session's does and every send had returned: the command printed done and exited
    0 with the session PAUSED. It now asks Get, as examples/stream_wav.py does."""
    session_id = new_session_id()
    rule = {
        "match": {"sessionId": session_id},
        "scenario": SCRIPT,
        "chaos": {"disconnect": {"at": 5.0, "mode": mode}},
    }
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id)
    assert session_details(server, session_id)["status"] == "PAUSED"
    assert result.returncode == 1, result.stderr
    error, summary = result.stderr.strip().splitlines()[-2:]
    assert error == (
        "error: StreamReset: the stream ended after the last audio with the session PAUSED, "
        "not COMPLETED: it was reset or closed before END_OF_SESSION took effect"
    )
    assert stopped(summary)[3:] == (session_id, resumes(session_id, 4.0))


@pytest.mark.parametrize("refusal", ["InternalServerException", "AccessDeniedException"])
def test_a_stream_ending_after_its_audio_is_not_done_when_the_look_up_fails(
    server, audio_dir, refusal
):
    """Reset at the last audio, the output ends as a whole session's
    does: only Get tells them apart. When Get failed (refused, or the emulator
    stopped mid-stream), the command said done and exited 0 with the session
    PAUSED. Nothing says it completed: Unconfirmed (it may have), status unknown."""
    session_id = new_session_id()
    rules = [
        {
            "match": {"sessionId": session_id},
            "scenario": SCRIPT,
            "chaos": {"disconnect": {"at": 5.0, "mode": "reset"}},
        },
        {
            "match": {"sessionId": session_id, "operation": "GetMedicalScribeListeningSession"},
            "error": {"type": refusal, "message": "no look-ups today"},
        },
    ]
    for rule in rules:
        status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
        assert status == 201, body
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id, "--json")
    assert session_details(server, session_id)["status"] == "PAUSED"
    assert result.returncode == 1, result.stderr
    *_, error, summary = (json.loads(line) for line in result.stdout.splitlines())
    assert error["error"]["type"] == "Unconfirmed"  # it may have completed
    message = error["error"]["message"]
    said = f"looking up the session to tell which failed ({refusal}: no look-ups today)"
    if refusal == "AccessDeniedException":  # the identity may stream, not look up
        said += ": allow the identity GetMedicalScribeListeningSession to have it confirmed"
    assert message.endswith(said), message
    assert summary["summary"]["error"] == "Unconfirmed"
    assert summary["summary"]["sessionStatus"] is None  # unknown: Get failed again


def test_a_session_the_command_started_whose_look_up_fails_says_where_it_resumes_if_paused(
    server, audio_dir
):
    """Its status unknown, the stopped line gave no resume position though the last
    final's end was known: it now says where it resumes if PAUSED, as after Ctrl-C."""
    domain_id = "dom-" + new_session_id().replace("-", "")[:20]
    rules = [
        {
            "match": {"domainId": domain_id},
            "scenario": SCRIPT,
            "chaos": {"disconnect": {"at": 5.0, "mode": "reset"}},
        },
        {
            "match": {"domainId": domain_id, "operation": "GetMedicalScribeListeningSession"},
            "error": {"type": "InternalServerException", "message": "no look-ups today"},
        },
    ]
    for rule in rules:
        status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
        assert status == 201, body
    result = stream(server, str(audio_dir / "mono5.wav"), "--domain-id", domain_id)
    assert result.returncode == 1, result.stderr
    error, summary = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: Unconfirmed: the stream ended after the last audio")
    session_id = stopped(summary)[3]
    assert session_details(server, session_id)["status"] == "PAUSED"
    assert stopped(summary)[4] == (
        f"its status unknown (Get failed): GET /_emulator/sessions/{session_id} on the "
        "emulator's cleartext port, or GetMedicalScribeListeningSession, gives it; if PAUSED, "
        f"the same command with --session-id {session_id} --start-at 4 resumes it from its "
        "last final's end (audio sent after that may not have reached it)"
    )


def corrupting(server: RunningServer, at: float) -> str:
    """A scripted session whose response carries a frame with a bad CRC at audio time ``at``."""
    session_id = new_session_id()
    rule = {
        "match": {"sessionId": session_id},
        "scenario": SCRIPT,
        "chaos": {"malformed": {"at": at}},
    }
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return session_id


def test_a_corrupt_frame_is_a_broken_response_stream_not_an_unreachable_endpoint(server, audio_dir):
    """The endpoint answered: the error says the response stream broke, after how many
    events and why, and the finals before it are printed (exit 1 as for any failure)."""
    session_id = corrupting(server, 3.0)
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id)
    assert result.returncode == 1
    assert result.stdout.splitlines() == FINAL_LINES[:1]
    url = re.escape(server.endpoint_url)
    error, summary = result.stderr.strip().splitlines()
    assert re.fullmatch(
        rf"error: StreamError: the response stream from {url} broke after 3 events: "
        r"Checksum mismatch: expected 0x[0-9a-f]+, calculated 0x[0-9a-f]+",
        error,
    ), result.stderr
    assert stopped(summary)[:2] == ("1", "2") and stopped(summary)[3] == session_id
    status = session_details(server, session_id)["status"]
    assert status == "PAUSED" and stopped(summary)[4] == resumes(session_id, 2.0)


def test_json_reports_a_broken_response_stream_as_a_stream_error(server, audio_dir):
    session_id = corrupting(server, 3.0)
    result = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id, "--json")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-2]["error"]["type"] == "StreamError"
    assert lines[-2]["error"]["message"].startswith(
        f"the response stream from {server.endpoint_url} broke after 3 events: Checksum mismatch"
    )
    assert lines[-1]["summary"]["error"] == "StreamError"
    assert lines[-1]["summary"]["segments"] == 1


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Start the children made inside with SIGINT at its default, as from a terminal.

    A shell runs a background job (``pytest ... &`` in a script, as a CI step or a
    review harness may) with SIGINT ignored, and its children inherit that: Python
    then installs no KeyboardInterrupt handler, and the child streams on through
    a Ctrl-C. (A caught signal, unlike an ignored one, is reset by exec.)
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interruptible(args: list[str]) -> subprocess.Popen[str]:
    """``python -m emulator ARGS`` with its output piped, SIGINT at its default."""
    with sigint_not_ignored():
        return subprocess.Popen(
            emulator_argv(*args),
            cwd=REPO,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def test_ctrl_c_ends_the_stream_with_status_130_and_a_summary(server, tmp_path):
    """SIGINT mid-stream: the JSON output still ends with an error and the summary."""
    # A minute of audio in real time: however slow a loaded machine starts the
    # command, the signal comes long before the stream could end by itself.
    minute = write_wav(tmp_path / "minute.wav", 60.0)
    args = ["stream", str(minute), "--endpoint", server.endpoint_url]
    args += ["--ca", str(server.ca_file), "--realtime", "--json"]
    process = _interruptible(args)
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())  # the session has started
        assert "session" in first
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, (out, err)
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-2]["error"]["type"] == "Interrupted"
    assert lines[-1]["summary"]["error"] == "Interrupted"
    assert err.strip() == "error: interrupted"


@pytest.mark.parametrize(
    ("sent", "status", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_ends_the_text_output_with_the_session_and_how_to_look_it_up(
    server, tmp_path, sent, status, said
):
    """Without --json a Ctrl-C printed "error: interrupted" alone: the session's id
    was lost. Its status is not looked up on the way out: the line says where.
    SIGTERM (a CI job's timeout, timeout(1), docker stop) ended the command with
    "SIGTERM received: stopped" alone: it now stops it as Ctrl-C does."""
    minute = write_wav(tmp_path / "minute.wav", 60.0)
    script = {"segments": [{"begin": 0.1, "end": 0.4, "content": "Hello."}]}
    session_id = scripted(server, script)
    args = ["stream", str(minute), "--endpoint", server.endpoint_url]
    args += ["--ca", str(server.ca_file), "--realtime", "--session-id", session_id]
    process = _interruptible(args)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("[00:00.1-00:00.4]")
        process.send_signal(sent)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == status, err
    error, summary = err.strip().splitlines()
    assert error == f"error: {said}"
    assert stopped(summary)[3:] == (
        session_id,
        f"its status not looked up: GET /_emulator/sessions/{session_id} on the emulator's "
        "cleartext port, or GetMedicalScribeListeningSession, gives it",
    )


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
def test_ctrl_c_after_a_final_says_where_the_session_resumes_if_paused(
    server, tmp_path, json_lines
):
    """The status is not looked up on the way out, and the line gave no resume
    advice, though the last final's end was known: it now says where a session
    the command started resumes if it is PAUSED (--json gives that end, its
    resumeAt being for a session Get said was PAUSED)."""
    minute = write_wav(tmp_path / "minute.wav", 60.0)
    domain_id = "dom-" + new_session_id().replace("-", "")[:20]
    script = {"segments": [{"begin": 0.1, "end": 0.4, "content": "Hello."}]}
    rule = {"match": {"domainId": domain_id}, "scenario": script}
    status, body = admin(server.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    args = ["stream", str(minute), "--endpoint", server.endpoint_url, "--ca", str(server.ca_file)]
    args += ["--realtime", "--domain-id", domain_id, *(["--json"] if json_lines else [])]
    process = _interruptible(args)
    try:
        assert process.stdout is not None
        if json_lines:
            assert "session" in json.loads(process.stdout.readline())
            segment = {"isPartial": True}
            while segment["isPartial"]:  # until the final
                event = json.loads(process.stdout.readline())
                segment = event["transcriptEvent"]["transcriptSegment"]
        else:
            assert process.stdout.readline().startswith("[00:00.1-00:00.4]")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    if json_lines:
        summary = json.loads(out.splitlines()[-1])["summary"]
        # resumeAt is given with a PAUSED status only: the last final's end is here.
        assert (summary["lastFinalEnd"], summary["sessionStatus"], summary["resumeAt"]) == (
            0.4,
            None,
            None,
        )
        return
    session_id = stopped(err.strip().splitlines()[-1])[3]
    assert stopped(err.strip().splitlines()[-1])[4] == (
        f"its status not looked up: GET /_emulator/sessions/{session_id} on the emulator's "
        "cleartext port, or GetMedicalScribeListeningSession, gives it; if PAUSED, the same "
        f"command with --session-id {session_id} --start-at 0.4 resumes it from its last "
        "final's end (audio sent after that may not have reached it)"
    )


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
def test_a_reader_that_closes_the_output_stops_the_stream_naming_its_session(
    server, audio_dir, json_lines
):
    """`stream --json | head -1`: no traceback, the status SIGPIPE would leave, the
    session left resumable (paused), as a client gone mid-stream leaves it, and
    stderr naming it as after Ctrl-C (with --json too: its summary went with the output)."""
    session_id = scripted(server)  # two finals: the second is written after the close
    args = _mono5_args(server, audio_dir, session_id, "--realtime", json_lines=json_lines)
    read, write = os.pipe()
    process = subprocess.Popen(
        emulator_argv(*args),
        cwd=REPO,
        env=clean_env(),
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write)
    try:
        with os.fdopen(read, "rb") as reader:
            first = reader.readline()  # the session line, or the first final
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert first
    assert process.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    details = session_details(server, session_id)
    assert details["status"] == "PAUSED"
    error, summary = err.strip().splitlines()
    assert error == "error: output closed by its reader"
    # The final the closed output could not take was received all the same (with
    # --json the line after the first is a partial's: no final came back).
    heard = None if json_lines else 4.0
    assert stopped(summary)[3:] == (session_id, resumes(session_id, heard))


@pytest.mark.parametrize("given", ["/dev/stdin", "-"])
def test_a_wav_read_from_a_pipe_streams_like_the_file(server, audio_dir, given):
    """`stream /dev/stdin < visit.wav` (or sox ... | stream -): the pipe is read
    once. `-` said "-: no such file"."""
    args = ["stream", given, "--endpoint", server.endpoint_url, "--ca", str(server.ca_file)]
    with open(audio_dir / "half.wav", "rb") as source:
        result = command(*args, "--json", stdin=source)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert summary["audioSeconds"] == 0.5


def test_a_refused_request_reports_no_audio_sent(server, audio_dir):
    """The SDK queues audio before the answer; none of it reached a session."""
    session_id = failing(server, "ThrottlingException", "slow down")
    result = stream(server, str(audio_dir / "half.wav"), "--json", "--session-id", session_id)
    assert result.returncode == 1
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert summary["error"] == "ThrottlingException"
    assert summary["audioSeconds"] == 0


def test_a_tls_client_on_the_cleartext_port_is_told_which_port(server, audio_dir):
    url = server.h2c_url.replace("http://", "https://")
    result = stream(server, str(audio_dir / "half.wav"), "--endpoint", url)
    assert result.returncode == 1
    assert "is it the emulator's TLS port?" in result.stderr, result.stderr


def test_the_ca_from_the_environment_is_named_as_such(audio_dir, tmp_path):
    env = clean_env(MEDSCRIBE_CA_FILE=str(tmp_path / "gone.pem"))
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", "https://127.0.0.1:9", env=env
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"error: MEDSCRIBE_CA_FILE {tmp_path / 'gone.pem'}: no such file"
    )


def test_an_aws_region_variable_the_sdk_cannot_take_is_named(audio_dir):
    env = clean_env(AWS_REGION="bad region")
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", "https://127.0.0.1:9", env=env
    )
    assert result.returncode == 2
    assert "AWS_REGION 'bad region' is not an AWS region name" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_aws_endpoint_without_aws_credentials_is_said_at_once(audio_dir, tmp_path):
    """The SDK resolves credentials inside the stream request's task and, when that
    fails, its call to start the stream waits for ever: the command hung, silent.
    No network is needed: the credentials are looked for first."""
    env = {
        k: v
        for k, v in clean_env(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true").items()
        if not k.startswith("AWS_") or k == "AWS_EC2_METADATA_DISABLED"
    }
    aws = "https://streaming.health-agent.us-east-1.amazonaws.com"
    result = command("stream", str(audio_dir / "half.wav"), "--endpoint", aws, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: no AWS credentials for {aws}: ")
    assert "--access-key-id and --secret-access-key" in result.stderr
    assert "Traceback" not in result.stderr and "Unclosed" not in result.stderr


def test_a_ctrl_c_while_the_command_loads_ends_it_quietly(monkeypatch):
    from emulator import __main__ as entry
    from emulator import cli

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    assert entry.console() == 130


def test_unreachable_endpoint_exits_1_naming_it(audio_dir):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", f"https://127.0.0.1:{port}"
    )
    assert result.returncode == 1
    line, summary = result.stderr.strip().splitlines()
    assert line.startswith(f"error: ConnectionError: cannot reach https://127.0.0.1:{port}: ")
    assert stopped(summary)[4] == "no stream started"


def test_tls_to_a_cleartext_port_cannot_reach_it(server, audio_dir):
    """The handshake fails before any response; the SDK calls that a timeout, which
    before a response is a failure to connect, not a service error."""
    url = server.h2c_url.replace("http://", "https://")
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", url, "--ca", str(server.ca_file)
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: ConnectionError: cannot reach {url}: ")


def test_an_http_endpoint_is_refused_before_connecting(server, audio_dir):
    """Over http:// the SDK speaks HTTP/1.1 and sends no audio: on the cleartext
    port the emulator refuses such a stream, and on the TLS port it answers 400;
    the command says why before trying either."""
    for url in (server.endpoint_url.replace("https://", "http://"), server.h2c_url):
        result = command("stream", str(audio_dir / "half.wav"), "--endpoint", url)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == (
            f"error: --endpoint {url!r}: the AWS SDK sends no audio over http://; use the "
            "emulator's https:// endpoint (its CA with --ca)"
        )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("notaurl", "must be an https:// URL with a host"),
        ("https://", "must be an https:// URL with a host"),
        ("ftp://127.0.0.1:1", "must be an https:// URL with a host"),
        ("https://127.0.0.1:99999", "is not a URL: Port out of range"),
        ("https://127.0.0.1:port", "is not a URL"),
    ],
)
def test_a_malformed_endpoint_is_a_usage_error_not_a_hang(audio_dir, value, fragment):
    """The SDK waited for ever on 'notaurl' and 'https://'."""
    for args, env in ((("--endpoint", value), {}), ((), {"MEDSCRIBE_ENDPOINT": value})):
        result = command("stream", str(audio_dir / "half.wav"), *args, env={**clean_env(), **env})
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert line.startswith(f"error: {'--endpoint' if args else 'MEDSCRIBE_ENDPOINT'} ")
        assert fragment in line and "\n" not in line


def test_without_a_ca_the_emulators_certificate_stops_the_command_at_once(
    server, audio_dir, tmp_path
):
    """No --ca, no MEDSCRIBE_CA_FILE and no .medscribe/ca.pem in the working directory:
    the command waited 10-30 s for the SDK's refusal, which then asked whether --ca
    (never given) was right. A certificate from an emulator's local CA is in no
    system trust store: it now stops at once, saying no CA was given and where the
    emulator's is."""
    started = time.monotonic()
    result = command(
        "stream",
        str(audio_dir / "half.wav"),
        "--endpoint",
        server.endpoint_url,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    error, summary = result.stderr.strip().split("\n")
    assert error.startswith(
        f"error: ConnectionError: cannot reach {server.endpoint_url}: its certificate is the "
        "emulator's, whose CA the system trust store does not hold (Python's TLS check: "
    ), error
    assert error.endswith(
        "and no CA was given (no --ca, no MEDSCRIBE_CA_FILE, no .medscribe/ca.pem in this "
        "directory). Give the emulator's CA with --ca: ca.pem in its state directory "
        "(--state-dir; .medscribe where it was started, by default), or a copy from GET "
        "/_emulator/ca.pem on its cleartext port (8080 by default)"
    ), error
    assert stopped(summary)[4] == "no stream started"
    assert elapsed < 10, elapsed  # the SDK's TLS client takes 10-30 s to refuse


def test_the_state_directory_looked_in_for_a_ca_is_named_when_none_was_found(
    server, audio_dir, tmp_path
):
    state = tmp_path / "elsewhere"
    env = clean_env(MEDSCRIBE_STATE_DIR=str(state))
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", server.endpoint_url, env=env
    )
    assert result.returncode == 1
    assert f"no CA was given (no --ca, no MEDSCRIBE_CA_FILE, no {state / 'ca.pem'}). " in (
        result.stderr
    )


def _verifying(tmp_path: Path, access_key_id: str, secret_access_key: str) -> Settings:
    """An emulator's settings that verify signatures, knowing this one key pair."""
    return Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path / "state",
        verify_signatures=True,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
    )


def test_a_verifying_emulator_takes_the_key_pair_given_by_option_or_environment(
    tmp_path, audio_dir
):
    """Against --verify-signatures the dummy pair is refused (401, exit 1); the pair given
    with --access-key-id/--secret-access-key, or in the variables the server reads, signs."""
    settings = _verifying(tmp_path, "AKIDSTREAMTEST", "stream-secret")
    wav = str(audio_dir / "half.wav")
    with running_emulator(settings) as running:
        refused = stream(running, wav)
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            "error: AccessDeniedException: The security token included in the request is "
            "invalid: unknown access key id 'AKIDEXAMPLE'\n"
            f"note: {DUMMY_PAIR_NOTE}\n"
        )
        signed = stream(
            running,
            wav,
            "--access-key-id",
            "AKIDSTREAMTEST",
            "--secret-access-key",
            "stream-secret",
        )
        assert signed.returncode == 0, signed.stderr
        assert SUMMARY.match(signed.stderr.strip().splitlines()[-1]), signed.stderr
        from_env = stream(
            running,
            wav,
            env=clean_env(
                MEDSCRIBE_ACCESS_KEY_ID="AKIDSTREAMTEST",
                MEDSCRIBE_SECRET_ACCESS_KEY="stream-secret",
            ),
        )
        assert from_env.returncode == 0, from_env.stderr
        wrong = stream(
            running, wav, "--access-key-id", "AKIDSTREAMTEST", "--secret-access-key", "not-it"
        )
        assert wrong.returncode == 1
        assert "AccessDeniedException" in wrong.stderr
        assert "not-it" not in wrong.stderr and "stream-secret" not in wrong.stderr
        assert "dummy pair" not in wrong.stderr  # a pair was given


DUMMY_PAIR_NOTE = (
    "no key pair was given, so the command signed with its dummy pair (access key id "
    "AKIDEXAMPLE, a secret of its own): give the pair the emulator verifies with "
    "--access-key-id and --secret-access-key (or MEDSCRIBE_ACCESS_KEY_ID and "
    "MEDSCRIBE_SECRET_ACCESS_KEY)"
)


def test_the_dummy_pair_refused_by_the_readmes_verifying_emulator_is_said_to_be_the_dummy(
    tmp_path, audio_dir
):
    """The README's --verify-signatures example uses the dummy pair's key id,
    AKIDEXAMPLE: the 401 said the signature does not match for that id, and the
    user looked for a signing bug. A note says the command signed with its dummy
    pair and how to give the real one; --json keeps its lines, the note on stderr."""
    settings = _verifying(tmp_path, "AKIDEXAMPLE", "s3cret")
    wav = str(audio_dir / "half.wav")
    with running_emulator(settings) as running:
        text = stream(running, wav)
        as_json = stream(running, wav, "--json")
    assert text.returncode == as_json.returncode == 1
    lines = text.stderr.strip().splitlines()
    assert lines[0].startswith(
        "error: AccessDeniedException: The request signature we calculated does not match"
    )
    assert lines[-2:] == [f"note: {DUMMY_PAIR_NOTE}", lines[-1]]
    assert stopped(lines[-1])[4] == "no stream started"
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [list(event) for event in events] == [["error"], ["summary"]]
    assert as_json.stderr.strip().splitlines()[-1] == f"note: {DUMMY_PAIR_NOTE}"


def test_an_access_denied_that_is_no_signature_problem_gets_no_note_on_the_dummy_pair(
    server, audio_dir
):
    session_id = failing(server, "AccessDeniedException", "not allowed in this domain")
    result = stream(server, str(audio_dir / "half.wav"), "--session-id", session_id)
    assert result.returncode == 1
    error, summary = result.stderr.strip().splitlines()
    assert error == "error: AccessDeniedException: not allowed in this domain"
    assert stopped(summary)[3:] == (session_id, "no stream started")


def test_without_the_sdk_stream_exits_2_naming_the_extra(audio_dir, tmp_path):
    hidden = tmp_path / "no-sdk" / "aws_sdk_connecthealth"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(
        "raise ImportError('No module named aws_sdk_connecthealth')\n"
    )
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent), env["PYTHONPATH"]])
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", "https://127.0.0.1:9", env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the stream command needs the AWS SDK: pip install 'medscribe-emulator[sdk]' "
        "(or aws-sdk-connecthealth)"
    ]


def _old_sdk(folder: Path, version: str) -> dict[str, str]:
    """An environment whose ``aws-sdk-connecthealth`` is ``version``: a package of
    that name, without the names 0.11 added, ahead of the real one on the path."""
    package = folder / "aws_sdk_connecthealth"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    info = folder / f"aws_sdk_connecthealth-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: aws-sdk-connecthealth\nVersion: {version}\n"
    )
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    return env


def test_a_state_dirs_ca_this_user_cannot_reach_is_one_line(
    audio_dir, tmp_path, monkeypatch, capsys
):
    """The emulator makes its state directory 0700: another user's ``stream``, whose
    default CA is that directory's ca.pem, died with a PermissionError traceback.
    (Path.is_file raises it; simulated, as these tests may run as root.)"""
    from emulator.cli import main

    state = tmp_path / "private-state"
    state.mkdir()
    is_file = Path.is_file

    def private(path: Path) -> bool:
        if path.parent == state:
            raise PermissionError(13, "Permission denied", str(path))
        return is_file(path)

    monkeypatch.setattr(Path, "is_file", private)
    monkeypatch.setenv("MEDSCRIBE_STATE_DIR", str(state))
    monkeypatch.delenv("MEDSCRIBE_CA_FILE", raising=False)
    code = main(["stream", str(audio_dir / "half.wav"), "--endpoint", "https://127.0.0.1:9"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: the state directory's CA {state / 'ca.pem'}: this user cannot reach it (the "
        "emulator makes its state directory private to the user running it): give --ca a "
        "copy, fetched from the emulator's GET /_emulator/ca.pem"
    ]


def test_an_sdk_importable_without_its_metadata_is_let_through(monkeypatch):
    """A vendored copy or a source checkout has no dist-info: it was refused as not
    installed, where the earlier release used it."""
    import importlib.util
    from importlib import metadata

    from emulator import sdk_version

    def no_metadata(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(sdk_version.metadata, "version", no_metadata)
    assert sdk_version.sdk_problem() is None  # the real one imports: try it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert sdk_version.sdk_problem("stream") == (
        "stream needs the AWS SDK for Python's Connect Health client: "
        "pip install 'medscribe-emulator[sdk]' (or aws-sdk-connecthealth)"
    )


@pytest.mark.parametrize("version", ["0.9.0", "0.10.0"])
def test_an_sdk_too_old_for_the_helpers_is_named_with_its_version(audio_dir, tmp_path, version):
    """SDKs before 0.11 lack names emulator.sdk imports (or, 0.10, ``async with``
    on the client): the error said to install the SDK that was installed."""
    env = _old_sdk(tmp_path / "old", version)
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", "https://127.0.0.1:9", env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: the stream command needs aws-sdk-connecthealth 0.11 or later, and {version} "
        "is installed: pip install 'medscribe-emulator[sdk]' (or aws-sdk-connecthealth). An "
        "app pinned to an older SDK can still use the emulator: build its client as the "
        "README's plain-SDK example does"
    ]
    imported = subprocess.run(
        [sys.executable, "-c", "import emulator.sdk"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 1
    assert (
        f"ImportError: emulator.sdk needs aws-sdk-connecthealth 0.11 or later, and {version} "
        "is installed"
    ) in imported.stderr


USAGE_ERRORS = {
    "missing-file": (["{dir}/missing.wav"], "no such file"),
    "unknown-flag": (["{dir}/half.wav", "--bogus"], "unrecognized arguments: --bogus"),
    "bad-roles": (["{dir}/half.wav", "--channels", "DOCTOR,PATIENT"], "--channels"),
    "roles-on-mono": (["{dir}/half.wav", "--channels", "CLINICIAN,PATIENT"], "has 1"),
    "realtime-and-fast": (["{dir}/half.wav", "--realtime", "--fast"], "not allowed with"),
    "bad-template": (["{dir}/half.wav", "--template", "SOAP"], "--template"),
    "zero-chunk": (["{dir}/half.wav", "--chunk-ms", "0"], "--chunk-ms"),
    "oversized-chunk": (["{dir}/half.wav", "--chunk-ms", "1500"], "32000 bytes"),
    "raw-without-rate": (["{dir}/notes.txt"], "--sample-rate"),
    "rate-disagrees": (["{dir}/half.wav", "--sample-rate", "8000"], "16000 Hz"),
    "eight-bit-wav": (["{dir}/eight.wav"], "8-bit samples"),
    "missing-ca": (["{dir}/half.wav", "--ca", "{dir}/nope.pem"], "no such file"),
    "ca-is-a-directory": (["{dir}/half.wav", "--ca", "{dir}"], "audio0: is a directory"),
    "same-role-twice": (["{dir}/stereo5.wav", "--channels", "CLINICIAN,CLINICIAN"], "both"),
    "bad-region": (["{dir}/half.wav", "--region", "bad region"], "--region 'bad region' is not"),
    "zero-rate-wav": (["{dir}/zero-rate.wav"], "sample rate of 0 Hz"),
    "truncated-wav": (["{dir}/truncated.wav"], "truncated: its header announces 32000 bytes"),
    "truncated-flac": (
        ["{dir}/truncated.flac"],
        "truncated: its STREAMINFO announces 80000 samples",
    ),
    "missing-audio-argument": ([], "AUDIO"),
    "key-without-secret": (
        ["{dir}/half.wav", "--access-key-id", "AKIDTEST"],
        "--secret-access-key",
    ),
    "secret-without-key": (["{dir}/half.wav", "--secret-access-key", "s3cret"], "--access-key-id"),
    "token-without-key": (
        ["{dir}/half.wav", "--session-token", "t0ken"],
        "--session-token needs the --access-key-id and --secret-access-key it belongs to",
    ),
}


@pytest.mark.parametrize(("args", "fragment"), list(USAGE_ERRORS.values()), ids=list(USAGE_ERRORS))
def test_usage_and_file_errors_exit_2_with_one_line(audio_dir, args, fragment):
    result = command(
        "stream",
        *[a.format(dir=audio_dir) for a in args],
        "--endpoint",
        "https://127.0.0.1:9",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error: " in lines[0] and fragment in lines[0]


# --------------------------------------------------------------------------- terminal


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; return (exit code, all output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            output += data
    finally:
        os.close(master)
    return proc.wait(timeout=10), output.decode()


def test_on_a_terminal_partials_are_redrawn_in_place_under_the_final_lines(server, audio_dir):
    session_id = scripted(server)
    code, output = run_in_terminal(
        [
            sys.executable,
            "-m",
            "emulator",
            "stream",
            str(audio_dir / "mono5.wav"),
            "--endpoint",
            server.endpoint_url,
            "--ca",
            str(server.ca_file),
            "--session-id",
            session_id,
        ],
        clean_env(COLUMNS="200"),
    )
    assert code == 0, output
    draws = output.split("\r\x1b[K")
    first = SCRIPT["segments"][0]["content"]
    # A live line shows a partial: a proper prefix of the first utterance, in place.
    assert any("[00:00.5-" in d and first not in d and "Good" in d for d in draws), output
    # The progress indicator counts seconds sent out of the total.
    assert any(re.search(r"\[\s*5\.0/5\.0 s\]", d) for d in draws), output
    # Finals end up on lines of their own, and the summary last.
    lines = [line.split("\x1b[K")[-1] for line in output.split("\r\n")]
    assert FINAL_LINES[0] in lines and FINAL_LINES[1] in lines
    assert SUMMARY.match([line for line in lines if line][-1])


# --------------------------------------------------------------------------- help and units


def _options(command_name: str) -> list[str]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command_name]  # type: ignore[union-attr]
    return [flag for action in sub._actions for flag in action.option_strings]


@pytest.mark.parametrize("command_name", ["stream", "serve"])
def test_help_of_each_command_mentions_every_option(command_name):
    result = command(command_name, "--help")
    assert result.returncode == 0
    for flag in _options(command_name):
        assert flag in result.stdout, flag
    if command_name == "stream":
        assert "AUDIO" in result.stdout and "exit status" in result.stdout


def test_help_says_what_the_readme_does_of_summaries_exit_statuses_and_fixtures():
    """stream --help promised a summary at the end, printed on success only, and
    listed no 141; serve --help left resources.yaml out of the fixtures directory."""
    text = " ".join(command("stream", "--help").stdout.split())
    assert 'After a failure it follows the error line ("stopped: ...")' in text
    assert "resumed by the same command with --session-id" in text
    assert "130 interrupted (Ctrl-C); 143 stopped by SIGTERM" in text
    assert "141 whatever read the output closed it" in text
    serve = " ".join(command("serve", "--help").stdout.split())
    assert "fixtures directory with scenarios/, rules.yaml and resources.yaml" in serve


def test_default_ids_satisfy_the_model_patterns():
    assert re.fullmatch(r"(hai-|dom-)[a-z0-9]+", streamer.DEFAULT_DOMAIN_ID)
    assert 20 <= len(streamer.DEFAULT_DOMAIN_ID) <= 25
    assert re.fullmatch(r"sub-[a-zA-Z0-9]{21}", streamer.DEFAULT_SUBSCRIPTION_ID)


def test_time_spans_round_to_tenths_carrying_into_minutes():
    class Segment:
        audio_begin_offset = 59.96
        audio_end_offset = 61.04
        channel_id = "ch_1"
        content = "Hello."

    assert streamer.format_final(Segment(), ["CLINICIAN", "PATIENT"]) == (
        "[01:00.0-01:01.0] ch_1 PATIENT: Hello."
    )


def test_aws_endpoints_get_the_system_trust_store_not_the_emulator_ca(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    aws, local = "https://health-agent.us-east-1.amazonaws.com", "https://localhost:8443"
    assert streamer.is_aws_endpoint(aws) and not streamer.is_aws_endpoint(local)
    assert streamer.default_ca_file(local, {}) is None  # no .medscribe/ca.pem here
    (tmp_path / ".medscribe").mkdir()
    (tmp_path / ".medscribe" / "ca.pem").write_text("a CA")
    assert streamer.default_ca_file(local, {}) == Path(".medscribe/ca.pem")
    assert streamer.default_ca_file(aws, {}) is None
    assert streamer.default_ca_file(aws, {"MEDSCRIBE_CA_FILE": "my.pem"}) == Path("my.pem")


def test_the_emulators_key_variables_sign_for_an_emulator_never_for_aws():
    """MEDSCRIBE_ACCESS_KEY_ID/MEDSCRIBE_SECRET_ACCESS_KEY are the emulator's: against AWS
    the caller's credential chain applies unless the options give a pair."""
    from emulator.cli import stream_options

    parser = build_parser()
    env = {"MEDSCRIBE_ACCESS_KEY_ID": "AKIDEMU", "MEDSCRIBE_SECRET_ACCESS_KEY": "emu-secret"}
    local = stream_options(
        parser.parse_args(["stream", "a.wav", "--endpoint", "https://localhost:8443"]), env
    )
    assert (local.access_key_id, local.secret_access_key) == ("AKIDEMU", "emu-secret")
    aws = "https://health-agent.us-east-1.amazonaws.com"
    chain = stream_options(parser.parse_args(["stream", "a.wav", "--endpoint", aws]), env)
    assert (chain.access_key_id, chain.secret_access_key) == (None, None)
    given = ["--access-key-id", "AKIDMINE", "--secret-access-key", "mine"]
    explicit = stream_options(
        parser.parse_args(["stream", "a.wav", "--endpoint", aws, *given]), env
    )
    assert (explicit.access_key_id, explicit.secret_access_key) == ("AKIDMINE", "mine")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Segment:
    def __init__(self, content: str, *, partial: bool) -> None:
        self.segment_id = "seg-1"
        self.audio_begin_offset = 0.5
        self.audio_end_offset = 2.0
        self.is_partial = partial
        self.channel_id = None
        self.content = content


def test_with_stdout_redirected_only_the_progress_is_drawn_on_a_terminal_stderr():
    out, err = io.StringIO(), _Terminal()
    renderer = streamer.TextRenderer(out=out, err=err)
    renderer.progress(1.0, 2.0)
    renderer.segment(_Segment("Good", partial=True))
    renderer.segment(_Segment("Good morning.", partial=False))
    renderer.progress(2.0, 2.0)
    renderer.finished(streamer.StreamSummary(session_id="s", finals=1, audio_seconds=2.0))
    assert out.getvalue() == "[00:00.5-00:02.0] Good morning.\n"
    drawn = err.getvalue()
    assert "\r\x1b[K[  2.0/2.0 s]" in drawn and "Good" not in drawn.split("done:")[0]
    assert drawn.endswith(
        "\r\x1b[Kdone: 1 segment (0 partials), 2.0 s of audio in 0.0 s, session s\n"
    )


URL = "https://localhost:8443"
HOST = "localhost"


def _crt(name: str, message: str) -> Exception:
    """A transport failure as the SDK raises it: a bare SmithyError caused by awscrt's."""
    from awscrt.exceptions import AwsCrtError
    from smithy_core.exceptions import SmithyError

    cause = AwsCrtError(0, name, message)
    error = SmithyError(cause)
    error.__cause__ = cause
    return error


def _timeout_answer() -> Exception:
    """An HTTP 408 answer (from AWS or a proxy): smithy calls it a timeout error too."""
    from smithy_core.exceptions import CallError

    return CallError(message="Unknown error - status: 408", is_timeout_error=True)


def _client_timeout() -> Exception:
    """The transport's own time-out, before any answer."""
    from smithy_core.exceptions import ClientTimeoutError

    return ClientTimeoutError(message="A timeout error occurred.")


@pytest.mark.parametrize(
    ("error", "responded", "events", "expected"),
    [
        (
            _crt("AWS_IO_SOCKET_CONNECTION_REFUSED", "socket connection refused."),
            False,
            0,
            (
                "ConnectionError",
                f"cannot reach {URL}: AWS_IO_SOCKET_CONNECTION_REFUSED: socket connection refused.",
            ),
        ),
        (
            _crt("AWS_IO_DNS_INVALID_NAME", "Host name was invalid for dns resolution."),
            False,
            0,
            (
                "ConnectionError",
                f"cannot reach {URL}: AWS_IO_DNS_INVALID_NAME: Host name was invalid for dns "
                "resolution.",
            ),
        ),
        (
            _crt("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "TLS (SSL) negotiation failed"),
            False,
            0,
            (
                "ConnectionError",
                f"cannot reach {URL}: AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE: TLS (SSL) "
                "negotiation failed (is the endpoint https://, --ca the certificate that "
                f"signs it, and {HOST} a name the certificate holds? The emulator's names "
                "localhost, streaming.localhost, 127.0.0.1, ::1 and those its --tls-hostname "
                "(MEDSCRIBE_TLS_HOSTNAME) adds)",
            ),
        ),
        (
            _crt("AWS_ERROR_HTTP_CONNECTION_CLOSED", "The connection has closed or is closing."),
            True,
            1,
            (
                "StreamError",
                f"the response stream from {URL} broke after 1 event: "
                "AWS_ERROR_HTTP_CONNECTION_CLOSED: The connection has closed or is closing.",
            ),
        ),
        (
            _crt("AWS_ERROR_HTTP_GOAWAY_RECEIVED", "Peer sent GOAWAY."),
            False,
            0,
            (
                "StreamError",
                f"the request to {URL} failed before any response: "
                "AWS_ERROR_HTTP_GOAWAY_RECEIVED: Peer sent GOAWAY.",
            ),
        ),
        (
            streamer.StreamReset("the service ended the stream before all audio was sent"),
            True,
            2,
            ("StreamReset", "the service ended the stream before all audio was sent"),
        ),
        (
            _timeout_answer(),
            False,
            0,
            ("CallError", "Unknown error - status: 408"),
        ),
        (
            _client_timeout(),
            False,
            0,
            ("ConnectionError", f"cannot reach {URL}: A timeout error occurred."),
        ),
    ],
    ids=[
        "refused",
        "dns",
        "tls-negotiation",
        "dropped-mid-stream",
        "goaway-before-response",
        "reset",
        "408-answer",
        "client-timeout",
    ],
)
def test_cannot_reach_is_only_a_failure_to_connect_before_any_response(
    error, responded, events, expected
):
    options = streamer.StreamOptions(endpoint_url=URL, ca_file=Path("ca.pem"))
    assert streamer._failure(error, options, responded=responded, events=events) == expected


def test_a_refused_certificate_with_no_ca_given_says_so_and_where_the_emulators_is():
    """It asked whether --ca was the certificate that signs it when no --ca was given."""
    error = _crt("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE", "TLS (SSL) negotiation failed")
    options = streamer.StreamOptions(endpoint_url=URL, state_ca_file=Path("/srv/st/ca.pem"))
    assert streamer._failure(error, options, responded=False, events=0) == (
        "ConnectionError",
        f"cannot reach {URL}: AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE: TLS (SSL) negotiation "
        "failed (no CA was given (no --ca, no MEDSCRIBE_CA_FILE, no /srv/st/ca.pem), so the "
        "system trust store was used: give --ca the CA that signs the certificate; the "
        "emulator's is ca.pem in its state directory (--state-dir; .medscribe where it was "
        "started, by default), or a copy from GET /_emulator/ca.pem on its cleartext port "
        f"(8080 by default). And is {HOST} a name the certificate holds? The emulator's "
        "names localhost, streaming.localhost, 127.0.0.1, ::1 and those its --tls-hostname "
        "(MEDSCRIBE_TLS_HOSTNAME) adds)",
    )


@pytest.mark.parametrize(("rate", "samples"), [(16000, 16002), (44100, 44109), (48000, 48005)])
def test_a_complete_flac_of_any_length_is_not_called_truncated(tmp_path, rate, samples):
    """Counted in whole samples: seconds as floats, multiplied back, came out one short."""
    path = tmp_path / "complete.flac"
    soundfile.write(path, numpy.zeros(samples, dtype="int16"), rate, format="FLAC")
    audio = streamer.read_audio(path)
    assert audio.seconds == samples / rate


def test_a_wav_whose_recorder_never_wrote_its_data_size_is_read_to_the_end(tmp_path, audio_dir):
    """A data chunk size of 0 means "to the end of the file", as 0xFFFFFFFF does."""
    whole = (audio_dir / "one.wav").read_bytes()
    data_at = whole.index(b"data")
    zeroed = whole[: data_at + 4] + bytes(4) + whole[data_at + 8 :]
    (tmp_path / "zero-size.wav").write_bytes(zeroed)
    audio = streamer.read_audio(tmp_path / "zero-size.wav")
    assert audio.seconds == 1.0
    assert audio.data == whole[data_at + 8 :]


def test_a_ca_file_that_is_no_certificate_is_one_line_naming_it(audio_dir, tmp_path):
    garbage = tmp_path / "ca.pem"
    garbage.write_text("hello\n")
    result = command(
        "stream",
        str(audio_dir / "half.wav"),
        "--endpoint",
        "https://127.0.0.1:9",
        "--ca",
        str(garbage),
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --ca {garbage}: not a usable PEM CA certificate (")


def test_a_certificate_python_does_not_trust_is_noted_at_once(server, audio_dir, tmp_path):
    """The SDK's TLS client waits 10-30 s before it reports a refused certificate:
    a CA forgotten, the likeliest first mistake, looked like a hang. The command
    shakes hands first itself and notes at once what Python's check says, before
    the stream; with a CA given that is no emulator's, the SDK's check, not
    Python's, decides (a review found Python's refusing certificates the SDK
    takes). The process is stopped once the note is read: the SDK's own refusal
    comes 10-30 s later."""
    args = emulator_argv("stream", str(audio_dir / "half.wav"))
    args += ["--endpoint", server.endpoint_url]
    args += ["--ca", str(_foreign_pair(tmp_path)[0])]
    env = clean_env(HOME=str(tmp_path))
    process = subprocess.Popen(
        args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline().strip()
    finally:
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert line.startswith(
        f"note: Python's TLS check refuses {server.endpoint_url}'s certificate ("
    ), line
    assert "if the SDK's refuses it too, it says so only after 10-30 s" in line
    assert "--ca the certificate that signs it" in line


def _foreign_pair(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost, and its key, issued by a CA that is not an emulator's."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "corp.pem", directory / "corp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_without_a_ca_a_certificate_not_the_emulators_is_only_noted(tmp_path):
    """Only an emulator's own certificate is sure to be refused by the SDK too: one
    from another CA (--certfile) may be in a trust store the SDK reads and Python
    does not (macOS's keychain), so it gets the note, saying no CA was given."""
    import ssl

    cert, key = _foreign_pair(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def check() -> object:
        async def drop(reader: object, writer: asyncio.StreamWriter) -> None:
            writer.close()

        listener = await asyncio.start_server(drop, "127.0.0.1", 0, ssl=context)
        port = listener.sockets[0].getsockname()[1]
        async with listener:
            options = streamer.StreamOptions(endpoint_url=f"https://localhost:{port}")
            return await streamer._untrusted(options)

    refusal = asyncio.run(check())
    assert isinstance(refusal, streamer._Refusal) and not refusal.final
    assert refusal.message.startswith("note: Python's TLS check refuses https://localhost:")
    assert "(no CA was given (no --ca, no MEDSCRIBE_CA_FILE, no .medscribe/ca.pem in this " in (
        refusal.message
    )


def test_a_certificate_only_python_refuses_does_not_stop_the_stream(server, audio_dir, tmp_path):
    """The SDK takes the emulator's server certificate itself as --ca (a leaf it
    trusts directly), which Python's check refuses: the note is printed, and the
    session completes all the same."""
    assert server.ca_file is not None
    leaf = server.ca_file.parent / "server.pem"
    result = command(
        "stream",
        str(audio_dir / "half.wav"),
        "--endpoint",
        server.endpoint_url,
        "--ca",
        str(leaf),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("note: Python's TLS check refuses")


def test_an_aws_profile_that_does_not_exist_is_one_line_not_a_traceback(
    server, audio_dir, tmp_path
):
    """The SDK reads AWS_PROFILE for every client, the emulator's (static, dummy
    credentials) too: a stale one ended the command in a traceback."""
    env = clean_env(AWS_PROFILE="nosuch", HOME=str(tmp_path))
    result = stream(server, str(audio_dir / "half.wav"), env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: Profile 'nosuch' from AWS_PROFILE")
    assert "unset AWS_PROFILE, or name a profile in ~/.aws/config" in result.stderr


@pytest.mark.parametrize("encoding", ["cp1252", "gbk"])
def test_stream_and_check_finish_when_the_output_cannot_hold_the_text(
    server, audio_dir, tmp_path, encoding
):
    """Windows gives redirected output its code page: a final's "¿" or "患者" is
    escaped there, not a UnicodeEncodeError that left the session PAUSED. The JSON
    lines escape it as JSON does, so they still read back as the text."""
    content = "¿Cómo está? 患者 😀 reports a cough."
    script = {"segments": [{"begin": 0.5, "end": 2.0, "content": content, "partials": 1}]}
    env = clean_env(PYTHONIOENCODING=encoding)
    endpoint = ["--endpoint", server.endpoint_url, "--ca", str(server.ca_file)]
    for json_lines in (False, True):
        session_id = scripted(server, script)
        argv = ["stream", str(audio_dir / "mono5.wav"), *endpoint, "--session-id", session_id]
        done = command(*argv, *(["--json"] if json_lines else []), env=env, text=False)
        assert done.returncode == 0, done.stderr.decode(encoding, "replace")
        assert session_details(server, session_id)["status"] == "COMPLETED"
        out = done.stdout.decode(encoding)
        if json_lines:
            events = [json.loads(line) for line in out.splitlines()]
            segments = [e["transcriptEvent"]["transcriptSegment"] for e in events[1:-1]]
            assert [s["content"] for s in segments if not s["isPartial"]] == [content]
            assert events[-1]["summary"]["error"] is None
        else:
            shown = content.encode(encoding, "backslashreplace").decode(encoding)
            assert f"[00:00.5-00:02.0] {shown}" in out.splitlines()
    fixtures = tmp_path / "fixtures"
    (fixtures / "scenarios").mkdir(parents=True)
    (fixtures / "scenarios" / "a.yaml").write_text(
        "segments:\n  - {begin: 2, end: 1, content: '¿Qué? 患者'}\n", encoding="utf-8"
    )
    checked = command("check", str(fixtures), env=env, text=False)
    assert checked.returncode == 1, checked.stderr.decode(encoding, "replace")
    assert "Traceback" not in checked.stderr.decode(encoding, "replace")
    assert "a.yaml:2" in checked.stdout.decode(encoding)


def test_flac_chunks_end_where_their_audio_does_so_realtime_paces_by_audio(tmp_path):
    """FLAC was cut by bytes in proportion to its duration: 10 s of silence, a few
    bytes a frame, went out in under a second with --realtime (finals at 8.7 s of
    audio came after 1 s), and the progress shown was as wrong. Each chunk now
    ends where the service's clock, counting its frames, says its audio does."""
    from emulator.audio import FlacClock

    rng = numpy.random.default_rng(7)
    noise = rng.integers(-8000, 8000, 16_000 * 2, dtype="int16")
    samples = numpy.concatenate([numpy.zeros(16_000 * 10, dtype="int16"), noise])
    path = tmp_path / "silence-then-noise.flac"
    soundfile.write(path, samples, 16_000, format="FLAC")
    audio = streamer.read_audio(path)
    chunks = audio.chunks(100)
    clock = FlacClock(sample_rate=16_000)
    frame = 4096 / 16_000  # soundfile's block: the clock counts whole frames
    previous = 0.0
    for chunk in chunks[:-1]:
        assert len(chunk.data) <= streamer.MAX_CHUNK_BYTES
        # The service counts a frame once the next one's header comes: one behind.
        assert chunk.end_seconds - frame - 1e-9 <= clock.add(chunk.data) <= chunk.end_seconds
        assert chunk.end_seconds - previous <= 0.1 + frame  # about --chunk-ms each
        previous = chunk.end_seconds
    assert chunks[-1].end_seconds == audio.seconds == 12.0
    assert sum(chunk.end_seconds <= 10.0 for chunk in chunks) >= 10.0 / (0.1 + frame)


def test_flac_chunks_stay_within_the_event_size_and_keep_every_byte(tmp_path):
    """A second of 48 kHz stereo noise is far more than an event's 32,000 bytes:
    cut at frame starts within the limit, every byte sent once, in order."""
    rng = numpy.random.default_rng(3)
    samples = rng.integers(-20000, 20000, (48_000 * 3, 2), dtype="int16")
    path = tmp_path / "loud.flac"
    soundfile.write(path, samples, 48_000, format="FLAC")
    audio = streamer.read_audio(path)
    chunks = audio.chunks(1000)
    assert b"".join(chunk.data for chunk in chunks) == audio.data
    assert all(0 < len(chunk.data) <= streamer.MAX_CHUNK_BYTES for chunk in chunks)
    times = [chunk.end_seconds for chunk in chunks]
    assert times == sorted(times) and times[-1] == 3.0


def test_cutting_a_long_file_into_events_copies_none_of_its_audio(tmp_path):
    """Each chunk was a copy, so a recording was held twice over for the whole
    stream (an hour of 16 kHz PCM, 115 MB, took 265 MB). The events' bytes are
    now cut from the file's as each is sent: cutting allocates a small fraction
    of the audio, and every byte is still sent once, in order."""
    import tracemalloc

    path = tmp_path / "two-minutes.wav"
    soundfile.write(path, numpy.zeros(16_000 * 120, dtype="int16"), 16_000, subtype="PCM_16")
    audio = streamer.read_audio(path)
    tracemalloc.start()
    try:
        chunks = audio.chunks(100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(chunks) == 1200
    assert peak < len(audio.data) / 10, f"cutting allocated {peak} bytes for {len(audio.data)}"
    assert b"".join(chunk.data for chunk in chunks) == audio.data


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
def test_an_output_that_cannot_be_written_stops_the_stream_naming_its_session(
    server, audio_dir, json_lines
):
    """`stream --json > events.jsonl` on a full disk: a traceback, and the session
    id printed nowhere; in text mode the service's stream was blamed ("the response
    stream ... broke"). Now: one error line saying so, and the stopped line."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    session_id = scripted(server)
    args = _mono5_args(server, audio_dir, session_id, json_lines=json_lines)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            emulator_argv(*args),
            cwd=REPO,
            env=clean_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    err = result.stderr
    assert result.returncode == 1, err
    assert "Traceback" not in err, err
    error, summary = err.strip().splitlines()
    assert error == "error: cannot write the output: No space left on device"
    assert stopped(summary)[3] == session_id
    assert session_details(server, session_id)["status"] in ("PAUSED", "COMPLETED")


def test_a_stale_emulator_ca_stops_the_command_at_once_naming_the_file(server, audio_dir, tmp_path):
    """A .medscribe/ca.pem left from another emulator (or this one before a new
    --state-dir) was tried for 27 s, and the refusal talked of a --ca never given.
    The certificate is an emulator's that the CA given does not sign: the command
    stops at once, naming the file and where it came from."""
    from emulator.tls import ensure_certificates

    stale = ensure_certificates(tmp_path / ".medscribe").ca_cert  # another emulator's CA
    result = command(
        "stream", str(audio_dir / "half.wav"), "--endpoint", server.endpoint_url, cwd=tmp_path
    )
    assert result.returncode == 1
    error, summary = result.stderr.strip().split("\n")
    assert error.startswith(
        f"error: ConnectionError: cannot reach {server.endpoint_url}: its certificate is an "
        f"emulator's, and the state directory's CA ({stale.relative_to(tmp_path)}) does not "
        "sign it (Python's TLS check: "
    ), error
    assert "another emulator's CA, or an older one of this emulator's" in error
    assert stopped(summary)[4] == "no stream started"


def test_a_resume_refused_for_its_audio_says_what_resumes_it_and_json_says_paused(
    server, audio_dir
):
    """A session started mono, resumed with a stereo file: the stopped line advised
    the same command, which fails the same way every time; and --json's summary
    did not say the session was PAUSED, which a script needs to retry."""
    session_id = scripted(server, {**SCRIPT, "faults": [{"at": 1.0, "disconnect": True}]})
    first = stream(server, str(audio_dir / "mono5.wav"), "--session-id", session_id, "--json")
    assert first.returncode == 1, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])["summary"]
    assert (summary["error"], summary["sessionStatus"]) == ("StreamReset", "PAUSED")
    again = stream(server, str(audio_dir / "stereo5.wav"), "--session-id", session_id)
    assert again.returncode == 1
    error, line = again.stderr.strip().splitlines()
    assert error == (
        "error: ValidationException: configurationEvent.channelDefinitions is channel 0 "
        f"CLINICIAN, channel 1 PATIENT but session {session_id} was started with none (one "
        "channel): a resumed stream must use the session's channel definitions"
    )
    assert stopped(line)[4] == (
        f"now PAUSED: it resumes with --session-id {session_id} and audio like its first "
        "stream's (the channels, sample rate, encoding and language the error names), not "
        "this file as given"
    )


def test_a_wav_whose_recorder_wrote_no_sizes_at_all_is_read_to_the_end(tmp_path, audio_dir):
    """RIFF size 0 as well as the data size: refused as "not a WAVE file" before the
    branch meant for recorders that never fill in their sizes was reached."""
    whole = (audio_dir / "one.wav").read_bytes()
    data_at = whole.index(b"data")
    zeroed = whole[:4] + bytes(4) + whole[8 : data_at + 4] + bytes(4) + whole[data_at + 8 :]
    (tmp_path / "no-sizes.wav").write_bytes(zeroed)
    audio = streamer.read_audio(tmp_path / "no-sizes.wav")
    assert (audio.seconds, audio.data) == (1.0, whole[data_at + 8 :])


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty"),
        (b"ID3\x04\x00" + bytes(100), "MP3 audio; the service takes PCM or FLAC: convert it"),
        (b"\xff\xfb\x90\x64" + bytes(100), "MP3 audio; the service takes PCM or FLAC"),
        (b"OggS\x00\x02" + bytes(100), "Ogg audio; the service takes PCM or FLAC"),
    ],
    ids=["empty", "mp3-with-a-tag", "mp3-frame", "ogg"],
)
def test_a_file_that_is_no_audio_the_service_takes_is_named_for_what_it_is(tmp_path, content, said):
    """An MP3, an Ogg or an empty file was told to give --sample-rate (as raw PCM,
    an MP3 of an even length would have been streamed as noise)."""
    path = tmp_path / "recording.wav"
    path.write_bytes(content)
    with pytest.raises(streamer.UsageError) as caught:
        streamer.read_audio(path)
    assert str(caught.value).startswith(f"{path}: {said}")


def test_a_sample_rate_the_service_refuses_is_a_bad_file_exit_2(server, audio_dir, tmp_path):
    """8-48 kHz is the model's range: a 96 kHz WAV, or raw PCM at --sample-rate
    7999, took a round trip to the service, then exit 1 with two lines."""
    loud = write_wav(tmp_path / "hifi.wav", 0.5, rate=96_000)
    result = stream(server, str(loud))
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"error: {loud}: 96000 Hz; the service takes 8000-48000 Hz (resample with e.g. sox "
        "IN -r 16000 OUT)",
    )
    raw = tmp_path / "speech.pcm"
    raw.write_bytes(bytes(16_000))
    result = stream(server, str(raw), "--sample-rate", "7999")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --sample-rate: 7999 Hz; the service takes")


def test_a_line_break_in_a_text_is_written_as_its_escape_one_line_per_result():
    """A scripted text with a line break printed as two lines, the second looking
    like a result of its own."""
    from types import SimpleNamespace

    segment = SimpleNamespace(
        audio_begin_offset=8.0,
        audio_end_offset=10.0,
        content="allergic to\npenicillin\u2028and sulfa",
        channel_id=None,
    )
    assert streamer.format_final(segment) == (
        "[00:08.0-00:10.0] allergic to\\npenicillin\\u2028and sulfa"
    )


def test_the_live_line_is_cut_to_the_terminal_by_display_columns(monkeypatch):
    """CJK letters take two columns: cut by code points, a partial wrapped and each
    redraw left a stale row behind."""
    import os as os_module

    out = io.StringIO()
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a: os_module.terminal_size((41, 24)))
    line = streamer.LiveLine(out)
    line.show("[  3.0/20.0 s]", "患者は三日前から胸の痛みを訴えて来院しました", force=True)
    drawn = out.getvalue().removeprefix("\r\x1b[K")
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in drawn)
    assert columns <= 40 and drawn.endswith("来院しました")


def test_ctrl_c_before_the_service_answered_counts_no_audio_sent(server, audio_dir, tmp_path):
    """A Ctrl-C while the SDK's TLS client waited on a certificate it would refuse
    said "1.5 s of audio ... its status not looked up": the audio the SDK had
    queued reached no session, and no status could be looked up."""
    minute = write_wav(tmp_path / "minute.wav", 60.0)
    args = ["stream", str(minute), "--endpoint", server.endpoint_url, "--realtime"]
    args += ["--ca", str(_foreign_pair(tmp_path)[0])]  # Python notes it; the SDK waits
    process = _interruptible(args)
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith("note: Python's TLS check refuses")
        time.sleep(1.5)  # the SDK queues audio meanwhile
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    error, summary = err.strip().splitlines()
    assert error == "error: interrupted"
    assert stopped(summary)[2] == "0.0"
    assert stopped(summary)[4] == "interrupted before the service answered"
