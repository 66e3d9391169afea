"""The journal: every event in and out, the audio as received, and nothing sensitive in logs."""

from __future__ import annotations

import asyncio
import base64
import datetime
import io
import json
import logging
import subprocess
import sys
import wave

import pytest
from aws_sdk_connecthealth import models as m
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import journal as journal_module
from emulator.events import TranscriptResult, transcript_payload
from emulator.journal import (
    FLUSH_BYTES,
    AudioPart,
    Journal,
    clock_text,
    compact_encoder,
    compact_json,
    iso_time,
    wav_header,
)

from .support import (
    S3_URI,
    H2Client,
    admin,
    audio_event,
    configuration_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
)
from .test_stream_wire import END, audio, config_event, headers

SCRIPT = {"segments": [{"begin": 0.2, "end": 0.6, "content": "Hello there.", "partials": 1}]}


def script(emulator, session_id: str) -> None:
    body = {"match": {"sessionId": session_id}, "scenario": SCRIPT}
    assert admin(emulator.h2c_url, "POST", "/_emulator/rules", body)[0] == 201


def journal(emulator, session_id: str) -> list[dict]:
    status, body = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    assert status == 200, body
    assert body["sessionId"] == session_id
    return body["events"]


async def test_every_input_and_output_event_is_journaled_in_order(client, emulator):
    session_id = new_session_id()
    script(emulator, session_id)
    chunks = [pcm_tone(0.1)] * 10  # 3200 bytes each
    events = [configuration_event()]
    events += [audio_event(chunk, binary=True) for chunk in chunks]
    events.append(end_of_session_event())
    result = await run_session(client, session_id, events=events)
    assert result.error is None
    entries = journal(emulator, session_id)
    for entry in entries:
        datetime.datetime.fromisoformat(entry["time"])
    assert [(e["direction"], e["type"]) for e in entries[:2]] == [
        ("stream", "streamStarted"),
        ("in", "configurationEvent"),
    ]
    assert entries[1]["payload"]["postStreamActionSettings"]["outputS3Uri"] == S3_URI
    inputs = [e for e in entries if e["direction"] == "in" and e["type"] == "binaryAudioEvent"]
    assert [e["size"] for e in inputs] == [3200] * 10
    assert [e["audioClock"] for e in inputs] == pytest.approx([n / 10 for n in range(10)])
    outputs = [e for e in entries if e["direction"] == "out"]
    sent = [s.segment_id for s in result.segments]
    assert [e["transcriptSegment"]["segmentId"] for e in outputs] == sent
    assert [e["transcriptSegment"]["isPartial"] for e in outputs] == [True, False]
    assert all(e["audioClock"] >= e["transcriptSegment"]["audioEndOffset"] for e in outputs)
    assert [(e["direction"], e["type"]) for e in entries[-2:]] == [
        ("in", "sessionControlEvent"),
        ("stream", "streamEnded"),
    ]
    assert entries[-1]["status"] == "COMPLETED"
    # The partial is released by the chunk that takes the clock to 0.4 s: after it arrived.
    order = [(e["direction"], e.get("audioClock")) for e in entries]
    assert order.index(("out", pytest.approx(0.4))) > order.index(("in", pytest.approx(0.3)))


async def test_audio_wav_holds_the_pcm_of_every_stream_with_its_format(client, emulator):
    session_id = new_session_id()
    first, second = pcm_tone(0.5), pcm_tone(0.3, sample_rate=16000)[::-1]
    await run_session(client, session_id, audio=first, end_of_session=False)
    await run_session(client, session_id, audio=second)
    status, body = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/audio.wav")
    assert status == 200
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.readframes(wav.getnframes()) == first + second


async def test_two_channel_audio_is_a_stereo_wav(client, emulator):
    session_id = new_session_id()
    audio_bytes = pcm_tone(0.4, sample_rate=8000, channels=2)
    result = await run_session(
        client, session_id, audio=audio_bytes, two_channels=True, sample_rate=8000
    )
    assert result.error is None
    status, body = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/audio.wav")
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 2)
        assert wav.readframes(wav.getnframes()) == audio_bytes


