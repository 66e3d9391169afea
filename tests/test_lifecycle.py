"""Session lifecycle and resumption: statuses, continuing a paused session, and the refusals.

The state machine is checked sans-IO first (a stream split in two replays exactly
like one), then end to end through the real SDK and boto3, including a resume
across a restart of the emulator and the retention of old sessions.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from aws_sdk_connecthealth import models as m
from botocore.exceptions import ClientError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from emulator.audio import MAX_AUDIO_CHUNK_BYTES
from emulator.errors import ValidationException
from emulator.events import StreamException, StreamReset, TranscriptResult
from emulator.eventstream import Message
from emulator.lifecycle import (
    LIFECYCLE,
    SessionLimits,
    StreamStatus,
    check_resume,
    stream_outcome,
    transition,
)
from emulator.scenario import Fault, Scenario, Segment
from emulator.sdk import boto3_client
from emulator.server import Settings
from emulator.session import ScribeSession, SessionProgress, SessionState
from emulator.validation import StreamRequest

from .support import (
    DOMAIN_ID,
    S3_URI,
    SANS_IO_REQUEST,
    SUBSCRIPTION_ID,
    admin,
    audio_event,
    configuration_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
    stream_input,
)
from .test_audio import encode_flac

SCRIPT = {
    "segments": [
        {"begin": 0.5, "end": 2.0, "content": "Good morning, what brings you in?", "partials": 2},
        {"begin": 2.2, "end": 4.0, "content": "I have had a cough for two weeks.", "partials": 3},
        {"begin": 4.5, "end": 6.0, "content": "Any fever or chills?", "partials": 1},
    ]
}
CONTENTS = [segment["content"] for segment in SCRIPT["segments"]]


def scripted(emulator, session_id: str, scenario: dict = SCRIPT) -> None:
    body = {"match": {"sessionId": session_id}, "scenario": scenario}
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/rules", body)
    assert status == 201, answer


async def details(client, session_id: str) -> m.MedicalScribeListeningSessionDetails:
    output = await client.get_medical_scribe_listening_session(
        input=m.GetMedicalScribeListeningSessionInput(
            session_id=session_id, domain_id=DOMAIN_ID, subscription_id=SUBSCRIPTION_ID
        )
    )
    return output.medical_scribe_listening_session_details


# --- The state machine, sans-IO ------------------------------------------------------------
REQUEST = SANS_IO_REQUEST
CONFIGURATION = {
    "postStreamActionSettings": {
        "outputS3Uri": S3_URI,
        "clinicalNoteGenerationSettings": {
            "noteTemplateSettings": {"managedTemplate": {"templateType": "DAP"}}
        },
    }
}


def _event(event_type: str, payload: bytes) -> Message:
    return Message(headers={":message-type": "event", ":event-type": event_type}, payload=payload)


def _run(
    scenario: Scenario,
    seconds: float,
    *,
    resume: SessionProgress | None = None,
    end: bool = False,
    max_audio_seconds: float = 7200.0,
) -> tuple[ScribeSession, list]:
    """Feed one stream: configuration, ``seconds`` of audio in 0.1 s chunks, maybe the end."""
    sent: list = []
    session = ScribeSession(
        request=REQUEST,
        scenario_for=lambda configuration: scenario,
        send=sent.append,
        resume=resume,
        max_audio_seconds=max_audio_seconds,
    )
    session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
    audio = pcm_tone(seconds)
    for i in range(0, len(audio), 3200):
        if session.finished:
            break
        session.receive_event(_event("binaryAudioEvent", audio[i : i + 3200]))
    if end and not session.finished:
        session.receive_event(_event("sessionControlEvent", b'{"type": "END_OF_SESSION"}'))
    elif not session.finished:
        session.input_closed()
    return session, sent


SCENARIO = Scenario(
    name="three",
    segments=tuple(Segment(**segment) for segment in SCRIPT["segments"]),
)


@pytest.mark.parametrize("split", [0.0, 1.0, 2.3, 3.0, 4.2, 5.6, 7.0])
def test_a_stream_split_by_a_pause_replays_exactly_like_one_stream(split):
    """Resumed from its progress, the clock, partials, finals and segment ids carry on:
    the results of two streams equal those of one with the same audio."""
    _, whole = _run(SCENARIO, 7.0, end=True)
    first, before = _run(SCENARIO, split)
    assert first.state is SessionState.PAUSED
    progress = first.progress()
    assert progress.audio_seconds == pytest.approx(split)
    second, after = _run(SCENARIO, 7.0 - split, resume=progress, end=True)
    assert second.state is SessionState.COMPLETED
    assert before + after == whole
    finals = [e for e in before + after if not e.is_partial]
    assert [e.content for e in finals] == CONTENTS
    assert len({e.segment_id for e in finals}) == 3


# One audio event as the SDK's JSON codec writes it, in other JSON layouts, with
# bad base64, too large, or as a binaryAudioEvent: what the one-call path of
# receive_audio_event takes and what it leaves to the general one.
# 3200 bytes are 0.1 s of 16 kHz PCM: chunks of it land exactly on the
# scenario's release times, and on the audio limit.
_AUDIO_SIZES = st.one_of(st.sampled_from([3200, 1600, 16000]), st.integers(0, 9000))
_AUDIO_INPUTS = st.one_of(
    st.tuples(st.just("sdk"), _AUDIO_SIZES),
    st.tuples(st.just("sdk"), _AUDIO_SIZES),
    st.tuples(st.just("spaced"), st.integers(min_value=0, max_value=400)),
    st.tuples(st.just("bad-base64"), st.integers(min_value=1, max_value=400)),
    st.tuples(st.just("too-large"), st.just(0)),
    st.tuples(st.just("binary"), _AUDIO_SIZES),
    st.tuples(st.just("binary-too-large"), st.just(0)),
    st.tuples(st.just("end"), st.just(0)),
)


def _audio_input(kind: str, size: int) -> tuple[str, bytes]:
    audio = (bytes(range(256)) * (size // 256 + 1))[:size]
    if kind == "binary":
        return "binaryAudioEvent", audio
    if kind == "binary-too-large":
        return "binaryAudioEvent", bytes(MAX_AUDIO_CHUNK_BYTES + 2)
    if kind == "end":
        return "sessionControlEvent", b'{"type": "END_OF_SESSION"}'
    if kind == "too-large":
        text = base64.b64encode(bytes(MAX_AUDIO_CHUNK_BYTES + 2)).decode()
    else:
        text = base64.b64encode(audio).decode()
    if kind == "bad-base64":
        text = "*" + text[1:]
    if kind == "spaced":
        return "audioEvent", json.dumps({"audioChunk": text}, indent=1).encode()
    return "audioEvent", json.dumps({"audioChunk": text}, separators=(",", ":")).encode()


@settings(max_examples=100, deadline=None)
# Exactly on the first segment's start and the audio limit (0.5 s), then past it.
@example(inputs=[("sdk", 3200)] * 6, configured=True, max_audio_seconds=0.5)
@example(inputs=[("binary", 3200)] * 5, configured=True, max_audio_seconds=7200.0)
@given(
    inputs=st.lists(_AUDIO_INPUTS, max_size=40),
    configured=st.booleans(),
    max_audio_seconds=st.sampled_from([0.5, 7200.0]),
)
def test_the_one_call_audio_path_does_what_the_general_path_does(
    inputs, configured, max_audio_seconds
):
    def feed(one_call: bool) -> tuple[ScribeSession, list, list, list, list]:
        sent: list = []
        audio: list = []
        errors: list = []
        # After each event: what was sent so far and where the session stands.
        trace: list = []
        session = ScribeSession(
            request=REQUEST,
            scenario_for=lambda configuration: SCENARIO,
            send=sent.append,
            on_audio=lambda chunk, is_base64: audio.append((bytes(chunk), is_base64)),
            max_audio_seconds=max_audio_seconds,
        )
        if configured:
            session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
        for kind, size in inputs:
            event_type, payload = _audio_input(kind, size)
            try:
                if one_call and event_type != "sessionControlEvent":
                    session.receive_audio_event(event_type, payload)
                else:
                    session.receive_event(_event(event_type, payload))
            except ValidationException as error:
                errors.append(error.message)
                session.fail("validationException", error.message)
            trace.append((len(sent), session.state, session.progress()))
        return session, sent, audio, errors, trace

    fast, fast_sent, fast_audio, fast_errors, fast_trace = feed(one_call=True)
    general, general_sent, general_audio, general_errors, general_trace = feed(one_call=False)
    assert fast_trace == general_trace
    assert fast_errors == general_errors
    assert fast_sent == general_sent
    assert fast_audio == general_audio
    assert fast.stats == general.stats
    assert fast.state is general.state
    assert fast.audio_seconds == general.audio_seconds
    assert fast.progress() == general.progress()


def test_progress_survives_its_json_form():
    progress = SessionProgress(
        audio_seconds=3.25, next_segment=2, active=((1, 2),), fired_faults=(0,)
    )
    assert SessionProgress.from_json(json.loads(json.dumps(progress.to_json()))) == progress
    with pytest.raises(ValueError):
        SessionProgress(next_segment=1, active=((1, 0),))


def test_a_fault_that_fired_does_not_fire_again_after_resume():
    scenario = Scenario(
        name="drop",
        segments=SCENARIO.segments,
        faults=(Fault(at=1.0, disconnect=True), Fault(at=5.0, exception="validationException")),
    )
    first, sent = _run(scenario, 3.0)
    assert first.state is SessionState.PAUSED
    assert isinstance(sent[-1], StreamReset)
    assert first.audio_seconds == pytest.approx(1.0)  # no audio is read after the reset
    second, after = _run(scenario, 5.0, resume=first.progress())
    assert second.state is SessionState.FAILED  # the fault at 5.0 s fires, the one at 1.0 s not
    assert not any(isinstance(e, StreamReset) for e in after)
    assert isinstance(after[-1], StreamException)


@pytest.mark.parametrize(
    ("fault", "state", "sent"),
    [
        (
            Fault(at=0.0, exception="internalFailureException", message="down"),
            SessionState.FAILED,
            StreamException(member="internalFailureException", message="down"),
        ),
        (
            Fault(at=0.0, disconnect=True),
            SessionState.PAUSED,
            StreamReset(reason="scripted disconnect at 0.0 s"),
        ),
    ],
    ids=["exception", "disconnect"],
)
def test_a_fault_at_0_fires_on_the_configuration_event_before_any_audio(fault, state, sent):
    """At 0 s of audio the clock has reached the fault: a client that waits for the
    stream's first answer before it sends audio gets it, not a stream waiting for ever."""
    out: list = []
    session = ScribeSession(
        request=REQUEST,
        scenario_for=lambda configuration: Scenario(name="at-0", faults=(fault,)),
        send=out.append,
    )
    session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
    assert session.state is state
    assert out == [sent]


