"""A journal that lost what the session sent, and one left by a session whose row was lost.

The post-stream artifacts and ``audio.wav`` are built from the session's journal
on disk. A journal that could not be written (a full or failing disk), or whose
files were damaged or removed since, gave COMPLETED artifacts without the
results the client had received, and a short ``audio.wav``, looking whole.
They now fail, naming the journal's error or what it lacks. And a journal
whose session's row was never saved (a crash or a full disk before it) was
joined by the next session with the same ids: its audio and entries served as
that session's. The emulator runs as a subprocess of the CLI (stopped with
SIGTERM between lives); the clients are the real SDK and boto3.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from emulator.store import DATABASE_NAME, TABLE

from .support import DOMAIN_ID, SUBSCRIPTION_ID, new_session_id, pcm_tone, run_session
from .test_crash_recovery import SCRIPT, Emulator, _with_client, emulator_on, wav_seconds

FINALS = [segment["content"] for segment in SCRIPT["segments"]]


def stream(emulator: Emulator, session_id: str, seconds: float, *, end: bool = True):
    result = asyncio.run(
        _with_client(
            emulator,
            lambda client: run_session(
                client, session_id, audio=pcm_tone(seconds), end_of_session=end
            ),
        )
    )
    assert result.error is None, result.error
    return result


def paused_and_stopped(emulator: Emulator, session_id: str, seconds: float):
    """Start the emulator, stream ``seconds`` of the script without END_OF_SESSION
    (the session pauses), and stop it (SIGTERM); return the stream's result."""
    emulator.start()
    emulator.rule(session_id)
    result = stream(emulator, session_id, seconds, end=False)
    emulator.stop()
    return result


def artifacts(emulator: Emulator, session_id: str) -> dict[str, dict]:
    """The artifacts' details from Get (boto3), once none is IN_PROGRESS."""
    deadline = time.monotonic() + 20
    while True:
        details = emulator.get(session_id)["postStreamActionResult"]
        found = details["clinicalNoteGenerationResult"]
        if all(a["status"] != "IN_PROGRESS" for a in found.values()):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def test_a_journal_that_cannot_be_written_fails_the_artifacts_and_audio_with_its_error(tmp_path):
    """Every journal write fails (``sessions`` is a file): the session goes on and
    the client gets its three finals, but the artifacts are FAILED with the
    disk's error, not COMPLETED and empty, and audio.wav says why it has none
    rather than serving a file of no audio for 3 s received."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "sessions").write_text("in the way")
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        emulator.start()
        emulator.rule(session_id)
        result = stream(emulator, session_id, 3.0)
        assert [final.content for final in result.finals] == FINALS  # the premise
        found = artifacts(emulator, session_id)
        assert {a["status"] for a in found.values()} == {"FAILED"}, found
        for artifact in found.values():
            reason = artifact["failureReason"]
            assert "the session's journal in " in reason and "could not be written" in reason
            assert "Not a directory" in reason
            assert "holds 0 final results where the session counted 3" in reason
        session = emulator.session(session_id)
        assert (session["audioSeconds"], session["finalsSent"]) == (3.0, 3)
        status, body = emulator.audio(session_id)
        assert status == 500 and "could not be written" in body["message"], body
        assert f"session {session_id}: no audio: " in body["message"]
        emulator.stop()
        log = emulator.log.read_text()
        assert log.count("cannot write the journal in") == 1, log


def test_a_failed_audio_write_fails_audio_wav_only_as_every_result_was_written(tmp_path):
    """The writes of the audio file fail, those of the events file do not: the
    artifacts hold every final result the client got, and are COMPLETED (a
    write error failed them all, whatever it had lost); audio.wav says why it
    has none."""
    from .support import H2Client
    from .test_stream_wire import END, audio, config_event, headers

    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        emulator.start()
        emulator.rule(session_id)
        client = H2Client("127.0.0.1", int(emulator.h2c_url.rsplit(":", 1)[1]))
        try:
            stream_id = client.request(headers(session_id))
            client.send(stream_id, config_event())
            emulator.wait_for(session_id, 0.0)
            assert emulator.audio(session_id)[0] == 200  # a sync: the folder exists
            for name in ("audio-1-1.pcm", "audio-1-1.pcm.b64"):  # decoded or not
                (emulator.journal_dir(session_id) / name).mkdir()
            tone = pcm_tone(3.0)
            chunks = b"".join(audio(tone[i : i + 3200]) for i in range(0, len(tone), 3200))
            client.send(stream_id, chunks + END, end_stream=True)
            assert client.wait(stream_id)["ended"]
        finally:
            client.close()
        assert emulator.session(session_id)["finalsSent"] == 3
        found = artifacts(emulator, session_id)
        assert {a["status"] for a in found.values()} == {"COMPLETED"}, found
        status, body = emulator.audio(session_id)
        assert status == 500, body
        assert "could not be written" in body["message"] and "Is a directory" in body["message"]
        assert "holds 0 bytes of audio where the session counted 96000" in body["message"]


def test_a_journal_damaged_while_the_session_paused_fails_its_artifacts_and_audio(tmp_path):
    """A paused session's events file and audio are removed while the emulator is
    stopped; resumed to its end, its artifacts left out the three finals its
    first stream sent, and audio.wav the first stream's audio. Both now say
    what the journal lacks."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        first = paused_and_stopped(emulator, session_id, 3.0)
        assert [final.content for final in first.finals] == FINALS  # the premise
        journal = emulator.journal_dir(session_id)
        (journal / "events.jsonl").unlink()
        for audio in journal.glob("audio-1-*"):
            audio.unlink()

        emulator.start()
        assert emulator.get(session_id)["streamStatus"] == "PAUSED"
        stream(emulator, session_id, 0.5)
        session = emulator.session(session_id)
        assert session["status"] == "COMPLETED" and session["finalsSent"] == 3
        found = artifacts(emulator, session_id)
        assert {a["status"] for a in found.values()} == {"FAILED"}, found
        for artifact in found.values():
            assert (
                "holds 0 final results where the session counted 3: its files were "
                "damaged or removed after they were written"
            ) in artifact["failureReason"]
        status, body = emulator.audio(session_id)
        assert status == 500, body
        assert "holds 16000 bytes of audio where the session counted 112000" in body["message"]