def test_flac_audio_is_served_as_received(emulator):
    soundfile = pytest.importorskip("soundfile")
    import numpy

    buffer = io.BytesIO()
    soundfile.write(buffer, numpy.zeros(16000, dtype="int16"), 16000, format="FLAC")
    data = buffer.getvalue()
    session_id = new_session_id()
    h2 = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = h2.request(headers(session_id, **{"x-amzn-medscribe-media-encoding": "flac"}))
        body = config_event() + b"".join(audio(data[i : i + 700]) for i in range(0, len(data), 700))
        h2.send(stream, body + END, end_stream=True)
        assert h2.wait(stream)["ended"]
    finally:
        h2.close()
    import urllib.request

    url = f"{emulator.h2c_url}/_emulator/sessions/{session_id}/audio.wav"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["content-type"] == "audio/flac"
        assert response.read() == data


async def test_a_resumed_session_journals_both_streams_and_a_refused_one(client, emulator):
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.3), end_of_session=False)
    await run_session(client, session_id, audio=pcm_tone(0.3))
    refused = await run_session(client, session_id, audio=pcm_tone(0.3))
    assert isinstance(refused.error, m.ValidationException)
    marks = [(e["type"], e.get("stream"), e.get("status")) for e in journal(emulator, session_id)]
    marks = [mark for mark in marks if mark[0].startswith("stream")]
    assert marks == [
        ("streamStarted", 1, None),
        ("streamEnded", 1, "PAUSED"),
        ("streamStarted", 2, None),
        ("streamEnded", 2, "COMPLETED"),
        ("streamRefused", None, None),
    ]


def test_unknown_sessions_have_no_journal(emulator):
    missing = new_session_id()
    for tail in ("events", "audio.wav"):
        status, body = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{missing}/{tail}")
        assert status == 404 and missing in body["message"]


async def test_logs_never_carry_the_encounter_context(client, emulator, caplog):
    """The encounter context is the user's data: kept in the journal, never logged."""
    secret = "Patient Zanzibar reports a secret condition"
    caplog.set_level(logging.DEBUG)
    config = configuration_event()
    config.value.encounter_context = m.EncounterContext(unstructured_context=secret)
    session_id = new_session_id()
    result = await run_session(client, session_id, events=[config, end_of_session_event()])
    assert result.error is None
    bad = configuration_event()
    bad.value.encounter_context = m.EncounterContext(unstructured_context=secret + " \u0000")
    failed = await run_session(client, new_session_id(), events=[bad])
    assert isinstance(failed.error, m.ValidationException)
    await asyncio.sleep(0)  # let the server's log lines land
    # The emulator's loggers only: the SDK's own DEBUG lines echo what it sends.
    server_log = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.name.startswith(("medscribe", "hypercorn", "emulator"))
    )
    assert f"session {session_id}" in server_log  # the logs were captured
    assert "Zanzibar" not in server_log
    entries = journal(emulator, session_id)
    assert entries[1]["payload"]["encounterContext"]["unstructuredContext"] == secret


def test_journal_writes_in_batches_and_holds_at_most_one_batch(tmp_path):
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(1)
    chunk = b"\x01" * 1000
    for n in range(200):
        journal_files.audio(chunk)
        journal_files.record({"direction": "in", "type": "binaryAudioEvent", "n": n})
        assert journal_files._buffered < FLUSH_BYTES  # never more than one batch in memory
    journal_files.wait_written()
    written = (tmp_path / "j" / "audio-1-1.pcm").stat().st_size
    assert 0 < written < 200 * 1000  # earlier batches are on disk, the last one is not yet
    assert [e["n"] for e in journal_files.entries()] == list(range(200))
    assert read_audio(journal_files) == chunk * 200


def test_a_journal_named_by_a_text_path_reads_and_writes_as_one_named_by_a_path(tmp_path):
    journal_files = Journal(str(tmp_path / "a" / "j"), audio_suffix="pcm")
    assert journal_files.directory == tmp_path / "a" / "j"
    journal_files.start_stream(1)
    journal_files.audio(b"\x02" * 10)
    journal_files.record({"direction": "in", "type": "binaryAudioEvent"})
    assert [e["type"] for e in journal_files.entries()] == ["binaryAudioEvent"]
    assert read_audio(journal_files) == b"\x02" * 10
    journal_files.remove()
    journal_files.wait_written()
    assert not (tmp_path / "a" / "j").exists()