@pytest.mark.parametrize("ending", ["refused-configuration", "closed-before-configuring"])
def test_a_resumed_stream_that_never_took_effect_keeps_the_segment_under_way(ending):
    """A resumed stream refused on its configurationEvent, or closed before sending
    one, changes nothing: the session's progress stays as it was, the segment under
    way included, so the next stream still sends that segment's partials and final
    (they were lost, and its final never came)."""
    _, whole = _run(SCENARIO, 7.0, end=True)
    first, before = _run(SCENARIO, 3.0)
    progress = first.progress()
    assert progress.active  # the second segment is under way at 3.0 s
    second = ScribeSession(
        request=REQUEST,
        scenario_for=lambda configuration: SCENARIO,
        send=lambda event: None,
        resume=progress,
    )
    if ending == "refused-configuration":
        with pytest.raises(ValidationException, match="postStreamActionSettings"):
            second.receive_event(_event("configurationEvent", b"{}"))
        second.fail("validationException", "refused")
    else:
        second.input_closed()
    assert second.progress() == progress
    third, after = _run(SCENARIO, 4.0, resume=second.progress(), end=True)
    assert third.state is SessionState.COMPLETED
    assert before + after == whole


def test_audio_beyond_the_session_limit_is_an_in_stream_validation_exception():
    first, _ = _run(SCENARIO, 1.5, max_audio_seconds=2.0)
    with pytest.raises(ValidationException, match="at most 2 s of audio over all its streams"):
        _run(SCENARIO, 1.0, resume=first.progress(), max_audio_seconds=2.0)


@pytest.mark.parametrize("entry", ["receive_event", "receive_audio_event"])
@pytest.mark.parametrize("event_type", ["binaryAudioEvent", "audioEvent"])
def test_the_audio_event_that_passes_the_limit_first_sends_what_fell_due_before_it(
    event_type, entry
):
    """A final due at 1.92 s, its audio all there, was lost when the event taking the
    session from 1.9 to 2.0 s passed a 1.95 s limit: the exception came alone. (The
    server takes the SDK's audio through receive_audio_event.)"""
    scenario = Scenario(name="edge", segments=(Segment(begin=1.0, end=1.92, content="last words"),))
    sent: list = []
    session = ScribeSession(
        request=REQUEST, scenario_for=lambda c: scenario, send=sent.append, max_audio_seconds=1.95
    )
    session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
    audio = pcm_tone(2.0)
    chunks = [audio[i : i + 3200] for i in range(0, len(audio), 3200)]
    for chunk in chunks[:-1]:
        _feed(session, entry, event_type, chunk)
    assert not any(isinstance(e, TranscriptResult) and not e.is_partial for e in sent)
    with pytest.raises(ValidationException, match="now has 2.000 s of audio"):
        _feed(session, entry, event_type, chunks[-1])
    finals = [e for e in sent if isinstance(e, TranscriptResult) and not e.is_partial]
    assert [(e.content, e.end) for e in finals] == [("last words", 1.92)]


@pytest.mark.parametrize("entry", ["receive_event", "receive_audio_event"])
def test_a_scripted_fault_before_the_limit_fires_instead_of_the_limits_exception(entry):
    """The fault at 1.93 s ends the session as scripted: nothing after its exception
    (not the final due at 1.98 s, past the limit), and not the limit's exception."""
    scenario = Scenario(
        name="fault",
        segments=(
            Segment(begin=1.0, end=1.91, content="last words"),
            Segment(begin=1.92, end=1.98, content="never heard"),
        ),
        faults=(Fault(at=1.93, exception="internalFailureException"),),
    )
    sent: list = []
    session = ScribeSession(
        request=REQUEST, scenario_for=lambda c: scenario, send=sent.append, max_audio_seconds=1.95
    )
    session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
    audio = pcm_tone(2.0)
    for i in range(0, len(audio), 3200):
        _feed(session, entry, "binaryAudioEvent", audio[i : i + 3200])
    assert session.state is SessionState.FAILED
    finals = [e.content for e in sent if isinstance(e, TranscriptResult) and not e.is_partial]
    assert finals == ["last words"]
    assert isinstance(sent[-1], StreamException)
    assert sent[-1].member == "internalFailureException"


