"""A crash (SIGKILL) during a stream, and the restart after it on the same state dir.

The emulator runs as a subprocess of the CLI, killed with SIGKILL while streams
run, then started again on its state directory; clients are the real SDK and
boto3. The session comes back PAUSED where its lost stream started, and what it
serves agrees with that: ``audio.wav`` holds the audio its ``audioSeconds`` and
``audioBytes`` count, its journal marks the lost stream ``streamLost``,
``streamEndTime`` is when that stream was last heard of (not the restart), and
the artifacts of a resumed session hold the resumed streams' transcript only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emulator.artifacts import artifact_locations
from emulator.sdk import boto3_client, make_client
from emulator.store import DATABASE_NAME

from .support import (
    DOMAIN_ID,
    S3_URI,
    SUBSCRIPTION_ID,
    admin,
    audio_event,
    configuration_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    stream_input,
)
from .test_audio import encode_flac

SCRIPT = {
    "segments": [
        {"begin": 0.2, "end": 0.9, "content": "alpha one two three", "partials": 1},
        {"begin": 1.0, "end": 1.8, "content": "bravo four five six", "partials": 1},
        {"begin": 2.0, "end": 2.6, "content": "charlie seven eight", "partials": 1},
    ]
}

#: 16 kHz mono 16-bit PCM.
BYTES_PER_SECOND = 32000


class Emulator:
    """``medscribe-emulator serve`` in a subprocess on ``state``; :meth:`kill` is SIGKILL."""

    def __init__(self, state: Path, args: tuple[str, ...] = ()) -> None:
        self.state = state
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Emulator:
        self.starts += 1
        log = self.state.parent / f"{self.state.name}-{self.starts}.log"
        script = shutil.which("medscribe-emulator", path=str(Path(sys.executable).parent))
        command = [script] if script else [sys.executable, "-m", "emulator"]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                [
                    *command,
                    "--port",
                    "0",
                    "--h2c-port",
                    "0",
                    "--state-dir",
                    str(self.state),
                    "--post-stream-delay",
                    "0.1",
                    *self.args,
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            tls = re.search(r"endpoint \(TLS, h2 \+ http/1\.1\): (\S+)", text)
            h2c = re.search(r"endpoint \(cleartext, h2c \+ http/1\.1\): (\S+)", text)
            if tls and h2c and "CA certificate" in text:
                self.endpoint_url, self.h2c_url = tls.group(1), h2c.group(1)
                self.ca_file = str(self.state / "ca.pem")
                self.log = log
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"the emulator exited before it was ready:\n{text}")
            time.sleep(0.05)
        raise AssertionError("the emulator did not start within 30 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- looking at it --------------------------------------------------------------

    def rule(self, session_id: str) -> None:
        body = {"match": {"sessionId": session_id}, "scenario": SCRIPT}
        status, answer = admin(self.h2c_url, "POST", "/_emulator/rules", body)
        assert status == 201, answer

    def session(self, session_id: str) -> dict[str, Any]:
        status, body = admin(self.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
        assert status == 200, body
        return body

    def events(self, session_id: str) -> list[dict[str, Any]]:
        status, body = admin(self.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
        assert status == 200, body
        return body["events"]

    def audio(self, session_id: str) -> tuple[int, bytes]:
        return admin(self.h2c_url, "GET", f"/_emulator/sessions/{session_id}/audio.wav")

    def get(self, session_id: str) -> dict[str, Any]:
        boto = boto3_client(endpoint_url=self.endpoint_url, ca_file=self.ca_file)
        return boto.get_medical_scribe_listening_session(
            sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )["medicalScribeListeningSessionDetails"]

    def wait_for(self, session_id: str, audio_seconds: float) -> None:
        """Until the live stream of ``session_id`` has taken ``audio_seconds`` of audio."""
        deadline = time.monotonic() + 20
        while True:
            # The SDK's call returns before its request has reached the server: until
            # it has, the session is not there (a 404).
            status, body = admin(self.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
            if status == 200 and body["audioSeconds"] >= audio_seconds - 1e-6:
                return
            assert status in (200, 404), body
            assert time.monotonic() < deadline, body
            time.sleep(0.05)

    def journal_dir(self, session_id: str) -> Path:
        return self.state / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID / session_id

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        """The segments of the session's transcript.json, once its artifacts are written."""
        ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID}
        bucket, key = artifact_locations(S3_URI, **ids, session_id=session_id)["transcriptResult"]
        path = self.state / "s3" / bucket / key
        deadline = time.monotonic() + 20
        while not path.is_file():
            assert time.monotonic() < deadline, f"no {path}"
            time.sleep(0.05)
        return json.loads(path.read_text())["Conversation"]["TranscriptSegments"]