def read_audio(journal_files: Journal) -> bytes:
    parts = _parts(journal_files)
    data = b"".join(b"".join(part.read()) for part in parts)
    assert len(data) == sum(part.size() for part in parts)
    return data


def test_json_audio_is_kept_as_base64_and_read_back_decoded(tmp_path):
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(1)
    chunks = [bytes([n]) * (3200 + n) for n in range(40)]  # every padding length
    for chunk in chunks:
        journal_files.audio(base64.b64encode(chunk), base64=True)
    assert read_audio(journal_files) == b"".join(chunks)
    (part,) = _parts(journal_files)
    assert part.path.name == "audio-1-1.pcm.b64" and part.base64
    assert part.path.read_bytes().splitlines()[0] == base64.b64encode(chunks[0])


def test_a_stream_switching_audio_kinds_keeps_its_order_in_parts(tmp_path):
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(1)
    journal_files.audio(b"\x01\x02", base64=False)
    journal_files.audio(base64.b64encode(b"\x03\x04"), base64=True)
    journal_files.audio(b"\x05\x06", base64=False)
    journal_files.start_stream(2)  # a resumed stream
    journal_files.audio(base64.b64encode(b"\x07\x08"), base64=True)
    names = [part.path.name for part in _parts(journal_files)]
    assert names == ["audio-1-1.pcm", "audio-1-2.pcm.b64", "audio-1-3.pcm", "audio-2-1.pcm.b64"]
    assert read_audio(journal_files) == bytes(range(1, 9))


def test_a_streams_first_audio_waits_for_a_full_batch_before_any_file_is_made(tmp_path):
    """Opening a stream writes nothing: its first lines and audio wait for a
    full batch (or a reader), so a burst of new sessions creates no files."""
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(1)
    journal_files.record({"direction": "stream", "type": "streamStarted"})
    journal_files.record({"direction": "in", "type": "configurationEvent"})
    journal_files.audio(base64.b64encode(b"\x01\x02"), base64=True)
    journal_files.record_audio_input("audioEvent", 16, 0.0)
    journal_files.wait_written()
    assert not (tmp_path / "j").exists()
    types = [entry["type"] for entry in journal_files.entries()]  # a reader flushes
    assert types == ["streamStarted", "configurationEvent", "audioEvent"]
    assert read_audio(journal_files) == b"\x01\x02"


def test_audio_written_by_earlier_versions_still_reads(tmp_path):
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "audio-1.pcm").write_bytes(b"old")
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(2)
    journal_files.audio(base64.b64encode(b"new"), base64=True)
    assert read_audio(journal_files) == b"oldnew"


def test_an_audio_part_is_a_snapshot_of_a_growing_file(tmp_path):
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(1)
    journal_files.audio(base64.b64encode(b"first"), base64=True)
    (part,) = _parts(journal_files)
    with open(part.path, "ab") as file:
        file.write(base64.b64encode(b"later") + b"\n" + b"QUJD")  # and a line still being written
    assert b"".join(part.read()) == b"first" and part.size() == 5


def test_wav_header_describes_16_bit_pcm():
    data = pcm_tone(0.01, sample_rate=22050, channels=2)
    header = wav_header(sample_rate=22050, channels=2, data_bytes=len(data))
    with wave.open(io.BytesIO(header + data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22050, 2, 2)
        assert wav.getnframes() == len(data) // 4


@pytest.mark.parametrize("clock", [0.0, 0.1, 3.2, 1e-05, 7199.999937, 12345678.5])
@pytest.mark.parametrize("event_type", ["audioEvent", "binaryAudioEvent"])
def test_audio_entries_are_the_lines_record_writes(tmp_path, monkeypatch, event_type, clock):
    # record_audio_input is the per-frame shortcut of record(): same bytes on disk.
    monkeypatch.setattr("emulator.journal.time.time_ns", lambda: 1763769600_250_000_000)
    fast = Journal(tmp_path / "fast", audio_suffix="pcm")
    slow = Journal(tmp_path / "slow", audio_suffix="pcm")
    fast.record_audio_input(event_type, 4268, clock)
    slow.record({"direction": "in", "type": event_type, "size": 4268, "audioClock": clock})
    fast.sync()
    slow.sync()
    line = (tmp_path / "fast" / "events.jsonl").read_bytes()
    assert line == (tmp_path / "slow" / "events.jsonl").read_bytes()
    assert fast.entries()[0]["audioClock"] == clock


@given(st.lists(st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 0.1, 0.2])), max_size=50))
def test_clock_text_is_the_repr_of_the_clock_seen_or_not(clocks):
    # Cached or not, and across the cache's clearing: never the text of
    # another float (0.0 and -0.0 are equal keys with different reprs).
    for clock in clocks + clocks:
        assert clock_text(clock) == repr(clock)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text() | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_the_compact_encoders_write_what_json_dumps_writes(value):
    # Built once on json's C encoder, called again and again: the same text as
    # json.dumps, non-ASCII escaped or not, NaN and Infinity as Python writes them.
    for ensure_ascii in (True, False):
        encode = compact_encoder(ensure_ascii=ensure_ascii)
        expected = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)
        assert encode(value) == expected
        assert encode(value) == expected
    assert compact_json(value) == json.dumps(value, separators=(",", ":"))