def _feed(session: ScribeSession, entry: str, event_type: str, chunk: bytes) -> None:
    message = _audio_message(event_type, chunk)
    if entry == "receive_event":
        session.receive_event(message)
    else:
        session.receive_audio_event(event_type, message.payload)


def _audio_message(event_type: str, chunk: bytes) -> Message:
    if event_type == "binaryAudioEvent":
        return _event(event_type, chunk)
    text = base64.b64encode(chunk).decode()
    return _event(event_type, json.dumps({"audioChunk": text}).encode())


FLAC_REQUEST = dataclasses.replace(REQUEST, media_encoding="flac")
#: 1.0 s of FLAC: frames of 4,096 samples (0.768 s), then a last one of 3,712 that the
#: clock counts only when the stream ends (no next frame header marks its end).
ONE_SECOND_FLAC = encode_flac(16_000, 1, 16_000)


def _flac_session(max_audio_seconds: float = 7200.0) -> tuple[ScribeSession, list]:
    sent: list = []
    session = ScribeSession(
        request=FLAC_REQUEST,
        scenario_for=lambda configuration: Scenario(
            name="one", segments=(Segment(begin=0.2, end=0.9, content="all done here"),)
        ),
        send=sent.append,
        max_audio_seconds=max_audio_seconds,
    )
    session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
    session.receive_event(_event("binaryAudioEvent", ONE_SECOND_FLAC))
    assert session.audio_seconds == pytest.approx(0.768)
    return session, sent


@pytest.mark.parametrize("ending", ["input-closed", "idle-timeout"])
def test_a_flac_streams_last_frame_releases_its_results_when_the_input_ends(ending):
    """The final due at 0.9 s comes in this stream, not as the next one's first result."""
    session, sent = _flac_session()
    if ending == "input-closed":
        session.input_closed(release=True)
    else:
        session.time_out("quiet")
    assert session.state is SessionState.PAUSED
    assert session.audio_seconds == pytest.approx(1.0)
    finals = [e for e in sent if isinstance(e, TranscriptResult) and not e.is_partial]
    assert [(e.content, e.end) for e in finals] == [("all done here", 0.9)]
    if ending == "idle-timeout":  # the results, then the timeout's exception, last
        assert isinstance(sent[-1], StreamException) and sent[-1].message == "quiet"


def test_the_audio_limits_message_shows_a_session_one_sample_past_it_as_past_it():
    """One sample past 2 s at 16 kHz read "now has 2.000 s", as if within the limit."""
    sent: list = []
    session = ScribeSession(
        request=REQUEST,
        scenario_for=lambda c: Scenario(name="none"),
        send=sent.append,
        max_audio_seconds=2.0,
    )
    session.receive_event(_event("configurationEvent", json.dumps(CONFIGURATION).encode()))
    session.receive_event(_event("binaryAudioEvent", pcm_tone(2.0)[:32_000]))
    session.receive_event(_event("binaryAudioEvent", pcm_tone(2.0)[32_000 : 64_000 - 2]))
    with pytest.raises(ValidationException) as caught:
        session.receive_event(_event("binaryAudioEvent", pcm_tone(2.0)[-2:] + b"\0\0"))
    # (Three events: one may carry at most 32,000 bytes, one second at 16 kHz.)
    assert caught.value.message.startswith("the session now has 2.000062 s of audio: ")


def test_a_flac_streams_last_frame_past_the_audio_limit_fails_the_session_however_it_ends():
    """Counted only at the end, it was let through: a paused session over the limit
    could never be resumed to end it, an ended one completed with too much audio."""
    paused, sent = _flac_session(max_audio_seconds=0.9)
    paused.input_closed(release=True)
    assert paused.state is SessionState.FAILED
    assert isinstance(sent[-1], StreamException)
    assert "now has 1.000 s of audio" in sent[-1].message
    # The final due at 0.9 s, at the limit, came before it: its audio was all there.
    assert [(e.content, e.end) for e in sent[:-1] if not e.is_partial] == [("all done here", 0.9)]
    ended, sent = _flac_session(max_audio_seconds=0.9)
    with pytest.raises(ValidationException, match="at most 0.9 s of audio"):
        ended.receive_event(_event("sessionControlEvent", b'{"type": "END_OF_SESSION"}'))
    assert [(e.content, e.end) for e in sent if not e.is_partial] == [("all done here", 0.9)]


def test_results_never_lie_beyond_the_audio_received_after_resume():
    first, _ = _run(SCENARIO, 2.5)
    _, after = _run(SCENARIO, 0.5, resume=first.progress(), end=True)
    assert all(isinstance(e, TranscriptResult) and e.end <= 3.0 + 1e-9 for e in after)
    assert [e.content for e in after if not e.is_partial] == [CONTENTS[1]]


def test_lifecycle_table_opens_new_and_paused_sessions_only():
    assert transition(None, "open", session_id="s") is StreamStatus.IN_PROGRESS
    assert transition(StreamStatus.PAUSED, "open", session_id="s") is StreamStatus.IN_PROGRESS
    refused = {
        StreamStatus.IN_PROGRESS: "already has a stream in progress",
        StreamStatus.COMPLETED: "is COMPLETED",
        StreamStatus.FAILED: "is FAILED",
    }
    for status, message in refused.items():
        assert (status, "open") not in LIFECYCLE
        with pytest.raises(ValidationException, match=message):
            transition(status, "open", session_id="s")


def test_a_stream_ending_any_other_way_than_end_or_failure_pauses():
    assert stream_outcome(SessionState.COMPLETED) == "complete"
    assert stream_outcome(SessionState.FAILED) == "fail"
    for state in (SessionState.PAUSED, SessionState.STREAMING, SessionState.AWAITING_CONFIGURATION):
        assert stream_outcome(state) == "pause"


def test_resume_limits_name_the_rule_they_enforce():
    limits = SessionLimits()
    check_resume(session_id="s", created_at=0, audio_seconds=7199, now=5 * 3600, limits=limits)
    with pytest.raises(ValidationException, match="within 5 hours of its creation"):
        check_resume(session_id="s", created_at=0, audio_seconds=0, now=5 * 3600 + 1, limits=limits)
    # Exactly the limit: resumable, to end the session and get its note.
    check_resume(session_id="s", created_at=0, audio_seconds=7200, now=1, limits=limits)
    with pytest.raises(ValidationException, match=r"at most 7200 s \(2 hours\) of audio"):
        check_resume(session_id="s", created_at=0, audio_seconds=7200.5, now=1, limits=limits)
    with pytest.raises(ValidationException, match=r"5.00 hours ago \(1 s past the window\)"):
        check_resume(session_id="s", created_at=0, audio_seconds=0, now=5 * 3600 + 1, limits=limits)


# --- Through the real SDK ---------------------------------------------------------------
async def test_statuses_follow_the_stream_paused_then_completed(client, emulator):
    """IN_PROGRESS while streaming, PAUSED when the input ends without END_OF_SESSION,
    COMPLETED after it; streamCreationTime is kept across the streams."""
    session_id = new_session_id()
    stream = await client.start_medical_scribe_listening_session(input=stream_input(session_id))
    await stream.input_stream.send(configuration_event())
    await asyncio.wait_for(stream.await_output(), 10)
    live = await details(client, session_id)
    assert live.stream_status == "IN_PROGRESS" and live.stream_end_time is None
    await stream.input_stream.close()
    _, output = await stream.await_output()
    assert [e async for e in output] == []
    paused = await details(client, session_id)
    assert paused.stream_status == "PAUSED" and paused.stream_end_time is not None
    result = await run_session(client, session_id, audio=pcm_tone(0.5))
    assert result.error is None
    done = await details(client, session_id)
    assert done.stream_status == "COMPLETED"
    assert done.stream_creation_time == live.stream_creation_time