@contextlib.contextmanager
def emulator_on(state: Path, args: tuple[str, ...] = ()) -> Iterator[Emulator]:
    emulator = Emulator(state, args)
    try:
        yield emulator
    finally:
        emulator.stop()


async def _with_client(emulator: Emulator, body):
    client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    try:
        return await body(client)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client._config.transport.close(), 5)


def kill_during(emulator: Emulator, streams: dict[str, tuple[list[Any], float, dict]]) -> float:
    """Open a stream per session (``events`` sent as fast as the SDK takes them, the
    input left open), wait until each took ``seconds`` of audio and a little more
    for the session rows and journal batches to reach the disk, then SIGKILL the
    emulator. Returns the time (epoch) just before the kill."""

    async def body(client) -> float:
        opened = []  # held open until the kill
        for session_id, (events, _, headers) in streams.items():
            stream = await client.start_medical_scribe_listening_session(
                input=stream_input(session_id, **headers)
            )
            for event in events:
                await stream.input_stream.send(event)
            opened.append(stream)
        for session_id, (_, seconds, _) in streams.items():
            await asyncio.to_thread(emulator.wait_for, session_id, seconds)
        await asyncio.sleep(0.5)  # SAVE_DELAY and the writer's gathering pause, many times
        killed_at = time.time()
        emulator.kill()
        return killed_at

    return asyncio.run(_with_client(emulator, body))


def pcm_stream(seconds: float) -> tuple[list[Any], float, dict]:
    audio = pcm_tone(seconds)
    events = [configuration_event()]
    events += [audio_event(audio[i : i + 3200]) for i in range(0, len(audio), 3200)]
    return events, seconds, {}


def flac_stream(flac: bytes, seconds: float) -> tuple[list[Any], float, dict]:
    events = [configuration_event()]
    events += [audio_event(flac[i : i + 4000]) for i in range(0, len(flac), 4000)]
    return events, seconds, {"encoding": "flac"}


def wav_seconds(body: bytes) -> float:
    with wave.open(io.BytesIO(body)) as wav:
        return wav.getnframes() / wav.getframerate()


def epoch(value: datetime.datetime) -> float:
    return value.timestamp()


def lost_entries(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "streamLost"]


def resume(emulator: Emulator, session_id: str, **kwargs: Any):
    result = asyncio.run(
        _with_client(emulator, lambda client: run_session(client, session_id, **kwargs))
    )
    assert result.error is None, result.error
    return result


# --- the tests ------------------------------------------------------------------------