def test_the_compact_encoder_refuses_what_json_refuses():
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact_json({"when": datetime.date(2026, 1, 1)})


def test_the_clock_text_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(journal_module, "_CLOCK_TEXT", {})
    monkeypatch.setattr(journal_module, "_CLOCK_TEXT_LIMIT", 100)
    for k in range(1, 1000):
        assert clock_text(k / 10) == repr(k / 10)
        assert len(journal_module._CLOCK_TEXT) <= 100


transcript_results = st.builds(
    TranscriptResult,
    segment_id=st.uuids().map(str),
    begin=st.floats(0, 1e6, allow_nan=False),
    end=st.just(1e7),
    is_partial=st.booleans(),
    content=st.text(max_size=80),
    channel_id=st.sampled_from([None, "ch_0", "ch_1"]),
)


@given(transcript_results, st.floats(0, 1e7, allow_nan=False))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_transcript_entries_are_the_lines_record_writes(
    tmp_path_factory, monkeypatch, event, clock
):
    """record_transcript splices the payload as sent; the line is the one record()
    writes for the same entry, escapes and float text included."""
    from emulator.stream import _output_entry

    root = tmp_path_factory.mktemp("journals")
    fast = Journal(root / "fast", audio_suffix="pcm")
    slow = Journal(root / "slow", audio_suffix="pcm")
    monkeypatch.setattr("emulator.journal.time.time_ns", lambda: 1763769600_250_000_000)
    fast.record_transcript(transcript_payload(event), clock)
    slow.record(_output_entry(event, clock))
    fast.sync()
    slow.sync()
    line = (root / "fast" / "events.jsonl").read_bytes()
    assert line == (root / "slow" / "events.jsonl").read_bytes()
    assert fast.entries()[0]["transcriptSegment"]["content"] == event.content


def test_writes_happen_in_order_around_a_removal(tmp_path):
    # One writer thread: a removal waits for the writes before it, and a
    # journal written again afterwards starts from nothing.
    journal_files = Journal(tmp_path / "j", audio_suffix="pcm")
    journal_files.start_stream(1)
    journal_files.record({"direction": "in", "type": "first"})
    journal_files.flush()
    journal_files.remove()
    journal_files.start_stream(1)
    journal_files.record({"direction": "in", "type": "second"})
    assert [e["type"] for e in journal_files.entries()] == ["second"]


def test_an_unwritable_journal_is_logged_once_and_the_rest_keeps_working(tmp_path, caplog):
    (tmp_path / "file").write_text("not a directory")
    broken = Journal(tmp_path / "file" / "j", audio_suffix="pcm")
    fine = Journal(tmp_path / "ok", audio_suffix="pcm")
    with caplog.at_level(logging.WARNING, logger="medscribe.journal"):
        for n in range(3):
            broken.record({"direction": "in", "type": "lost", "n": n})
            broken.flush()
            fine.record({"direction": "in", "type": "kept", "n": n})
            fine.flush()
        fine.sync()
    warnings = [r for r in caplog.records if "cannot write the journal" in r.getMessage()]
    assert len(warnings) == 1 and "file" in warnings[0].getMessage()
    assert [e["n"] for e in fine.entries()] == [0, 1, 2]
    assert broken.entries() == []