async def test_resumed_stream_continues_the_clock_and_the_scripted_transcript(client, emulator):
    """Offsets keep growing past the first stream's audio, no segment is sent twice, and a
    segment under way at the pause goes on with its remaining partials and its final."""
    session_id = new_session_id()
    scripted(emulator, session_id)
    first = await run_session(client, session_id, audio=pcm_tone(3.0), end_of_session=False)
    assert first.error is None
    assert [s.content for s in first.finals] == CONTENTS[:1]
    under_way = [s for s in first.partials if s.content in CONTENTS[1]]
    assert len(under_way) == 1  # one of its three partials is due by 3.0 s
    second = await run_session(client, session_id, audio=pcm_tone(4.0))
    assert second.error is None
    assert [s.content for s in second.finals] == CONTENTS[1:]
    continued = [s for s in second.segments if s.segment_id == under_way[0].segment_id]
    assert [s.is_partial for s in continued] == [True, True, False]
    assert continued[-1].audio_begin_offset == 2.2 and continued[-1].audio_end_offset == 4.0
    assert all(s.audio_end_offset > 3.0 for s in second.segments)
    assert second.finals[-1].audio_end_offset == 6.0
    finals = first.finals + second.finals
    assert len({s.segment_id for s in finals}) == 3


async def test_scripted_disconnect_pauses_and_a_resume_continues_after_it(client, emulator):
    """A disconnect fault pauses the session. The CRT connection that saw the reset can
    stay wedged by the SDK's abandoned input writer, so the resume uses a new client."""
    from emulator.sdk import make_client

    session_id = new_session_id()
    scripted(emulator, session_id, {**SCRIPT, "faults": [{"at": 3.0, "disconnect": True}]})
    # Paced: the sender is still sending when the reset lands, however loaded the machine.
    first = await run_session(client, session_id, audio=pcm_tone(6.0), timeout=20, pace=0.05)
    assert first.error is None and first.input_failed
    fresh = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    try:
        assert (await details(fresh, session_id)).stream_status == "PAUSED"
        second = await run_session(fresh, session_id, audio=pcm_tone(4.0))
    finally:
        await fresh._config.transport.close()
    assert second.error is None and not second.input_failed
    assert [s.content for s in first.finals + second.finals] == CONTENTS


async def test_a_disconnect_resumes_from_the_end_of_the_event_that_crossed_it(client, emulator):
    """As the README says: a disconnect at 5.0 s with 0.8 s events resets the stream
    at the event ending at 5.6 s; the session keeps that audio, and the partials due
    at 5.1 and 5.4 s, cut off by the reset, come on the resumed stream's
    configuration, before any audio."""
    from emulator.sdk import make_client

    session_id = new_session_id()
    segment = {"channel": 0, "begin": 4.5, "end": 6.0, "content": "one two three four five"}
    script = {"segments": [{**segment, "partials": 4}], "faults": [{"at": 5.0, "disconnect": True}]}
    scripted(emulator, session_id, script)
    first = await run_session(
        client, session_id, audio=pcm_tone(8.0), chunk_bytes=25_600, timeout=20, pace=0.05
    )
    assert first.error is None and first.input_failed
    assert [p.audio_end_offset for p in first.partials] == [4.8]
    status, kept = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 200 and kept["status"] == "PAUSED" and kept["audioSeconds"] == 5.6
    fresh = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    try:
        second = await run_session(fresh, session_id, end_of_session=False)
    finally:
        await fresh._config.transport.close()
    assert second.error is None
    assert [p.audio_end_offset for p in second.partials] == [5.1, 5.4]
    assert second.finals == []


async def test_a_fault_the_crossing_event_also_passed_fires_on_the_resumed_streams_configuration(
    client, emulator
):
    """As the README says: each scripted fault fires once. The 0.8 s event ending at
    5.6 s crosses disconnects at 5.0 and 5.3; the first resets that stream, and the
    second resets the resumed one as soon as its configuration is taken (after
    the partial due at 5.1 s, in time order). A third stream goes on."""
    from emulator.sdk import make_client

    session_id = new_session_id()
    segment = {"channel": 0, "begin": 4.5, "end": 6.0, "content": "one two three four five"}
    faults = [{"at": 5.0, "disconnect": True}, {"at": 5.3, "disconnect": True}]
    scripted(emulator, session_id, {"segments": [{**segment, "partials": 4}], "faults": faults})
    first = await run_session(
        client, session_id, audio=pcm_tone(8.0), chunk_bytes=25_600, timeout=20, pace=0.05
    )
    assert first.error is None and first.input_failed
    results = []
    for _ in range(2):
        fresh = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
        try:
            results.append(await run_session(fresh, session_id, audio=pcm_tone(1.0), pace=0.05))
        finally:
            await fresh._config.transport.close()
    second, third = results
    assert second.error is None and second.input_failed
    assert [p.audio_end_offset for p in second.partials] == [5.1] and second.finals == []
    assert third.error is None and not third.input_failed
    assert [p.audio_end_offset for p in third.partials] == [5.4, 5.7]
    assert [f.content for f in third.finals] == [segment["content"]]


async def test_in_stream_exception_fails_the_session_for_good(client, emulator):
    session_id = new_session_id()
    faults = [{"at": 1.0, "exception": "internalFailureException", "message": "boom"}]
    scripted(emulator, session_id, {**SCRIPT, "faults": faults})
    first = await run_session(client, session_id, audio=pcm_tone(2.0))
    assert isinstance(first.error, m.InternalServerException)
    assert (await details(client, session_id)).stream_status == "FAILED"
    again = await run_session(client, session_id, audio=pcm_tone(1.0))
    assert isinstance(again.error, m.ValidationException)
    assert "is FAILED" in again.error.message and again.events == []


async def test_a_completed_session_cannot_stream_again(client, emulator):
    session_id = new_session_id()
    assert (await run_session(client, session_id, audio=pcm_tone(0.5))).error is None
    again = await run_session(client, session_id, audio=pcm_tone(0.5))
    assert isinstance(again.error, m.ValidationException), repr(again.error)
    assert "is COMPLETED" in again.error.message and "END_OF_SESSION" in again.error.message


async def test_a_second_concurrent_stream_on_a_live_session_is_refused(client, emulator):
    session_id = new_session_id()
    scripted(emulator, session_id)
    stream = await client.start_medical_scribe_listening_session(input=stream_input(session_id))
    await stream.input_stream.send(configuration_event())
    await asyncio.wait_for(stream.await_output(), 10)
    rival = await run_session(client, session_id, audio=pcm_tone(0.5))
    assert isinstance(rival.error, m.ValidationException), repr(rival.error)
    assert "already has a stream in progress" in rival.error.message
    # And what ends the first, which an app that gave up on it must wait for.
    assert rival.error.message.endswith(
        "That stream ends when its input is closed, when its connection closes or resets "
        "it, or after the emulator's --idle-timeout without input (when one is set); a "
        "session it leaves PAUSED then resumes with a new stream"
    )
    # The first stream is untouched by the refusal.
    audio = pcm_tone(2.5)
    for i in range(0, len(audio), 3200):
        await stream.input_stream.send(audio_event(audio[i : i + 3200]))
    await stream.input_stream.send(end_of_session_event())
    await stream.input_stream.close()
    _, output = await stream.await_output()
    finals = [e.value.transcript_segment async for e in output]
    assert [s.content for s in finals if not s.is_partial] == CONTENTS[:2]