def test_a_killed_stream_is_rolled_back_its_audio_journal_end_time_and_transcript(tmp_path):
    """Stream 1 of a scripted session runs 4 s of audio (its journal batches, with
    the three segments' finals, reach the disk), and the emulator is killed. After
    the restart, the PAUSED session serves no audio, its journal ends with a
    streamLost entry for stream 1 at clock 0, and streamEndTime is when the stream
    was last heard of. Resumed with 1.2 s and END_OF_SESSION, audio.wav is those
    1.2 s and the transcript holds the two segments that audio reaches, once each:
    not the third, which only the lost stream reached."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        emulator.start()
        emulator.rule(session_id)
        killed_at = kill_during(emulator, {session_id: pcm_stream(4.0)})
        on_disk = sorted(p.name for p in emulator.journal_dir(session_id).iterdir())
        assert any(name.startswith("audio-1-") for name in on_disk), on_disk  # the premise

        emulator.start()
        restarted_at = time.time()
        details = emulator.get(session_id)
        assert details["streamStatus"] == "PAUSED"
        created, ended = epoch(details["streamCreationTime"]), epoch(details["streamEndTime"])
        assert created <= ended <= killed_at < restarted_at
        session = emulator.session(session_id)
        assert (session["audioSeconds"], session["audioBytes"]) == (0.0, 0)
        # Its row, written just after the stream started, held the first live
        # counts and the configuration: the session is as it was before it.
        assert session["eventsReceived"] == {} and session["eventsSent"] == {}
        assert (session["partialsSent"], session["finalsSent"]) == (0, 0)
        assert session["configuration"] is None and session["errors"] == []
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 0.0
        events = emulator.events(session_id)
        lost = events[-1]
        assert lost["type"] == "streamLost" and lost["direction"] == "stream"
        assert lost["stream"] == 1 and lost["audioClock"] == 0.0
        assert "without saving this stream's end" in lost["reason"]
        assert lost["droppedAudioBytes"] > 0
        assert lost["lastHeard"] == events[-2]["time"]  # the lost stream's last entry on disk
        finals = [
            e["transcriptSegment"]["content"]
            for e in events
            if e["type"] == "transcriptEvent" and not e["transcriptSegment"]["isPartial"]
        ]
        assert finals == [s["content"] for s in SCRIPT["segments"]]  # the premise

        result = resume(emulator, session_id, audio=pcm_tone(1.2))
        assert [s.content for s in result.finals] == [s["content"] for s in SCRIPT["segments"][:2]]
        session = emulator.session(session_id)
        assert session["status"] == "COMPLETED" and session["streams"] == 2
        assert session["finalsSent"] == 2 and session["eventsReceived"]["configurationEvent"] == 1
        assert (session["audioSeconds"], session["audioBytes"]) == (1.2, 1.2 * BYTES_PER_SECOND)
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 1.2
        assert body[44:] == pcm_tone(1.2)
        transcript = emulator.transcript(session_id)
        assert [s["Content"] for s in transcript] == [s["content"] for s in SCRIPT["segments"][:2]]
        assert [s["EndAudioTime"] for s in transcript] == [0.9, 1.2]
        started = [e["stream"] for e in emulator.events(session_id) if e["type"] == "streamStarted"]
        assert started == [1, 2]


def test_a_stream_killed_after_an_earlier_one_keeps_that_ones_audio_and_a_second_crash_too(
    tmp_path,
):
    """Stream 1 (1 s) pauses; stream 2 (3 s) is killed; after the restart the session
    holds stream 1's second of audio, and its journal marks stream 2 lost at clock
    1.0. Stream 3 is killed in turn: after the second restart the session still
    holds 1 s, stream 3 is marked lost once (stream 2 still once), and a fourth
    stream resumes it from 1.0 s."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        emulator.start()
        resume(emulator, session_id, audio=pcm_tone(1.0), end_of_session=False)
        paused_at = epoch(emulator.get(session_id)["streamEndTime"])
        events, _, headers = pcm_stream(3.0)
        killed_at = kill_during(emulator, {session_id: (events, 4.0, headers)})

        emulator.start()
        details = emulator.get(session_id)
        assert details["streamStatus"] == "PAUSED"
        assert paused_at <= epoch(details["streamEndTime"]) <= killed_at
        session = emulator.session(session_id)
        assert (session["audioSeconds"], session["audioBytes"]) == (1.0, BYTES_PER_SECOND)
        assert wav_seconds(emulator.audio(session_id)[1]) == 1.0
        lost = lost_entries(emulator.events(session_id))
        assert [(e["stream"], e["audioClock"]) for e in lost] == [(2, 1.0)]

        events, _, headers = pcm_stream(2.0)
        second_kill = kill_during(emulator, {session_id: (events, 3.0, headers)})
        emulator.start()
        details = emulator.get(session_id)
        assert details["streamStatus"] == "PAUSED"
        assert killed_at < epoch(details["streamEndTime"]) <= second_kill
        session = emulator.session(session_id)
        assert (session["audioSeconds"], session["audioBytes"]) == (1.0, BYTES_PER_SECOND)
        assert wav_seconds(emulator.audio(session_id)[1]) == 1.0
        lost = lost_entries(emulator.events(session_id))
        assert [(e["stream"], e["audioClock"]) for e in lost] == [(2, 1.0), (3, 1.0)]

        resume(emulator, session_id, audio=pcm_tone(0.5))
        session = emulator.session(session_id)
        assert session["status"] == "COMPLETED"
        assert (session["audioSeconds"], session["audioBytes"]) == (1.5, 1.5 * BYTES_PER_SECOND)
        status, body = emulator.audio(session_id)
        assert wav_seconds(body) == 1.5 and body[44:] == pcm_tone(1.0) + pcm_tone(0.5)
        events = emulator.events(session_id)
        started = [(e["stream"], e["audioClock"]) for e in events if e["type"] == "streamStarted"]
        assert started == [(1, 0.0), (2, 1.0), (3, 1.0), (4, 1.0)]