def test_the_writer_makes_submitters_wait_for_room_not_for_the_whole_queue():
    import threading

    from emulator.journal import _Writer

    writer = _Writer()
    writer.max_pending = 10
    gate = threading.Event()
    writer.submit(lambda: gate.wait(10), 8)  # the thread is busy with this one
    writer.submit(lambda: None, 8)  # 8 pending, under the bound: accepted at once
    late = threading.Thread(target=writer.submit, args=(lambda: None, 1))
    late.start()
    late.join(0.2)
    assert late.is_alive()  # 16 pending, over the bound: waits
    gate.set()
    late.join(5)
    assert not late.is_alive()
    writer.wait()


@pytest.mark.timeout(20)
def test_the_writer_gathers_batches_but_a_waiter_cuts_the_pause_short():
    """After a burst the thread pauses for the next jobs to queue up (here a
    minute); wait() does not sit out the pause: each round's jobs are done
    when it returns, all of them, in order."""
    from emulator.journal import _Writer

    writer = _Writer()
    writer.gather = 60.0
    done: list[int] = []
    for round_ in range(3):
        for n in range(4):
            writer.submit(lambda n=n, r=round_: done.append(r * 10 + n), 1)
        writer.wait()
        assert done == [r * 10 + n for r in range(round_ + 1) for n in range(4)]


def test_a_submit_waiting_for_room_cuts_the_pause_short():
    """A submit over the backlog bound waits for the thread, and the thread does
    not sit out its gathering pause (here an hour) while it does."""
    import threading
    import time

    from emulator.journal import _Writer

    writer = _Writer()
    writer.gather = 3600.0
    writer.max_pending = 10
    done: list[str] = []
    first = threading.Event()
    writer.submit(lambda: (done.append("a"), first.set()), 1)
    assert first.wait(30)
    time.sleep(0.05)  # for the thread to finish its batch and begin the pause
    writer.submit(lambda: done.append("b"), 20)  # over the bound now
    writer.submit(lambda: done.append("c"), 1)  # waits for room: the thread must wake
    writer.wait()
    assert done == ["a", "b", "c"]
    assert writer._pending == 0


def test_entries_of_one_type_skip_the_rest_unparsed_and_miss_none(tmp_path):
    """iter_entries(entry_type=...) is iter_entries() filtered on ``type``, even when
    another entry carries the same text inside its payload."""
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.record(
        {"direction": "in", "type": "configurationEvent", "payload": {"type": "transcriptEvent"}}
    )
    journal.record_audio_input("audioEvent", 4285, 0.0)
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 1})
    journal.record({"direction": "out", "type": "transcriptEvent:not", "n": 2})
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 3})
    journal.sync()
    wanted = list(journal.iter_entries(entry_type="transcriptEvent"))
    assert wanted == [e for e in journal.iter_entries() if e["type"] == "transcriptEvent"]
    assert [e["n"] for e in wanted] == [1, 3]


@given(st.lists(st.integers(0, 4_000_000_000_000_000_000), min_size=1, max_size=20))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_iso_now_is_iso_time_of_the_same_instant(monkeypatch, instants):
    """iso_now (integer nanoseconds, one cached second) writes what iso_time writes
    for the same time, whatever the order of the instants asked about."""
    for ns in instants:
        monkeypatch.setattr("emulator.journal.time.time_ns", lambda ns=ns: ns)
        second, into = divmod(ns, 1_000_000_000)
        expected = iso_time(second)[:-4] + f"{into // 1_000_000:03d}Z"
        assert journal_module.iso_now() == expected


@pytest.mark.parametrize(
    ("ns", "expected"),
    [(250_000_000, "1970-01-01T00:00:00.250Z"), (-500_000_000, "1969-12-31T23:59:59.500Z")],
)
def test_the_first_timestamp_of_a_process_is_whole(ns, expected):
    """The caches start out true: the first call, near the epoch, writes the date
    too; and a time before 1970 keeps its own second."""
    code = (
        f"import time; time.time_ns = lambda: {ns}\n"
        "from emulator.journal import iso_now, iso_time\n"
        "print(iso_now(), iso_time(time.time_ns() / 1e9))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == [expected, expected]


def test_removing_a_journal_removes_the_folders_it_leaves_empty(tmp_path):
    """sessions/<domain>/<subscription>/<session>: the domain's and subscription's
    folders go with their last session, and stay while another session is in them."""
    root = tmp_path / "sessions"
    kept = Journal(root / "dom-a" / "sub-a" / "s1", audio_suffix="pcm")
    gone = Journal(root / "dom-a" / "sub-a" / "s2", audio_suffix="pcm")
    alone = Journal(root / "dom-b" / "sub-b" / "s3", audio_suffix="pcm")
    for journal in (kept, gone, alone):
        journal.record({"direction": "stream", "type": "streamStarted"})
        journal.flush()
    gone.remove()
    alone.remove()
    Journal.wait_written()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()) == [
        "dom-a",
        "dom-a/sub-a",
        "dom-a/sub-a/s1",
    ]
    kept.remove()
    Journal.wait_written()
    assert root.is_dir() and list(root.iterdir()) == []