async def test_a_resumed_stream_must_again_begin_with_a_configuration_event(client, emulator):
    session_id = new_session_id()
    first = await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
    assert first.error is None
    again = await run_session(
        client, session_id, events=[audio_event(pcm_tone(0.2)), end_of_session_event()]
    )
    assert isinstance(again.error, m.ValidationException)
    assert "must be a configurationEvent" in again.error.message


async def test_a_resumed_stream_keeps_the_session_audio_format(client, emulator):
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
    again = await run_session(
        client, session_id, audio=pcm_tone(0.5, sample_rate=8000), sample_rate=8000
    )
    assert isinstance(again.error, m.ValidationException)
    assert "x-amzn-medscribe-sample-rate is 8000" in again.error.message
    assert (await details(client, session_id)).stream_status == "PAUSED"  # refusal changes nothing


async def test_a_resumed_stream_keeps_the_session_channel_definitions(client, emulator):
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
    again = await run_session(
        client, session_id, audio=pcm_tone(0.5, channels=2), two_channels=True
    )
    assert isinstance(again.error, m.ValidationException)
    assert "channelDefinitions" in again.error.message
    # The refused stream changed nothing: the session is still paused (as after a
    # resume refused by its headers), and a matching stream completes it.
    assert (await details(client, session_id)).stream_status == "PAUSED"
    done = await run_session(client, session_id, audio=pcm_tone(0.5))
    assert done.error is None, repr(done.error)
    assert (await details(client, session_id)).stream_status == "COMPLETED"
    status, record = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert record["audioSeconds"] == pytest.approx(1.0)
    assert record["streams"] == 3


async def test_a_refused_resume_keeps_the_segment_under_way_for_the_next_stream(client, emulator):
    """The stream refused on its channel definitions dropped the segment under way
    from the session's progress: the stream that then completed it never sent that
    segment's last partials and final."""
    session_id = new_session_id()
    scripted(emulator, session_id)
    first = await run_session(client, session_id, audio=pcm_tone(3.0), end_of_session=False)
    (under_way,) = [s for s in first.partials if s.content in CONTENTS[1]]
    refused = await run_session(
        client, session_id, audio=pcm_tone(0.5, channels=2), two_channels=True
    )
    assert isinstance(refused.error, m.ValidationException)
    last = await run_session(client, session_id, audio=pcm_tone(4.0))
    assert last.error is None
    assert [s.content for s in last.finals] == CONTENTS[1:]
    continued = [s for s in last.segments if s.segment_id == under_way.segment_id]
    assert [s.is_partial for s in continued] == [True, True, False]


async def test_get_and_the_artifacts_follow_a_resumed_streams_configuration(client, emulator):
    """A resumed stream's configuration replaces the session's: Get kept the first
    stream's output URI and template, and its artifacts' locations under that URI."""
    session_id = new_session_id()
    chunk = audio_event(pcm_tone(0.2))
    paused = await run_session(
        client,
        session_id,
        events=[configuration_event(output_s3_uri="s3://first-bucket/a", template="DAP"), chunk],
    )
    assert paused.error is None
    done = await run_session(
        client,
        session_id,
        events=[
            configuration_event(output_s3_uri="s3://second-bucket/b", template="GIRPP"),
            chunk,
            end_of_session_event(),
        ],
    )
    assert done.error is None
    got = await details(client, session_id)
    assert got.stream_status == "COMPLETED"
    settings = got.post_stream_action_settings
    assert settings.output_s3_uri == "s3://second-bucket/b"
    template = settings.clinical_note_generation_settings.note_template_settings
    assert template.value.template_type == "GIRPP"
    results = got.post_stream_action_result.clinical_note_generation_result
    prefix = (
        f"s3://second-bucket/b/health-agent-listening-session/{DOMAIN_ID}/{SUBSCRIPTION_ID}/"
        f"{session_id}/post-stream-action/"
    )
    for artifact in (results.note_result, results.transcript_result):
        assert artifact.output_location.startswith(prefix), artifact


def _rule_remaining(emulator, rule_id: str) -> int:
    status, body = admin(emulator.h2c_url, "GET", "/_emulator/rules")
    assert status == 200
    (rule,) = [r for r in body["rules"] if r["id"] == rule_id]
    return rule["remaining"]


def _add_rule(emulator, rule: dict) -> str:
    status, body = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return body["id"]