def test_an_undamaged_paused_and_resumed_session_still_completes(tmp_path):
    """The check's other side, across a restart: the counts agree."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        paused_and_stopped(emulator, session_id, 1.0)
        emulator.start()
        stream(emulator, session_id, 2.0)
        found = artifacts(emulator, session_id)
        assert {a["status"] for a in found.values()} == {"COMPLETED"}, found
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 3.0


def _forget_row(state, session_id: str) -> None:
    with sqlite3.connect(state / DATABASE_NAME) as db:
        deleted = db.execute(f"DELETE FROM {TABLE} WHERE session_id = ?", (session_id,)).rowcount
    assert deleted == 1


def test_a_journal_whose_row_was_lost_is_removed_at_the_start_not_inherited(tmp_path):
    """The row of a paused session is lost while the emulator is stopped (as a
    crash or a full disk before its save would lose it). The next start removes
    its journal, saying so; a new session with the same ids served the dead
    one's audio and entries as its own."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        paused_and_stopped(emulator, session_id, 3.0)
        _forget_row(state, session_id)
        journal = emulator.journal_dir(session_id)
        assert journal.is_dir()  # the premise

        emulator.start()
        assert not journal.exists()
        log = emulator.log.read_text()
        assert (
            f"removed 1 journal(s) of sessions with no row (never saved: the emulator "
            f"stopped or its disk was full first): {session_id}"
        ) in log
        result = stream(emulator, session_id, 1.0)
        assert result.error is None
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 1.0
        started = [e for e in emulator.events(session_id) if e["type"] == "streamStarted"]
        assert [e["stream"] for e in started] == [1]


def _set_row(state, session_id: str, column: str, value: str) -> str:
    """Set one column of the session's row; return what it held."""
    with sqlite3.connect(state / DATABASE_NAME) as db:
        (before,) = db.execute(
            f"SELECT {column} FROM {TABLE} WHERE session_id = ?", (session_id,)
        ).fetchone()
        db.execute(f"UPDATE {TABLE} SET {column} = ? WHERE session_id = ?", (value, session_id))
    return before


@pytest.mark.parametrize(
    ("column", "value", "logged"),
    [
        ("status", "ARCHIVED", "its stored row cannot be read by this version"),
        ("data", "{not json", "stored record unreadable (Expecting property name"),
    ],
    ids=["a-status-it-does-not-know", "not-json"],
)
def test_a_row_this_version_cannot_read_keeps_its_journal_for_one_that_can(
    tmp_path, column, value, logged
):
    """A row another release wrote (a status this one does not know) was skipped,
    and its journal swept as if the row were gone: back on a release that reads
    the row, the session had no audio (500) for good."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        paused_and_stopped(emulator, session_id, 3.0)
        journal = emulator.journal_dir(session_id)
        held = _set_row(state, session_id, column, value)

        emulator.start()
        assert journal.is_dir()
        log = emulator.log.read_text()
        assert logged in log and "its row and journal are kept" in log
        assert "removed 1 journal(s)" not in log
        status, _ = emulator.audio(session_id)
        assert status == 404  # not served by this version
        emulator.stop()

        _set_row(state, session_id, column, held)  # a release that reads it
        emulator.start()
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 3.0
        stream(emulator, session_id, 1.0)
        found = artifacts(emulator, session_id)
        assert {a["status"] for a in found.values()} == {"COMPLETED"}, found
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 4.0


def test_a_new_session_clears_a_journal_left_in_its_folder_while_running(tmp_path):
    """A journal folder appears for ids no session has (a row lost while the
    emulator runs, its disk full): the new session with those ids starts a
    journal of its own, and the log says what it removed."""
    state = tmp_path / "state"
    session_id = new_session_id()
    with emulator_on(state) as emulator:
        emulator.start()
        emulator.rule(session_id)
        left = state / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID / session_id
        left.mkdir(parents=True)
        (left / "audio-1-1.pcm.b64").write_bytes(b"AAAAAAAAAAAA\n" * 1000)
        (left / "events.jsonl").write_text('{"time":"2026-01-01T00:00:00.000Z","type":"old"')
        result = stream(emulator, session_id, 1.0)
        assert [final.content for final in result.finals] == FINALS[:1]
        status, body = emulator.audio(session_id)
        assert status == 200 and wav_seconds(body) == 1.0
        events = emulator.events(session_id)
        assert events[0]["type"] == "streamStarted" and "old" not in {e["type"] for e in events}
        found = artifacts(emulator, session_id)
        assert {a["status"] for a in found.values()} == {"COMPLETED"}, found
        emulator.stop()
        assert "left by an earlier session with these ids whose row was never saved" in (
            emulator.log.read_text()
        )