# --- after a crash: rolling a journal back over its lost streams ---------------------------


def _crashed_journal(tmp_path, *, suffix: str = "pcm") -> Journal:
    """Stream 1 (raw and base64 audio) ended; stream 2 ran, audio and all, and was cut
    off by a crash inside a line."""
    journal = Journal(tmp_path / "j", audio_suffix=suffix)
    journal.start_stream(1)
    journal.record({"direction": "stream", "type": "streamStarted", "stream": 1})
    journal.audio(b"\x01\x02")
    journal.audio(base64.b64encode(b"\x03\x04\x05"), base64=True)
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 1})
    journal.record({"direction": "stream", "type": "streamEnded", "stream": 1})
    journal.start_stream(2)
    journal.record({"direction": "stream", "type": "streamStarted", "stream": 2})
    journal.audio(base64.b64encode(b"\x06" * 7), base64=True)
    journal.audio(b"\x07" * 5)
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 2})
    journal.sync()
    with open(tmp_path / "j" / "events.jsonl", "ab") as events:
        events.write(b'{"time":"2026-01-01T00:00:09.000Z","direction":"out","type":"tra')
    return journal


def test_a_roll_back_drops_the_lost_streams_audio_and_the_line_the_crash_cut(tmp_path):
    journal = _crashed_journal(tmp_path)
    before = [e["time"] for e in journal.entries()]
    found = journal.roll_back(2)
    assert found.streams == (2,) and found.marked == frozenset()
    assert found.dropped == {2: 12} and found.kept_audio_bytes == 5
    assert found.last_heard is not None and found.last_heard[1] == before[-1]
    assert abs(found.last_heard[0] - datetime.datetime.fromisoformat(before[-1]).timestamp()) < 1e-6
    assert read_audio(journal) == b"\x01\x02\x03\x04\x05"
    assert [p.path.name for p in _parts(journal)] == ["audio-1-1.pcm", "audio-1-2.pcm.b64"]
    text = (tmp_path / "j" / "events.jsonl").read_bytes()
    assert text.endswith(b"\n") and b"2026-01-01T00:00:09" not in text
    assert [e["time"] for e in journal.entries()] == before  # no whole line lost
    # Appending after it reads: the cut line no longer swallows the next entry.
    journal.record({"direction": "stream", "type": "streamLost", "stream": 2})
    assert journal.entries()[-1]["type"] == "streamLost"


def test_a_second_roll_back_finds_the_lost_stream_marked_and_its_time_unchanged(tmp_path):
    """A restart cut off after it marked the stream, before it saved the row, leaves
    the mark: the next one sees it, and the stream's last entry is still the one
    before it (a mark's time is a restart's, not the stream's)."""
    journal = _crashed_journal(tmp_path)
    first = journal.roll_back(2)
    journal.record({"direction": "stream", "type": "streamLost", "stream": 2})
    journal.sync()
    again = journal.roll_back(2)
    assert again.streams == (2,) and again.marked == frozenset({2})
    assert again.last_heard == first.last_heard
    assert again.dropped == {} and again.kept_audio_bytes == 5


def test_a_roll_back_of_a_journal_never_written_finds_nothing(tmp_path):
    journal = Journal(tmp_path / "never", audio_suffix="flac")
    assert not journal.has_lost_traces(1)
    found = journal.roll_back(1)
    assert found.streams == () and found.last_heard is None and found.kept_audio_bytes == 0
    assert not (tmp_path / "never").exists()