async def test_each_stream_of_a_session_draws_a_probability_anew(client, emulator):
    """A session's streams draw one after another (the count of its streams that
    opened is part of the draw); a request refused for another reason (here: a
    resume at another sample rate) draws what the next would, and changes nothing."""
    from emulator.rules import RuleBook, parse_rule

    rule = {"match": {"domainId": DOMAIN_ID}, "chaos": {"slow": 0.001}, "probability": 0.5}

    def expected(session_id: str, streams: int) -> list[bool]:
        book = RuleBook(seed=emulator.app.backend.seed)
        book.add(parse_rule(rule, scenarios={}))
        ids = {"session_id": session_id, "domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID}
        return [book.match(**ids, asks=k) is not None for k in range(streams)]

    def telling(session_id: str) -> bool:
        """Its draws show a count left behind (all alike) or a refusal counted."""
        draws = expected(session_id, 4)
        return len(set(draws[:3])) == 2 and draws[:3] != [draws[0], *draws[2:]]

    session_id = next(s for s in iter(new_session_id, None) if telling(s))
    rule_id = _add_rule(emulator, rule)
    await run_session(client, session_id, audio=pcm_tone(0.2), end_of_session=False)
    refused = await run_session(client, session_id, audio=pcm_tone(0.2), sample_rate=8000)
    assert isinstance(refused.error, m.ValidationException)  # drew, not counted
    await run_session(client, session_id, audio=pcm_tone(0.2), end_of_session=False)
    assert (await run_session(client, session_id, audio=pcm_tone(0.2))).error is None
    status, events = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    started = [e["rule"] == rule_id for e in events["events"] if e["type"] == "streamStarted"]
    assert started == expected(session_id, 3)


async def test_a_sessions_count_of_requests_is_its_streams_and_refusals(tmp_path, monkeypatch):
    """The count in a probability's draw: the session's streams (kept with it, so a
    resumed session draws anew after a restart too: it drew its first stream's
    again) and the requests a rule's error refused (kept in memory, bounded)."""
    from emulator import backend as backend_module
    from emulator.backend import Backend

    def request(session_id: str) -> StreamRequest:
        return StreamRequest(
            session_id=session_id,
            domain_id=DOMAIN_ID,
            subscription_id=SUBSCRIPTION_ID,
            language_code="en-US",
            sample_rate=16000,
            media_encoding="pcm",
        )

    paused = request(new_session_id())
    backend = Backend(scenarios={}, state_dir=tmp_path)
    try:
        assert backend.asks_of(paused) == 0
        record = backend.open_stream(paused, request_id="r", rule=None)
        backend.new_session(record, paused, rule=None, send=lambda event: None).input_closed()
        backend.close_stream(record)
        backend.note_refused(paused)
        assert backend.asks_of(paused) == 2
        monkeypatch.setattr(backend_module, "MAX_REFUSED_SESSIONS", 2)
        others = [request(new_session_id()) for _ in range(2)]
        for other in others:
            backend.note_refused(other)
        assert backend.asks_of(paused) == 1  # its refusal forgotten, the oldest
        assert [backend.asks_of(other) for other in others] == [1, 1]
    finally:
        backend.close()
    again = Backend(scenarios={}, state_dir=tmp_path)
    try:
        assert again.asks_of(paused) == 1  # its stream, stored; refusals are not
        again.note_refused(paused)
        again.reset()
        assert again.asks_of(paused) == 0
    finally:
        again.close()


async def test_times_counts_sessions_not_refused_requests_or_resumes(client, emulator):
    """A request refused before its stream (here: on a COMPLETED session) and a
    stream resuming a session each used up one of a rule's `times` before."""
    done, paused, fresh = new_session_id(), new_session_id(), new_session_id()
    assert (await run_session(client, done, audio=pcm_tone(0.3))).error is None
    rule_id = _add_rule(
        emulator, {"match": {"domainId": DOMAIN_ID}, "scenario": "synthetic", "times": 2}
    )
    refused = await run_session(client, done, audio=pcm_tone(0.3))
    assert isinstance(refused.error, m.ValidationException)
    assert _rule_remaining(emulator, rule_id) == 2
    await run_session(client, paused, audio=pcm_tone(0.3), end_of_session=False)
    assert _rule_remaining(emulator, rule_id) == 1
    assert (await run_session(client, paused, audio=pcm_tone(0.3))).error is None  # a resume
    assert _rule_remaining(emulator, rule_id) == 1
    assert (await run_session(client, fresh, audio=pcm_tone(0.3))).error is None
    assert _rule_remaining(emulator, rule_id) == 0
    status, listed = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{fresh}")
    assert listed["ruleId"] == rule_id


async def test_an_error_rule_uses_one_of_its_times_per_request_it_refuses(client, emulator):
    rule_id = _add_rule(
        emulator,
        {"match": {"domainId": DOMAIN_ID}, "error": {"type": "ThrottlingException"}, "times": 2},
    )
    for left in (1, 0):
        refused = await run_session(client, new_session_id(), audio=pcm_tone(0.2))
        assert isinstance(refused.error, m.ThrottlingException)
        assert _rule_remaining(emulator, rule_id) == left
    assert (await run_session(client, new_session_id(), audio=pcm_tone(0.2))).error is None


async def test_after_a_reset_a_probability_rule_draws_as_it_did_from_the_start(client, emulator):
    """The pytest fixture resets before each test: a test's draws depended on
    which tests ran before it (the sessions' counts of requests start over)."""
    rule = {
        "match": {"domainId": DOMAIN_ID},
        "error": {"type": "ThrottlingException"},
        "probability": 0.5,
    }

    # A reset forgets them: new again. Fixed ids, so the draws are too: random ones
    # all fell on the same side one run in 128.
    sessions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"draws-after-a-reset-{k}")) for k in range(8)]

    async def draws() -> list[bool]:
        _add_rule(emulator, rule)
        outcomes = []
        for session_id in sessions:
            result = await run_session(client, session_id, audio=pcm_tone(0.1))
            outcomes.append(isinstance(result.error, m.ThrottlingException))
        return outcomes

    first = await draws()
    assert admin(emulator.h2c_url, "POST", "/_emulator/reset")[0] == 200
    assert await draws() == first
    assert 0 < sum(first) < 8  # some refused, some not


async def test_resuming_more_than_5_hours_after_creation_is_refused(client, emulator):
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
    backend = emulator.app.backend
    backend.clock = lambda: time.time() + 5 * 3600 + 60
    try:
        again = await run_session(client, session_id, audio=pcm_tone(0.5))
    finally:
        backend.clock = time.time
    assert isinstance(again.error, m.ValidationException)
    assert "resumed only within 5 hours of its creation" in again.error.message


async def test_total_audio_limit_is_enforced_in_stream_and_before_a_resume(client, emulator):
    """The 2-hour limit, scaled down to 1 s so a test can reach it."""
    backend = emulator.app.backend
    backend.limits = SessionLimits(max_audio_seconds=1.0)
    try:
        crossing = new_session_id()
        await run_session(client, crossing, audio=pcm_tone(0.7), end_of_session=False)
        over = await run_session(client, crossing, audio=pcm_tone(0.7))
        full = new_session_id()
        await run_session(client, full, audio=pcm_tone(1.0), end_of_session=False)
        ended = await run_session(client, full)  # no audio: END_OF_SESSION only
    finally:
        backend.limits = SessionLimits()
    assert isinstance(over.error, m.ValidationException) and over.output is not None  # in-stream
    assert "at most 1 s of audio over all its streams" in over.error.message
    assert (await details(client, crossing)).stream_status == "FAILED"
    # A session holding exactly the limit is resumed to be ended, and gets its note.
    assert ended.error is None, ended.error
    assert (await details(client, full)).stream_status == "COMPLETED"


async def test_through_the_sdk_a_session_a_sample_past_the_limit_is_told_so(client, emulator):
    """Its message read "now has 1.000 s" against "at most 1 s", as if within it."""
    backend = emulator.app.backend
    backend.limits = SessionLimits(max_audio_seconds=1.0)
    try:
        over = await run_session(client, new_session_id(), audio=pcm_tone(1.0) + b"\0\0")
    finally:
        backend.limits = SessionLimits()
    assert isinstance(over.error, m.ValidationException)
    assert "now has 1.000063 s of audio" in over.error.message


async def test_through_the_sdk_the_event_passing_the_limit_sends_the_final_due_before_it(
    client, emulator
):
    """Scaled down to 0.95 s: the event taking the session from 0.9 to 1.0 s fails it,
    and the final due at 0.92 s, its audio all sent, reaches the SDK first."""
    session_id = new_session_id()
    script = {"segments": [{"begin": 0.1, "end": 0.92, "content": "last words heard"}]}
    status, _ = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"sessionId": session_id}, "scenario": script},
    )
    assert status == 201
    backend = emulator.app.backend
    backend.limits = SessionLimits(max_audio_seconds=0.95)
    try:
        over = await run_session(client, session_id, audio=pcm_tone(1.0))
    finally:
        backend.limits = SessionLimits()
    assert isinstance(over.error, m.ValidationException)
    assert "now has 1.000 s of audio" in over.error.message
    assert [(s.content, s.audio_end_offset) for s in over.finals] == [("last words heard", 0.92)]


async def test_boto3_sees_each_status_of_the_lifecycle(client, emulator):
    boto = boto3_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)

    def status(session_id: str) -> str:
        answer = boto.get_medical_scribe_listening_session(
            sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )
        return answer["medicalScribeListeningSessionDetails"]["streamStatus"]

    paused, failed, completed = new_session_id(), new_session_id(), new_session_id()
    await run_session(client, paused, audio=pcm_tone(0.3), end_of_session=False)
    await run_session(client, failed, events=[audio_event(pcm_tone(0.1))])
    await run_session(client, completed, audio=pcm_tone(0.3))
    assert [status(s) for s in (paused, failed, completed)] == ["PAUSED", "FAILED", "COMPLETED"]
    with pytest.raises(ClientError) as info:
        status(new_session_id())
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


# --- Across restarts, and retention --------------------------------------------------------
def _settings(state: Path, **overrides) -> Settings:
    return Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=state, **overrides)


async def _with_client(running, body):
    from emulator.sdk import make_client

    client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
    try:
        return await body(client)
    finally:
        await client._config.transport.close()


