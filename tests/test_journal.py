"""The journal: every event in and out, the audio as received, and nothing sensitive in logs."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import wave

import pytest
from aws_sdk_connecthealth import models as m

from emulator.journal import FLUSH_BYTES, Journal, wav_header

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
    written = (tmp_path / "j" / "audio-1.pcm").stat().st_size
    assert 0 < written < 200 * 1000  # earlier batches are on disk, the last one is not yet
    assert [e["n"] for e in journal_files.entries()] == list(range(200))
    assert journal_files.audio_files()[0].read_bytes() == chunk * 200


def test_wav_header_describes_16_bit_pcm():
    data = pcm_tone(0.01, sample_rate=22050, channels=2)
    header = wav_header(sample_rate=22050, channels=2, data_bytes=len(data))
    with wave.open(io.BytesIO(header + data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (22050, 2, 2)
        assert wav.getnframes() == len(data) // 4