def test_a_roll_back_finds_streams_after_the_first_lost_one_and_legacy_audio(tmp_path):
    """A stream that started after the lost one (its row never written) is lost too;
    audio of earlier versions' naming counts by its stream."""
    journal = Journal(tmp_path / "j", audio_suffix="flac")
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "audio-1.flac").write_bytes(b"fLaC-one")
    (tmp_path / "j" / "audio-2.flac").write_bytes(b"fLaC-two")
    journal.start_stream(3)
    journal.record({"direction": "stream", "type": "streamStarted", "stream": 3})
    journal.record({"direction": "stream", "type": "outputStalled", "stream": 1})
    journal.sync()
    assert journal.has_lost_traces(2) and not journal.has_lost_traces(4)
    found = journal.roll_back(2)
    assert found.streams == (2, 3) and found.dropped == {2: 8} and found.kept_audio_bytes == 8
    assert [p.path.name for p in _parts(journal)] == ["audio-1.flac"]


def test_a_cut_last_line_is_a_lost_trace_and_a_whole_one_is_not(tmp_path):
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.start_stream(1)
    journal.record({"direction": "stream", "type": "streamEnded", "stream": 1})
    journal.audio(b"\x00\x00")
    journal.sync()
    assert not journal.has_lost_traces(2)
    assert journal.has_lost_traces(1)  # its audio
    with open(tmp_path / "j" / "events.jsonl", "ab") as events:
        events.write(b'{"ti')
    assert journal.has_lost_traces(2)
    found = journal.roll_back(2)
    assert found.streams == () and found.kept_audio_bytes == 2
    assert not journal.has_lost_traces(2)


def test_kept_entries_leave_out_the_lost_streams_and_only_them(tmp_path):
    """iter_kept_entries is iter_entries of the type, but for the entries that follow a
    lost stream's streamStarted (up to the next stream's); its mark may come after
    later streams (two lost at once)."""
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    script = [
        (None, 0),
        (1, 1),
        (None, 2),
        (2, 3),
        (3, 4),
        ("lost", 2),
        ("lost", 3),
        (4, 5),
        ("lost", 9),  # a stream that left nothing else
        (3, 6),  # a number again (a restart cut off before it saved the session): kept
    ]
    for stream, n in script:
        if stream == "lost":
            journal.record({"direction": "stream", "type": "streamLost", "stream": n})
            continue
        if stream is not None:
            journal.record({"direction": "stream", "type": "streamStarted", "stream": stream})
        journal.record({"direction": "out", "type": "transcriptEvent", "n": n})
    journal.sync()
    kept = journal.iter_kept_entries(entry_type="transcriptEvent")
    assert [e["n"] for e in kept] == [0, 1, 2, 5, 6]
    kept_starts = journal.iter_kept_entries(entry_type="streamStarted")
    assert [e["stream"] for e in kept_starts] == [1, 4, 3]
    assert [e["n"] for e in journal.iter_entries(entry_type="transcriptEvent")] == list(range(7))


def test_kept_entries_of_a_journal_without_a_lost_stream_are_its_entries(tmp_path):
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.record({"direction": "stream", "type": "streamStarted", "stream": 1})
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 1})
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 2})
    journal.sync()
    kept = list(journal.iter_kept_entries(entry_type="transcriptEvent"))
    assert kept == list(journal.iter_entries(entry_type="transcriptEvent"))
    assert [e["n"] for e in kept] == [1, 2]
    never = Journal(tmp_path / "none", audio_suffix="pcm")
    assert list(never.iter_kept_entries(entry_type="transcriptEvent")) == []


@pytest.mark.parametrize("piece", [1, 7, 18, 19, 4096])
def test_a_lost_mark_is_found_across_the_pieces_the_file_is_read_in(tmp_path, monkeypatch, piece):
    journal = Journal(tmp_path / "j", audio_suffix="pcm")
    journal.record({"direction": "stream", "type": "streamStarted", "stream": 1})
    journal.record({"direction": "out", "type": "transcriptEvent", "n": 1})
    journal.record({"direction": "stream", "type": "streamLost", "stream": 1})
    journal.sync()
    monkeypatch.setattr(journal_module, "_READ", piece)
    assert list(journal.iter_kept_entries(entry_type="transcriptEvent")) == []


def _parts(journal: Journal) -> list[AudioPart]:
    """Every audio part of every stream of ``journal``, in order."""
    return [part for stream in journal.audio_streams() for part in stream]