def test_a_paused_session_resumes_after_an_emulator_restart(tmp_path):
    """Sessions live in <state-dir>/medscribe.sqlite3: the second emulator continues the
    scripted transcript where the first one's stream stopped, though the rule is gone."""
    session_id = new_session_id()
    with running_emulator(_settings(tmp_path)) as first:
        scripted(first, session_id)
        before = asyncio.run(
            _with_client(
                first,
                lambda c: run_session(c, session_id, audio=pcm_tone(3.0), end_of_session=False),
            )
        )
        created = asyncio.run(_with_client(first, lambda c: details(c, session_id)))
    assert (tmp_path / "medscribe.sqlite3").is_file()
    with running_emulator(_settings(tmp_path)) as second:
        assert admin(second.h2c_url, "GET", "/_emulator/rules")[1]["rules"] == []

        async def resume(client):
            paused = await details(client, session_id)
            result = await run_session(client, session_id, audio=pcm_tone(4.0))
            return paused, result, await details(client, session_id)

        paused, after, done = asyncio.run(_with_client(second, resume))
    assert before.error is None and after.error is None
    assert paused.stream_status == "PAUSED"
    assert [s.content for s in before.finals + after.finals] == CONTENTS
    assert all(s.audio_end_offset > 3.0 for s in after.segments)
    assert done.stream_status == "COMPLETED"
    assert done.stream_creation_time == created.stream_creation_time


async def _open_and_configure(client, session_id: str):
    """Open a stream through the SDK, send the configuration, await the response."""
    stream = await client.start_medical_scribe_listening_session(input=stream_input(session_id))
    await stream.input_stream.send(configuration_event())
    _, output = await stream.await_output()
    return stream, output


async def _close_input(stream, output) -> None:
    await stream.input_stream.close()
    async for _ in output:
        pass


def test_resuming_a_session_over_the_retention_keeps_it_and_drops_the_other(tmp_path):
    """Two sessions streaming at once are both kept over a retention of one; both
    pause. Resuming the older then drops the newer, never the session whose stream
    is opening: it completes and GetSession still finds it."""
    older, newer = new_session_id(), new_session_id()
    with running_emulator(_settings(tmp_path, retention=1)) as running:

        async def body(client):
            first = await _open_and_configure(client, older)
            second = await _open_and_configure(client, newer)
            assert _kept(running) == [older, newer]  # both live: nothing to drop
            await _close_input(*first)
            await _close_input(*second)
            assert [(await details(client, s)).stream_status for s in (older, newer)] == [
                "PAUSED",
                "PAUSED",
            ]
            resumed = await run_session(client, older, audio=pcm_tone(0.3))
            return resumed, await details(client, older)

        resumed, done = asyncio.run(_with_client(running, body))
        assert resumed.error is None
        assert done.stream_status == "COMPLETED"
        assert _kept(running) == [older]


def test_a_session_over_the_retention_is_kept_until_its_artifacts_are_written(tmp_path):
    """With --retention 1, a session that completed just before the next one
    started was dropped with its post-stream job: its artifacts never came."""
    from emulator.artifacts import artifact_locations

    first, second = new_session_id(), new_session_id()
    with running_emulator(_settings(tmp_path, retention=1, post_stream_delay=0.5)) as running:

        async def two(client):
            for session_id in (first, second):
                assert (await run_session(client, session_id, audio=pcm_tone(0.2))).error is None

        asyncio.run(_with_client(running, two))
        assert _kept(running) == [first, second]  # the first one's artifacts are pending
        assert _kept_once_settled(running, [second]) == [second]
    ids = {"domain_id": DOMAIN_ID, "subscription_id": SUBSCRIPTION_ID, "session_id": first}
    for bucket, key in artifact_locations(S3_URI, **ids).values():
        written = tmp_path / "s3" / bucket / key
        assert written.is_file() and json.loads(written.read_text()), written


def _kept(running) -> list[str]:
    status, body = admin(running.h2c_url, "GET", "/_emulator/sessions")
    assert status == 200
    return [session["sessionId"] for session in body["sessions"]]


def _kept_once_settled(running, wanted: list[str]) -> list[str]:
    """The kept sessions once post-stream actions under way have finished (a
    session waiting for its artifacts is kept over the retention until then)."""
    deadline = time.monotonic() + 15
    while (kept := _kept(running)) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return kept


def test_retention_keeps_the_newest_sessions_and_drops_the_oldest_with_their_journal(tmp_path):
    ids = [new_session_id() for _ in range(3)]
    with running_emulator(_settings(tmp_path, retention=2, post_stream_delay=0.2)) as running:

        async def three(client):
            for session_id in ids:
                assert (await run_session(client, session_id, audio=pcm_tone(0.2))).error is None

        asyncio.run(_with_client(running, three))
        assert _kept_once_settled(running, ids[1:]) == ids[1:]
        boto = boto3_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
        with pytest.raises(ClientError) as info:
            boto.get_medical_scribe_listening_session(
                sessionId=ids[0], domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
            )
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
        kept = [
            s["sessionId"]
            for s in admin(running.h2c_url, "GET", "/_emulator/sessions")[1]["sessions"]
        ]
        assert kept == ids[1:]
    journals = tmp_path / "sessions" / DOMAIN_ID / SUBSCRIPTION_ID
    assert sorted(p.name for p in journals.iterdir()) == sorted(ids[1:])
    with running_emulator(_settings(tmp_path, retention=1)) as running:
        kept = [
            s["sessionId"]
            for s in admin(running.h2c_url, "GET", "/_emulator/sessions")[1]["sessions"]
        ]
        assert kept == ids[2:]


def _results(segments: list[dict], seconds: float, *, end: bool) -> list[TranscriptResult]:
    scenario = Scenario(name="ms", segments=tuple(Segment(**s) for s in segments))
    session, sent = _run(scenario, seconds, end=end)
    assert session.state is not SessionState.FAILED, sent
    return [e for e in sent if isinstance(e, TranscriptResult)]


@pytest.mark.parametrize(
    ("seconds", "begin", "expected_end"),
    [(1.001, 0.5, 1.001), (32.3, 30.0, 32.3), (1.0015, 1.0002, 1.001)],
    ids=["mid-segment", "float-noise-below", "sub-ms-begin"],
)
def test_end_of_session_ends_open_segments_at_the_audio_to_the_millisecond(
    seconds, begin, expected_end
):
    """The final of a segment under way ends where the audio does, to the millisecond
    below it (1.001 * 1000 is 1000.9999999999999: the floor of it once made the end
    precede the begin, and failed the session)."""
    segment = {"channel": 0, "begin": begin, "end": 40.0, "content": "one two three"}
    (final,) = _results([segment], seconds, end=True)
    assert (final.is_partial, final.begin, final.end) == (False, begin, expected_end)


@pytest.mark.parametrize(
    ("seconds", "begin"),
    [(1.001, 1.001), (7.0, 7.0), (1.0004, 1.0002), (1.0012, 1.0004)],
    ids=[
        "audio-ends-at-its-begin",
        "whole-seconds",
        "under-a-millisecond-past-it",
        # Under a millisecond past an off-grid begin, across a millisecond of the
        # grid: the audio's millisecond below (1.001) lies after the begin, and
        # the segment was sent.
        "under-a-millisecond-across-the-grid",
    ],
)
def test_end_of_session_leaves_out_a_segment_the_audio_ends_at_the_begin_of(seconds, begin):
    """A segment whose begin the audio reaches but does not pass by a millisecond was
    never heard: it is not sent (its final would end where it begins, which no
    transcript segment does), and the one before it still is."""
    segments = [
        {"channel": 0, "begin": 0.1, "end": 0.5, "content": "heard", "partials": 0},
        {"channel": 0, "begin": begin, "end": 40.0, "content": "one two three"},
    ]
    results = _results(segments, seconds, end=True)
    assert [(r.content, r.is_partial) for r in results] == [("heard", False)]