def test_a_killed_flac_stream_and_one_that_wrote_nothing_are_rolled_back_too(tmp_path):
    """A FLAC session killed during its first stream serves no audio after the
    restart, and once resumed serves exactly the resumed stream's FLAC file. A
    session whose stream had sent only its configuration (nothing of it reached
    the journal's files) comes back with a journal holding just its streamLost
    entry, and ends at its creation, when its stream started."""
    state = tmp_path / "state"
    flac_id, quiet_id = new_session_id(), new_session_id()
    lost_flac = encode_flac(16000, 1, 16000 * 4)
    with emulator_on(state) as emulator:
        emulator.start()
        kill_during(
            emulator,
            {flac_id: flac_stream(lost_flac, 3.5), quiet_id: ([configuration_event()], 0.0, {})},
        )
        assert any(p.name.startswith("audio-1-") for p in emulator.journal_dir(flac_id).iterdir())
        assert not emulator.journal_dir(quiet_id).exists()  # the premise: nothing written

        emulator.start()
        session = emulator.session(flac_id)
        assert session["status"] == "PAUSED"
        assert (session["audioSeconds"], session["audioBytes"]) == (0.0, 0)
        assert emulator.audio(flac_id)[0] == 404  # no audio
        assert [e["stream"] for e in lost_entries(emulator.events(flac_id))] == [1]

        details = emulator.get(quiet_id)
        assert details["streamStatus"] == "PAUSED"
        assert details["streamEndTime"] == details["streamCreationTime"]
        (lost,) = emulator.events(quiet_id)
        assert (lost["type"], lost["stream"], lost["droppedAudioBytes"]) == ("streamLost", 1, 0)

        resumed = encode_flac(16000, 1, 16000)
        chunks = [audio_event(resumed[i : i + 4000]) for i in range(0, len(resumed), 4000)]
        resume(
            emulator,
            flac_id,
            events=[configuration_event(), *chunks, end_of_session_event()],
            encoding="flac",
        )
        session = emulator.session(flac_id)
        assert session["status"] == "COMPLETED" and session["audioSeconds"] == 1.0
        assert session["audioBytes"] == len(resumed)
        status, body = emulator.audio(flac_id)
        assert status == 200 and body == resumed

        resume(emulator, quiet_id, audio=pcm_tone(0.5))
        session = emulator.session(quiet_id)
        assert session["status"] == "COMPLETED" and session["audioSeconds"] == 0.5
        assert wav_seconds(emulator.audio(quiet_id)[1]) == 0.5


def test_a_two_channel_session_whose_first_stream_was_lost_resumes_with_its_channels(tmp_path):
    """The lost first stream chose the session's scenario and sent its channel
    definitions; rolled back, the session had the scenario but no configuration,
    and every resume with those very channels was refused as other channels."""
    state = tmp_path / "state"
    session_id = new_session_id()
    audio = pcm_tone(2.0, channels=2)
    events = [configuration_event(two_channels=True)]
    events += [audio_event(audio[i : i + 6400]) for i in range(0, len(audio), 6400)]
    with emulator_on(state) as emulator:
        emulator.start()
        emulator.rule(session_id)
        kill_during(emulator, {session_id: (events, 2.0, {})})
        emulator.start()
        assert emulator.session(session_id)["configuration"] is None
        result = resume(emulator, session_id, audio=pcm_tone(1.2, channels=2), two_channels=True)
        assert [s.content for s in result.finals] == [s["content"] for s in SCRIPT["segments"][:2]]
        assert emulator.session(session_id)["status"] == "COMPLETED"