@pytest.mark.parametrize(
    ("begin", "end", "seconds", "expected"),
    [
        # A partial rounded down to the begin covered no audio, and a stream ending
        # at that begin got it and a final of no length.
        (1.0, 1.0004, 1.0, []),
        (1.0001, 1.0003, 1.0001, []),
        # Under a millisecond long: its partial is due at its end, with its final.
        (1.0001, 1.0003, 1.0003, [(True, 1.0003), (False, 1.0003)]),
        # A partial a millisecond after the begin is heard; its final then follows
        # at END_OF_SESSION, at the audio's millisecond.
        (1.0, 1.002, 1.0015, [(True, 1.001), (False, 1.001)]),
        # A begin off the millisecond grid: its first partial on the grid, a whole
        # millisecond or more after it (1.001 was 0.6 ms after it).
        (1.0004, 1.002, 1.0019, [(False, 1.001)]),
        (1.0004, 1.002, 1.002, [(True, 1.002), (False, 1.002)]),
    ],
    ids=[
        "ends-at-the-begin",
        "sub-ms-ends-at-the-begin",
        "sub-ms-whole",
        "a-ms-in",
        "off-grid-under-a-ms",
        "off-grid-a-ms-in",
    ],
)
def test_a_partial_is_due_a_millisecond_after_its_begin_at_the_earliest(
    begin, end, seconds, expected
):
    segment = {"channel": 0, "begin": begin, "end": end, "content": "one two", "partials": 1}
    results = _results([segment], seconds, end=True)
    assert [(r.is_partial, r.end) for r in results] == expected


@pytest.mark.parametrize(
    ("begin", "end"),
    [(1.0004, 1.0008), (1.0001, 1.0003), (0.2, 1.0), (1.1, 1.8)],
    ids=["rounds-past-the-end", "rounds-before-the-begin", "0.6", "thirds"],
)
def test_partials_end_on_a_millisecond_within_their_segment_before_its_final(begin, end):
    results = _results(
        [{"channel": 0, "begin": begin, "end": end, "content": "one two three", "partials": 2}],
        2.0,
        end=False,
    )
    *partials, final = results
    assert [r.is_partial for r in results] == [True, True, False]
    for partial in partials:
        assert begin <= partial.end <= end
        assert partial.end in (begin, end) or partial.end == round(partial.end, 3)
    assert [p.end for p in partials] == sorted(p.end for p in partials)
    assert final.end == end


@settings(max_examples=300, deadline=None)
@given(content=st.text(min_size=1), partials=st.integers(1, 50), data=st.data())
def test_a_partial_text_is_a_non_blank_prefix_of_the_next_and_of_its_final(content, partials, data):
    """Cut at a word's end with the content's own spacing (a partial once joined the
    words with single spaces, so "Take   two" had the partial "Take two"), or inside
    a lone word after the space before it (" Okay" had the partial " ")."""
    from emulator.scenario import can_have_partials
    from emulator.scenario import visible_start as _visible_start
    from emulator.session import _prefix

    if not can_have_partials(content):
        if _visible_start(content) < len(content):  # something visible
            assert Segment(begin=0.0, end=1.0, content=content, partials=3).partials == 0
        return
    k = data.draw(st.integers(1, partials))
    partial = _prefix(content, k, partials)
    assert content.startswith(partial) and partial != content and partial.strip()
    if len(content.split()) == 1:  # cut inside its word: between characters
        from emulator.scenario import character_ends, visible_start

        assert len(partial) in character_ends(content.rstrip(), visible_start(content))
    if k < partials:
        assert _prefix(content, k + 1, partials).startswith(partial)


@settings(max_examples=200, deadline=None)
@given(content=st.text(min_size=1), partials=st.integers(1, 50), data=st.data())
def test_a_segments_partials_cut_from_one_another_are_those_cut_afresh(content, partials, data):
    """A session finds each partial's cut from the one before (one 16 MiB content's
    50 partials had each listed every word's end: 40 s of a stalled server). In any
    order, each partial is the one cut from the whole content."""
    from emulator.scenario import can_have_partials
    from emulator.session import _Cuts, _prefix

    if not can_have_partials(content):
        return
    cuts = _Cuts(content)
    order = data.draw(st.lists(st.integers(1, partials), max_size=8)) + list(range(1, partials + 1))
    for k in order:
        assert _prefix(content, k, partials, cuts) == _prefix(content, k, partials)


def test_sessions_waiting_for_their_artifacts_are_kept_over_the_retention_not_in_it(tmp_path):
    """With --retention 2, three sessions waiting for their artifacts took the two
    places, and the trim dropped the newest session, paused to be resumed, in their
    stead: resumed, it started again from the beginning of its script. Those waiting
    are kept over N; the newest N stay."""
    done = [new_session_id() for _ in range(3)]
    paused = new_session_id()
    with running_emulator(_settings(tmp_path, retention=2, post_stream_delay=1.0)) as running:

        async def four(client):
            for session_id in done:
                assert (await run_session(client, session_id, audio=pcm_tone(0.2))).error is None
            result = await run_session(client, paused, audio=pcm_tone(0.5), end_of_session=False)
            assert result.error is None

        asyncio.run(_with_client(running, four))
        assert _kept(running) == [*done, paused]  # three wait for their artifacts
        assert _kept_once_settled(running, [done[2], paused]) == [done[2], paused]
        status, session = admin(running.h2c_url, "GET", f"/_emulator/sessions/{paused}")
        assert (session["status"], session["audioSeconds"]) == ("PAUSED", 0.5)


def test_a_resumed_session_stays_the_newest_across_a_restart(tmp_path):
    older, newer = new_session_id(), new_session_id()
    with running_emulator(_settings(tmp_path)) as running:

        async def body(client):
            for session_id in (older, newer, older):  # older resumed last
                result = await run_session(
                    client, session_id, audio=pcm_tone(0.2), end_of_session=False
                )
                assert result.error is None

        asyncio.run(_with_client(running, body))
        assert _kept(running) == [older, newer]  # listed by creation
    with running_emulator(_settings(tmp_path, retention=1)) as running:
        assert _kept(running) == [older]


def test_a_resume_window_set_low_lets_a_test_reach_it_in_seconds(tmp_path):
    """--resume-window (here the Settings a pytest fixture passes): a paused
    session resumes within it, and past it the SDK gets the service's
    ValidationException, naming the window and the option that set it."""
    session_id = new_session_id()

    async def body(client):
        created = time.monotonic()
        first = await run_session(client, session_id, audio=pcm_tone(0.2), end_of_session=False)
        within = await run_session(client, session_id, audio=pcm_tone(0.2), end_of_session=False)
        assert time.monotonic() - created < 2.0, "too slow to resume within the window"
        await asyncio.sleep(2.3 - (time.monotonic() - created))
        late = await run_session(client, session_id, audio=pcm_tone(0.2))
        return first, within, late, await details(client, session_id)

    with running_emulator(_settings(tmp_path, resume_window=2.0)) as running:
        first, within, late, after = asyncio.run(_with_client(running, body))
    assert first.error is None and within.error is None
    assert isinstance(late.error, m.ValidationException), repr(late.error)
    assert re.search(
        r"was created 2\.\d+ s ago \(\d+ ms past the window\): a paused session can be "
        r"resumed only within 2 s of its creation \(the emulator's --resume-window\)$",
        late.error.message,
    ), late.error.message
    assert after.stream_status == "PAUSED"  # refused, not failed: as on the service