def test_a_journal_line_cut_by_the_crash_does_not_swallow_the_next_entry(tmp_path):
    """The kill may cut the journal's last write short. The restart removes the cut
    line, so the entry written next (a lost stream's streamLost, a resumed stream's
    streamStarted) reads: both for a session whose stream was lost and for a paused
    one whose row is whole."""
    state = tmp_path / "state"
    live_id, paused_id = new_session_id(), new_session_id()
    cut = b'{"time":"2026-01-01T00:00:00.000Z","direction":"in","type":"audioEv'
    with emulator_on(state) as emulator:
        emulator.start()
        resume(emulator, paused_id, audio=pcm_tone(0.5), end_of_session=False)
        kill_during(emulator, {live_id: pcm_stream(3.0)})
        for session_id in (live_id, paused_id):
            with open(emulator.journal_dir(session_id) / "events.jsonl", "ab") as events:
                events.write(cut)

        emulator.start()
        assert emulator.events(live_id)[-1]["type"] == "streamLost"
        assert lost_entries(emulator.events(paused_id)) == []
        assert emulator.session(paused_id)["status"] == "PAUSED"
        for session_id in (live_id, paused_id):
            resume(emulator, session_id, audio=pcm_tone(0.5))
            events = emulator.events(session_id)
            assert [e["stream"] for e in events if e["type"] == "streamStarted"] == [1, 2]
            assert events[-1]["type"] == "streamEnded"
            text = (emulator.journal_dir(session_id) / "events.jsonl").read_bytes()
            assert cut not in text


# A probability rule's draws, with fixed ids and seed: among them are streams 2 and 3
# that differ, so a stream counted wrongly draws differently.
_DRAW_SESSIONS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]


def _draw_fixtures(tmp_path: Path) -> tuple[str, ...]:
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    rule = {"match": {"domainId": DOMAIN_ID}, "chaos": {"delay": 0.01}, "probability": 0.5}
    (fixtures / "rules.yaml").write_text(json.dumps([rule]))  # JSON is YAML
    return ("--fixtures", str(fixtures), "--seed", "11")


def _chaos_by_stream(emulator: Emulator, session_id: str) -> dict[int, bool]:
    events = emulator.events(session_id)
    return {e["stream"]: e.get("rule") is not None for e in events if e["type"] == "streamStarted"}


def _one_stream_each(emulator: Emulator) -> None:
    for session_id in _DRAW_SESSIONS:
        resume(emulator, session_id, audio=pcm_tone(0.3), end_of_session=False)


def _kill_during_one_each(emulator: Emulator, audio_seconds: float) -> None:
    events, _, headers = pcm_stream(1.0)
    kill_during(emulator, {sid: (events, audio_seconds, headers) for sid in _DRAW_SESSIONS})


def _clean_draws(tmp_path: Path, args: tuple[str, ...]) -> dict[str, dict[int, bool]]:
    """Each session's draws over four streams, with no crash."""
    with emulator_on(tmp_path / "clean", args) as clean:
        clean.start()
        for _ in range(4):
            _one_stream_each(clean)
        drawn = {session_id: _chaos_by_stream(clean, session_id) for session_id in _DRAW_SESSIONS}
    # The tests mean something: some streams drew chaos and some did not, and some
    # session's next streams drew differently.
    assert {d[2] for d in drawn.values()} == {True, False}
    assert any(d[2] != d[3] for d in drawn.values())
    assert any(d[3] != d[4] for d in drawn.values())
    return drawn


def test_the_stream_replacing_a_lost_one_draws_a_probability_as_the_lost_one_did(tmp_path):
    """A probability's draw counts the session's streams; a lost one still counted, so
    the stream replacing it drew as the next one would have (a crash test with a
    probability rule saw other chaos after the restart), and every later one too.
    Two crashes, and a clean restart after them, change nothing either."""
    args = _draw_fixtures(tmp_path)
    drawn = _clean_draws(tmp_path, args)
    with emulator_on(tmp_path / "crashed", args) as crashed:
        crashed.start()
        _one_stream_each(crashed)  # 1
        _kill_during_one_each(crashed, 1.3)  # 2, lost
        crashed.start()
        _one_stream_each(crashed)  # 3, as 2
        _kill_during_one_each(crashed, 1.6)  # 4, lost
        crashed.start()
        _one_stream_each(crashed)  # 5, as 3
        crashed.stop()
        crashed.start()  # a clean restart reads the count of lost streams back
        _one_stream_each(crashed)  # 6, as 4
        for session_id in _DRAW_SESSIONS:
            after = _chaos_by_stream(crashed, session_id)
            got = [after[n] for n in (1, 3, 5, 6)]
            assert got == [drawn[session_id][n] for n in (1, 2, 3, 4)], session_id


def test_a_restart_cut_after_marking_a_lost_stream_still_counts_it(tmp_path):
    """The start after a crash marks the lost stream in the journal, then saves the
    session's row with the count of lost streams. Cut off between the two (here: the
    rows put back as the crash left them), the next start finds the stream marked
    already and took the row's count, one short: the stream replacing the lost one
    drew as the next one would have."""
    args = _draw_fixtures(tmp_path)
    drawn = _clean_draws(tmp_path, args)
    state = tmp_path / "crashed"
    database = [state / (DATABASE_NAME + suffix) for suffix in ("", "-wal", "-shm")]
    with emulator_on(state, args) as crashed:
        crashed.start()
        _one_stream_each(crashed)  # 1
        _kill_during_one_each(crashed, 1.3)  # 2, lost
        saved = {path: path.read_bytes() for path in database if path.exists()}
        crashed.start()  # marks stream 2 lost in each journal and saves the rows
        crashed.stop()
        for path in database:
            path.unlink(missing_ok=True)
        for path, data in saved.items():
            path.write_bytes(data)  # the rows as the crash left them
        crashed.start()
        _one_stream_each(crashed)  # 3, as 2
        for session_id in _DRAW_SESSIONS:
            after = _chaos_by_stream(crashed, session_id)
            assert lost_entries(crashed.events(session_id)) != []
            assert [after[1], after[3]] == [drawn[session_id][1], drawn[session_id][2]], session_id


def test_a_rule_added_after_a_restart_takes_no_id_a_stored_session_names(tmp_path):
    """Ids started again from rule-1 at each start: a new rule took the id of the
    one that started a paused session, and acted on its resumed stream as its
    starter, spending no use of its times."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        emulator.start()
        emulator.rule(session_id)
        resume(emulator, session_id, audio=pcm_tone(1.0), end_of_session=False)
        starter = emulator.session(session_id)["ruleId"]
        # A rule no stored session names as its starter: a journal or a client's
        # record of this run may name it.
        status, later = admin(
            emulator.h2c_url,
            "POST",
            "/_emulator/rules",
            {"error": {"type": "ThrottlingException"}, "match": {"sessionId": new_session_id()}},
        )
        assert status == 201, later
    # Nor does a rule of a rules file the next start reads (its rules are numbered
    # first).
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "rules.yaml").write_text("- match: {}\n  chaos: {slow: 0.001}\n")
    with emulator_on(state, ("--fixtures", str(fixtures))) as emulator:
        emulator.start()
        rule = {"match": {"domainId": DOMAIN_ID}, "chaos": {"slow": 0.001}, "times": 1}
        status, added = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
        assert status == 201, added
        status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
        (from_file,) = [r["id"] for r in listed["rules"] if r["id"] != added["id"]]
        assert starter not in (added["id"], from_file)
        assert added["id"] not in (starter, later["id"])  # ids go on from the last given
        resume(emulator, session_id, audio=pcm_tone(1.0))
        status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
        uses = {r["id"]: (r["uses"], r["remaining"]) for r in listed["rules"]}
        assert uses[added["id"]] == (1, 0)  # it acted on another rule's session


def test_a_rules_file_rule_keeps_its_id_and_its_sessions_across_a_reset_and_a_restart(tmp_path):
    """Numbered with the API's rules, a rules-file rule was rule-2 after a reset and
    another id after a restart: the session it started was no longer its own, and
    its resumed stream spent the rule's one use."""
    state, fixtures = tmp_path / "state", tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "rules.yaml").write_text("- match: {}\n  chaos: {slow: 0.001}\n  times: 1\n")
    session_id = new_session_id()
    with emulator_on(state, ("--fixtures", str(fixtures))) as emulator:
        emulator.start()
        assert admin(emulator.h2c_url, "POST", "/_emulator/reset")[0] == 200
        resume(emulator, session_id, audio=pcm_tone(0.5), end_of_session=False)
        assert emulator.session(session_id)["ruleId"] == "file-1"
    with emulator_on(state, ("--fixtures", str(fixtures))) as emulator:
        emulator.start()
        resume(emulator, session_id, audio=pcm_tone(0.5))
        status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
        assert [(r["id"], r["uses"], r["remaining"]) for r in listed["rules"]] == [
            ("file-1", 0, 1)  # its own session's resumed stream: no use
        ]
