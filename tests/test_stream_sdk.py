"""StartMedicalScribeListeningSession driven end to end by the real AWS SDK over TLS + h2."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aws_sdk_connecthealth import models as m

from emulator import stream as stream_module
from emulator.hypercorn_h2 import DuplexH2Protocol

from .support import (
    DOMAIN_ID,
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
        {"channel": 0, "begin": 4.5, "end": 6.0, "content": "Any fever or chills?", "partials": 3},
        {
            "channel": 1,
            "begin": 9.0,
            "end": 11.0,
            "content": "Never reached by the audio.",
            "partials": 1,
        },
    ]
}


def add_rule(emulator, rule: dict) -> dict:
    status, body = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, body
    return body


def scripted(emulator, session_id: str, scenario: dict = SCRIPT) -> None:
    add_rule(emulator, {"match": {"sessionId": session_id}, "scenario": scenario})


async def test_scripted_transcript_arrives_with_partials_then_finals(client, emulator):
    """Each segment's partials are proper prefixes of its final and share its segmentId."""
    session_id = new_session_id()
    scripted(emulator, session_id)
    result = await run_session(client, session_id, audio=pcm_tone(7.0))
    assert result.error is None, result.error
    finals = result.finals
    assert [s.content for s in finals] == [seg["content"] for seg in SCRIPT["segments"][:3]]
    assert [(s.audio_begin_offset, s.audio_end_offset) for s in finals] == [
        (0.5, 2.0),
        (2.2, 4.0),
        (4.5, 6.0),
    ]
    for final, seg in zip(finals, SCRIPT["segments"], strict=False):
        partials = [p for p in result.partials if p.segment_id == final.segment_id]
        assert len(partials) == seg["partials"]
        for partial in partials:
            assert seg["content"].startswith(partial.content)
            assert partial.content != seg["content"]
        # partials come before their final in the stream
        order = [s for s in result.segments if s.segment_id == final.segment_id]
        assert order[-1] is final and all(p.is_partial for p in order[:-1])
    assert all(s.channel_id is None for s in result.segments)


async def partials_of_each_final(client, emulator, contents: list[str]) -> list[list[str]]:
    """Script one segment a second per content, three partials each, and stream it
    through the SDK: the finals are the contents, and each partial a proper prefix
    of its final (what a client checking final.startswith(partial) relies on).
    Returns each final's partial texts."""
    session_id = new_session_id()
    segments = [
        {"begin": 0.2 + i, "end": 1.0 + i, "content": content, "partials": 3}
        for i, content in enumerate(contents)
    ]
    scripted(emulator, session_id, {"segments": segments})
    result = await run_session(client, session_id, audio=pcm_tone(3.5))
    assert result.error is None, result.error
    assert [s.content for s in result.finals] == contents
    each = []
    for final in result.finals:
        partials = [p.content for p in result.partials if p.segment_id == final.segment_id]
        assert len(partials) == 3
        for partial in partials:
            assert final.content.startswith(partial) and partial != final.content
        each.append(partials)
    return each


async def test_partials_keep_the_scripts_own_spacing_so_they_prefix_their_final(client, emulator):
    """A client checking final.startswith(partial) holds: runs of spaces and tabs are
    kept ("Take   two" once had the partial "Take two"), and a lone word after a space
    is cut inside the word (" Okay" once had the partial " ")."""
    contents = ["Take   two\ttablets daily.", " Okay", "Line one\nline two\n"]
    each = await partials_of_each_final(client, emulator, contents)
    assert all(partial.strip() for partials in each for partial in partials)


async def test_scripted_partial_texts_reach_the_sdk_as_written_revisions_and_all(client, emulator):
    """A recognizer revises earlier words ("The pay" before "The patient"): partials
    scripted as a list are sent as written, at the times N partials would be, so a
    client assuming each partial extends the last can be tested."""
    session_id = new_session_id()
    texts = ["The pay", "The patient's", "The patient's knee hurts"]
    content = "The patient's knee hurts."
    scripted(
        emulator,
        session_id,
        {"segments": [{"begin": 0.2, "end": 1.8, "content": content, "partials": texts}]},
    )
    result = await run_session(client, session_id, audio=pcm_tone(2.0))
    assert result.error is None, result.error
    [final] = result.finals
    assert final.content == content
    partials = [p for p in result.partials if p.segment_id == final.segment_id]
    assert [p.content for p in partials] == texts
    assert [p.audio_end_offset for p in partials] == pytest.approx([0.6, 1.0, 1.4])


async def test_real_time_audio_from_the_sdk_is_taken_inline_to_the_same_transcript(
    client, emulator, monkeypatch
):
    """The SDK's audio events sent at a real-time pace reach a waiting stream
    inline (emulator.hypercorn_h2.InlineBody): some are taken without waking
    the pump and output goes out from there too, the partials and finals still
    come at their audio times, and the session's audio is all counted. How many
    go inline depends on whether the pump is back to waiting when the next
    event lands, which a loaded machine decides (the CI once took 11 of 24 at a
    10 ms pace); the raw-h2 tests in test_hypercorn_h2.py pin the handler exactly."""
    answers: list[bool | None] = []
    sent: list[bool] = []
    original = stream_module._InlineAudio.__call__
    send_now = DuplexH2Protocol._send_now

    def spy(self, body: bytes) -> bool | None:
        answers.append(original(self, body))
        return answers[-1]

    def send_spy(self, stream_id: int, data: bytes) -> bool:
        sent.append(send_now(self, stream_id, data))
        return sent[-1]

    monkeypatch.setattr(stream_module._InlineAudio, "__call__", spy)
    monkeypatch.setattr(DuplexH2Protocol, "_send_now", send_spy)
    session_id = new_session_id()
    scripted(emulator, session_id)
    result = await run_session(client, session_id, audio=pcm_tone(2.4), pace=0.02)
    assert result.error is None, result.error
    assert False in answers  # an audio event taken without waking the pump
    assert True in sent  # an output sent from there
    final = result.finals[0]  # the second, under way, is closed by END_OF_SESSION
    assert (final.content, final.audio_begin_offset, final.audio_end_offset) == (
        SCRIPT["segments"][0]["content"],
        0.5,
        2.0,
    )
    partials = [p for p in result.partials if p.segment_id == final.segment_id]
    assert len(partials) == 2
    assert all(SCRIPT["segments"][0]["content"].startswith(p.content) for p in partials)
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["audioSeconds"] == pytest.approx(2.4)


async def test_response_headers_echo_the_request_and_carry_a_request_id(client, emulator):
    session_id = new_session_id()
    result = await run_session(client, session_id, audio=pcm_tone(0.5), sample_rate=16000)
    assert result.error is None
    out = result.output
    assert (out.session_id, out.domain_id, out.subscription_id) == (
        session_id,
        DOMAIN_ID,
        SUBSCRIPTION_ID,
    )
    assert (out.language_code, out.media_sample_rate_hertz, out.media_encoding) == (
        "en-US",
        16000,
        "pcm",
    )
    assert out.request_id and len(out.request_id) <= 256


async def test_two_channel_sessions_label_segments_ch_0_and_ch_1(client, emulator):
    session_id = new_session_id()
    scripted(emulator, session_id)
    # Two channels of 16-bit audio: 4 bytes per sample frame.
    result = await run_session(
        client, session_id, audio=pcm_tone(7.0, channels=2), chunk_bytes=6400, two_channels=True
    )
    assert result.error is None
    assert [s.channel_id for s in result.finals] == ["ch_0", "ch_1", "ch_0"]


async def test_end_of_session_finalises_open_segments_clamped_to_the_audio(client, emulator):
    """A segment under way at END_OF_SESSION gets its full text, ending where the audio ends."""
    session_id = new_session_id()
    scripted(emulator, session_id)
    result = await run_session(client, session_id, audio=pcm_tone(3.0))
    assert result.error is None
    finals = result.finals
    assert [s.content for s in finals] == [seg["content"] for seg in SCRIPT["segments"][:2]]
    assert finals[-1].audio_begin_offset == 2.2
    assert finals[-1].audio_end_offset == pytest.approx(3.0)
    assert max(s.audio_end_offset for s in result.segments) <= 3.0 + 1e-9


async def test_a_resumed_sessions_time_adds_up_exactly(client, emulator):
    """0.3 s of audio, then 1.9 s in a resumed stream, made 2.1999999999999997 s:
    a final due at 2.2 s was not released at the audio's end, and went out only
    in the next stream."""
    session_id = new_session_id()
    segment = {"channel": 0, "begin": 1.0, "end": 2.2, "content": "Due at two point two."}
    scripted(emulator, session_id, {"segments": [{**segment, "partials": 1}]})
    tone = pcm_tone(2.2)
    first = await run_session(client, session_id, audio=tone[:9600], end_of_session=False)
    assert first.error is None and first.finals == []
    # 32,000 bytes then 28,800: this stream's clock reads 1.0 s, then 1.9 s.
    second = await run_session(
        client, session_id, audio=tone[9600:], chunk_bytes=32_000, end_of_session=False
    )
    assert second.error is None, repr(second.error)
    assert [(f.content, f.audio_begin_offset, f.audio_end_offset) for f in second.finals] == [
        ("Due at two point two.", 1.0, 2.2)
    ]
    third = await run_session(client, session_id)
    assert third.error is None and third.segments == []


async def test_binary_audio_events_drive_the_clock_like_json_audio_events(client, emulator):
    session_id = new_session_id()
    scripted(emulator, session_id)
    result = await run_session(client, session_id, audio=pcm_tone(7.0), binary=True)
    assert result.error is None
    assert len(result.finals) == 3
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 200
    assert details["eventsReceived"]["binaryAudioEvent"] == -(-len(pcm_tone(7.0)) // 3200)
    assert "audioEvent" not in details["eventsReceived"]
    assert details["audioSeconds"] == pytest.approx(7.0)
    assert details["status"] == "COMPLETED"


async def test_transcripts_flow_while_audio_is_still_being_sent(client, emulator):
    """Full duplex: the first final arrives before the client has finished its input."""
    session_id = new_session_id()
    scripted(emulator, session_id)
    stream = await client.start_medical_scribe_listening_session(input=stream_input(session_id))
    await stream.input_stream.send(configuration_event())
    audio = pcm_tone(2.5)
    for i in range(0, len(audio), 3200):
        await stream.input_stream.send(audio_event(audio[i : i + 3200]))
    _, output = await asyncio.wait_for(stream.await_output(), 10)
    received = []

    async def first_final():
        async for event in output:
            segment = event.value.transcript_segment
            received.append(segment)
            if not segment.is_partial:
                return segment

    final = await asyncio.wait_for(first_final(), 10)
    assert final.content == SCRIPT["segments"][0]["content"]
    # Only now does the client end its input.
    await stream.input_stream.send(end_of_session_event())
    await stream.input_stream.close()
    async for event in output:
        received.append(event.value.transcript_segment)
    await stream.close()
    assert [s.content for s in received if not s.is_partial][-1] == SCRIPT["segments"][1]["content"]


async def test_synthetic_visit_is_the_default_and_repeats_for_the_same_session_id(client, emulator):
    """Same (seed, sessionId), same visit. A COMPLETED session cannot stream again, so
    the emulator forgets it (reset) before the second run."""
    session_id = new_session_id()
    first = await run_session(client, session_id, audio=pcm_tone(20.0), chunk_bytes=32000)
    assert admin(emulator.h2c_url, "POST", "/_emulator/reset")[0] == 200
    second = await run_session(client, session_id, audio=pcm_tone(20.0), chunk_bytes=32000)
    assert first.error is None and second.error is None
    assert len(first.finals) >= 3
    assert [s.content for s in first.finals] == [s.content for s in second.finals]
    assert all(s.audio_end_offset <= 20.0 + 1e-9 for s in first.segments)
    other = await run_session(client, new_session_id(), audio=pcm_tone(20.0), chunk_bytes=32000)
    assert [s.content for s in other.finals] != [s.content for s in first.finals]


async def test_synthetic_two_channel_visit_alternates_channels(client, emulator):
    result = await run_session(
        client,
        new_session_id(),
        audio=pcm_tone(30.0, channels=2),
        chunk_bytes=32000,
        two_channels=True,
    )
    assert result.error is None
    assert {s.channel_id for s in result.finals} == {"ch_0", "ch_1"}


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("session_id", "not-a-session", "x-amzn-medscribe-session-id"),
        ("domain_id", "bad", "x-amzn-medscribe-domain-id"),
        ("subscription_id", "sub-short", "x-amzn-medscribe-subscription-id"),
        ("language_code", "fr-FR", "x-amzn-medscribe-language-code"),
        ("sample_rate", 4000, "x-amzn-medscribe-sample-rate"),
        ("encoding", "ogg-opus", "x-amzn-medscribe-media-encoding"),
    ],
)
async def test_invalid_headers_raise_the_modeled_validation_exception(
    client, emulator, field, value, fragment
):
    kwargs = {field: value}
    session_id = value if field == "session_id" else new_session_id()
    if field == "session_id":
        kwargs = {}
    result = await run_session(client, session_id, audio=pcm_tone(0.2), **kwargs)
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert fragment in str(result.error.message)


async def test_a_non_ascii_header_value_is_quoted_as_the_sdk_sent_it(client, emulator):
    """The SDK sends header values as UTF-8: the error, and the rejected list it is
    found in by the id the client sent, quote the text, not its bytes as Latin-1
    ("Ã«n-US"), and a non-breaking hyphen is not two invisible C1 controls."""
    import urllib.parse

    from .support import admin

    session_id = new_session_id() + "ä"
    for language in ("ën-US", "en\u2011US"):
        result = await run_session(client, session_id, audio=pcm_tone(0.2), language_code=language)
        assert isinstance(result.error, m.ValidationException), repr(result.error)
        assert f"Value '{language}' at 'x-amzn-medscribe-language-code'" in result.error.message
        assert f"Value '{session_id}' at 'x-amzn-medscribe-session-id'" in result.error.message
    query = urllib.parse.urlencode({"sessionId": session_id})
    status, listed = admin(emulator.h2c_url, "GET", f"/_emulator/sessions?{query}")
    assert status == 200, listed
    assert [entry["sessionId"] for entry in listed["rejected"]] == [session_id, session_id]


@pytest.mark.parametrize(
    ("error_type", "sdk_class"),
    [
        ("ValidationException", m.ValidationException),
        ("AccessDeniedException", m.AccessDeniedException),
        ("ServiceQuotaExceededException", m.ServiceQuotaExceededException),
        ("ResourceNotFoundException", m.ResourceNotFoundException),
        ("ThrottlingException", m.ThrottlingException),
        ("InternalServerException", m.InternalServerException),
    ],
)
async def test_injected_errors_reach_the_sdk_as_their_modeled_class(
    client, emulator, error_type, sdk_class
):
    session_id = new_session_id()
    add_rule(
        emulator,
        {
            "match": {"sessionId": session_id},
            "error": {"type": error_type, "message": f"injected {error_type}"},
        },
    )
    result = await run_session(client, session_id, audio=pcm_tone(0.5))
    assert isinstance(result.error, sdk_class), repr(result.error)
    assert result.error.message == f"injected {error_type}"
    assert result.events == []


async def test_rule_with_times_stops_matching_after_its_uses(client, emulator):
    session_id = new_session_id()
    add_rule(
        emulator,
        {
            "match": {"sessionId": session_id},
            "error": {"type": "ThrottlingException", "message": "slow down"},
            "times": 1,
        },
    )
    first = await run_session(client, session_id, audio=pcm_tone(0.2))
    second = await run_session(client, session_id, audio=pcm_tone(0.2))
    assert isinstance(first.error, m.ThrottlingException)
    assert second.error is None


async def test_scripted_internal_failure_fires_at_its_audio_time(client, emulator):
    session_id = new_session_id()
    scripted(
        emulator,
        session_id,
        {
            "segments": SCRIPT["segments"][:2],
            "faults": [
                {"at": 3.0, "exception": "internalFailureException", "message": "scripted outage"}
            ],
        },
    )
    result = await run_session(client, session_id, audio=pcm_tone(6.0))
    assert isinstance(result.error, m.InternalServerException), repr(result.error)
    assert result.error.message == "scripted outage"
    assert [s.content for s in result.finals] == [SCRIPT["segments"][0]["content"]]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "FAILED"
    assert details["errors"] == [{"type": "internalFailureException", "message": "scripted outage"}]


async def test_an_event_that_cannot_be_encoded_is_not_counted_as_sent(
    client, emulator, monkeypatch
):
    """An output event whose encoding fails (a bug of ours) ends the stream with an
    internal failure, and the session's counts hold only what the client got."""
    real = stream_module.transcript_message

    def failing_for_the_cough(payload: str) -> bytes:
        if "cough" in payload:
            raise RuntimeError("cannot encode this event")
        return real(payload)

    monkeypatch.setattr(stream_module, "transcript_message", failing_for_the_cough)
    session_id = new_session_id()
    scripted(emulator, session_id, {"segments": SCRIPT["segments"][:2]})
    result = await run_session(client, session_id, audio=pcm_tone(5.0))
    assert isinstance(result.error, m.InternalServerException), repr(result.error)
    assert result.segments and all("cough" not in s.content for s in result.segments)
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 200
    assert details["eventsSent"] == {
        "transcriptEvent": len(result.segments),
        "internalFailureException": 1,
    }


async def test_scripted_validation_exception_reaches_the_sdk(client, emulator):
    session_id = new_session_id()
    scripted(
        emulator,
        session_id,
        {
            "faults": [
                {"at": 1.0, "exception": "validationException", "message": "scripted rejection"}
            ]
        },
    )
    result = await run_session(client, session_id, audio=pcm_tone(2.0))
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert result.error.message == "scripted rejection"


async def test_scripted_disconnect_resets_the_stream_after_earlier_results(client, emulator):
    """A disconnect fault resets the HTTP/2 stream: the SDK's output ends early with no
    modeled exception and no further results, and its input side can no longer send."""
    session_id = new_session_id()
    scripted(
        emulator,
        session_id,
        {"segments": SCRIPT["segments"][:2], "faults": [{"at": 3.0, "disconnect": True}]},
    )
    # Paced (60 events over 3 s): the sender is still sending when the reset at 3 s
    # of audio lands, however loaded the machine (all at once, it could be done first).
    result = await run_session(client, session_id, audio=pcm_tone(6.0), timeout=20, pace=0.05)
    assert result.error is None
    assert [s.content for s in result.finals] == [SCRIPT["segments"][0]["content"]]
    assert result.input_failed
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED"
    assert details["audioSeconds"] == pytest.approx(3.0, abs=0.1)


async def test_invalid_configuration_is_an_in_stream_validation_exception(client, emulator):
    bad = m.MedicalScribeInputStreamConfigurationEvent(
        value=m.MedicalScribeConfigurationEvent(
            post_stream_action_settings=m.MedicalScribePostStreamActionSettings(
                output_s3_uri="https://not-s3/bucket",
                clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
                    note_template_settings=m.NoteTemplateSettingsManagedTemplate(
                        value=m.ManagedTemplate(template_type="SOAP")
                    )
                ),
            ),
            channel_definitions=[
                m.MedicalScribeChannelDefinition(channel_id=0, participant_role="CLINICIAN"),
                m.MedicalScribeChannelDefinition(channel_id=0, participant_role="CLINICIAN"),
            ],
        )
    )
    result = await run_session(client, new_session_id(), events=[bad, audio_event(b"\0" * 3200)])
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    message = result.error.message
    assert "outputS3Uri" in message and "templateType" in message and "channel" in message


async def test_audio_before_configuration_is_refused_in_stream(client, emulator):
    result = await run_session(client, new_session_id(), events=[audio_event(b"\0" * 3200)])
    assert isinstance(result.error, m.ValidationException)
    assert "before configurationEvent" in result.error.message


async def test_a_session_control_event_without_a_type_says_it_is_missing(client, emulator):
    """It read "Value null ... must satisfy enum value set", as if a wrong type was sent.
    The model leaves ``type`` optional: the message says the rule is the emulator's."""
    untyped = m.MedicalScribeInputStreamSessionControlEvent(
        value=m.MedicalScribeSessionControlEvent(type=None)
    )
    events = [configuration_event(), audio_event(b"\0" * 3200), untyped]
    result = await run_session(client, new_session_id(), events=events)
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert result.error.message == (
        "1 validation error detected: Value null at 'sessionControlEvent.type' failed to "
        "satisfy constraint: Member must not be null: a session control event's type must "
        "be one of [END_OF_SESSION] (an emulator rule: the service model does not state it)"
    )


async def test_a_no_break_space_in_the_encounter_context_is_named_in_the_refusal(client, emulator):
    """The model's pattern reads ``\\s`` as Java does, ASCII whitespace: text pasted
    from an EHR with a no-break space is refused. The value is sensitive, shown as
    '***', so the message alone left the user no way to find the character."""
    import dataclasses

    event = configuration_event()
    configuration = dataclasses.replace(
        event.value,
        encounter_context=m.EncounterContext(unstructured_context="Knee pain\u00a0since May."),
    )
    events = [m.MedicalScribeInputStreamConfigurationEvent(value=configuration)]
    result = await run_session(client, new_session_id(), events=events)
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert "Value '***' at 'configurationEvent.encounterContext.unstructuredContext'" in (
        result.error.message
    )
    assert result.error.message.endswith("(character 10, U+00A0 NO-BREAK SPACE, is not in it)")
    assert "Knee" not in result.error.message


async def test_audio_event_over_32000_bytes_is_refused_in_stream(client, emulator):
    events = [configuration_event(), audio_event(b"\0" * 32_002)]
    result = await run_session(client, new_session_id(), events=events)
    assert isinstance(result.error, m.ValidationException)
    assert "32002 bytes" in result.error.message and "32000" in result.error.message


async def test_many_sessions_share_one_connection_and_failures_stay_isolated(client, emulator):
    """One SDK client multiplexes every session on one HTTP/2 connection: an early error,
    an in-stream fault and a disconnect on some must not disturb the others."""
    good = [new_session_id() for _ in range(12)]
    for session_id in good:
        scripted(emulator, session_id)
    rejected, faulted, dropped = new_session_id(), new_session_id(), new_session_id()
    add_rule(
        emulator,
        {
            "match": {"sessionId": rejected},
            "error": {"type": "ThrottlingException", "message": "no"},
        },
    )
    scripted(
        emulator,
        faulted,
        {"faults": [{"at": 0.5, "exception": "internalFailureException", "message": "boom"}]},
    )
    scripted(emulator, dropped, {"faults": [{"at": 0.5, "disconnect": True}]})
    audio = pcm_tone(7.0)
    results = await asyncio.gather(
        *(run_session(client, sid, audio=audio) for sid in [rejected, faulted, dropped, *good])
    )
    assert isinstance(results[0].error, m.ThrottlingException)
    assert isinstance(results[1].error, m.InternalServerException)
    assert results[2].error is None and results[2].input_failed and results[2].events == []
    for result in results[3:]:
        assert result.error is None, repr(result.error)
        assert [s.content for s in result.finals] == [
            seg["content"] for seg in SCRIPT["segments"][:3]
        ]


async def test_the_sdks_header_blocks_take_the_servers_quick_paths(emulator, client, monkeypatch):
    """What emulator.hypercorn_h2's header fast paths are for, checked on the real
    client: its request is a plain one (h2's pipelines are skipped), the response
    too, and its Huffman-coded strings, the ``authorization`` value among them,
    go through the C decoder where the extension is in use. The session still
    completes as it would through h2 and hpack alone."""
    import hpack.hpack

    from emulator import header_checks, hypercorn_h2, speedups

    if speedups.huffman_decode is not None:
        assert hpack.hpack.decode_huffman is hypercorn_h2.fast_decode_huffman
    requests: list[bool] = []
    responses: list[bool] = []
    decoded: list[bytes] = []

    def recorded(real: Any, into: list[Any]) -> Any:
        def wrapper(argument: Any) -> Any:
            into.append(outcome := real(argument))
            return outcome

        return wrapper

    monkeypatch.setattr(
        header_checks, "plain_request", recorded(header_checks.plain_request, requests)
    )
    monkeypatch.setattr(
        header_checks, "plain_response", recorded(header_checks.plain_response, responses)
    )
    huffman = recorded(hpack.hpack.decode_huffman, decoded)
    monkeypatch.setattr(hpack.hpack, "decode_huffman", huffman)

    result = await run_session(client, new_session_id(), audio=pcm_tone(0.5))

    assert result.error is None, result.error
    assert requests == [True]
    assert responses and all(responses)
    assert any(value.startswith(b"AWS4-HMAC-SHA256 Credential=") for value in decoded)


async def test_a_rule_can_name_the_generated_visit_over_a_scripted_default(tmp_path):
    """With a scripted default scenario, `scenario: synthetic` in a rule gives the
    matched session the generated visit; the others keep the default."""
    from emulator.sdk import make_client
    from emulator.server import Settings

    from .support import running_emulator

    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path,
        scenario="primary-care-visit",
    )
    generated, scripted = new_session_id(), new_session_id()
    with running_emulator(settings) as running:
        rule = {"match": {"sessionId": generated}, "scenario": "synthetic"}
        status, body = admin(running.h2c_url, "POST", "/_emulator/rules", rule)
        assert status == 201 and body["scenario"] == "synthetic", body
        async with await make_client(
            endpoint_url=running.endpoint_url, ca_file=running.ca_file
        ) as client:
            results = {
                session_id: await run_session(client, session_id, audio=pcm_tone(4.0))
                for session_id in (generated, scripted)
            }
        for session_id, scenario in ((generated, "synthetic"), (scripted, "primary-care-visit")):
            assert results[session_id].error is None
            status, details = admin(running.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
            assert details["scenario"] == scenario
    assert results[generated].finals and results[scripted].finals
    first = [s.content for s in results[generated].finals][0]
    assert first != [s.content for s in results[scripted].finals][0]
    assert first.startswith("Hi ") and "I'm Dr. " in first  # the generated greeting


def _flac(channels: int, seconds: float = 1.0) -> bytes:
    import io

    numpy = pytest.importorskip("numpy")
    soundfile = pytest.importorskip("soundfile")
    buffer = io.BytesIO()
    samples = numpy.zeros((int(16_000 * seconds), channels), dtype="int16")
    soundfile.write(buffer, samples, 16_000, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("channels", "two_channels", "expected"),
    [
        (1, True, "has 1 channel(s), but the configuration's channelDefinitions describe 2"),
        (2, False, "has 2 channel(s), but without channelDefinitions"),
        (3, True, "has 3 channel(s)"),
    ],
    ids=["mono-for-two-definitions", "stereo-without-definitions", "three-channels"],
)
async def test_flac_whose_channels_contradict_the_configuration_is_refused_in_stream(
    client, emulator, channels, two_channels, expected
):
    session_id = new_session_id()
    result = await run_session(
        client,
        session_id,
        audio=_flac(channels),
        chunk_bytes=4000,
        two_channels=two_channels,
        encoding="flac",
    )
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert expected in result.error.message
    assert "FLAC STREAMINFO" in result.error.message
    assert not result.segments  # no transcript for channels the audio lacks
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "FAILED"


@pytest.mark.parametrize("two_channels", [False, True], ids=["mono", "stereo"])
async def test_flac_with_the_configurations_channel_count_completes(client, emulator, two_channels):
    session_id = new_session_id()
    result = await run_session(
        client,
        session_id,
        audio=_flac(2 if two_channels else 1, seconds=2.0),
        chunk_bytes=4000,
        two_channels=two_channels,
        encoding="flac",
    )
    assert result.error is None, repr(result.error)
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "COMPLETED"
    assert details["audioSeconds"] == pytest.approx(2.0)


@pytest.mark.parametrize("where", ["at-a-frame", "mid-frame"])
async def test_a_resumed_flac_stream_continuing_the_earlier_bytes_is_told_why(
    client, emulator, where
):
    """It read "the audio is not a FLAC stream", as if another encoding was sent,
    wherever the resumed stream took the file up (a client resuming by byte
    offset starts inside a frame)."""
    data = _flac(1, seconds=2.0)
    first_frame = data.index(b"\xff\xf8", data.index(b"fLaC") + 4 + 38)
    cut = data.index(b"\xff\xf8", first_frame + 2) + (0 if where == "at-a-frame" else 5)
    session_id = new_session_id()
    first = await run_session(
        client, session_id, audio=data[:cut], encoding="flac", end_of_session=False
    )
    assert first.error is None, repr(first.error)
    second = await run_session(client, session_id, audio=data[cut:], encoding="flac")
    assert isinstance(second.error, m.ValidationException), repr(second.error)
    message = second.error.message
    assert "this stream, which resumes the session, does not start with the 'fLaC'" in message
    assert f"(got {data[cut : cut + 4]!r})" in message
    assert "a resumed stream starts a new one and cannot continue an earlier" in message


async def test_a_client_sending_on_after_an_exception_alone_on_its_connection_finishes(
    tmp_path, monkeypatch
):
    """After an in-stream exception the client's sends are drained. With no other
    stream on the connection, hypercorn called it idle once the response was done, and
    its keep-alive timer closed the connection under the still-sending client: the
    SDK's send and close then never returned. The connection now stays up until the
    client ends its request. (The keep-alive timeout is cut from 5 s to 0.3 s here,
    for this test's own emulator, so that the old failure shows within a second.)"""
    from emulator import server as server_module
    from emulator.sdk import make_client
    from emulator.server import Settings

    from .support import running_emulator

    # The keep-alive timeout is the larger of --idle-timeout and this (patching
    # hypercorn's Config, as this test once did, changed nothing).
    monkeypatch.setattr(server_module, "KEEP_ALIVE_TIMEOUT", 0.3)
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=0.3)
    with running_emulator(settings) as run:
        session_id = new_session_id()
        script = {
            "segments": [{"begin": 0.0, "end": 0.1, "content": "Hello.", "partials": 0}],
            "faults": [{"at": 0.2, "exception": "validationException", "message": "scripted"}],
        }
        add_rule(run, {"match": {"sessionId": session_id}, "scenario": script})
        sdk_client = await make_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file)
        try:
            # 1.5 s of audio at a real-time pace: sent for 1.3 s after the exception.
            result = await run_session(
                sdk_client, session_id, audio=pcm_tone(1.5), chunk_bytes=3200, pace=0.1
            )
        finally:
            await sdk_client._config.transport.close()  # type: ignore[attr-defined]
    assert isinstance(result.error, m.ValidationException) and "scripted" in str(result.error)
    assert not result.input_failed  # the sender's sends and close returned


async def test_a_session_started_as_an_idle_connection_retires_takes_a_new_one(
    tmp_path, monkeypatch
):
    """The keep-alive timer retires an idle connection with a GOAWAY, and closed it
    half a second later: the CRT client opens streams on a connection until it is
    closed, so every session started in that half second failed with
    AWS_ERROR_HTTP_GOAWAY_RECEIVED, and every retry too. It now closes as soon as
    the client acknowledges a PING sent with the GOAWAY. (The keep-alive timeout
    is cut from 5 s to 0.3 s, for this test's own emulator.)"""
    from emulator import server as server_module
    from emulator.sdk import make_client
    from emulator.server import Settings

    from .support import running_emulator

    monkeypatch.setattr(server_module, "KEEP_ALIVE_TIMEOUT", 0.3)
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=0.3)
    with running_emulator(settings) as run:
        sdk_client = await make_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file)
        try:
            first = await run_session(sdk_client, new_session_id(), audio=pcm_tone(0.2))
            assert first.error is None, first.error
            await asyncio.sleep(0.3 + 0.15)  # retired 0.15 s ago: inside the old half second
            second = await run_session(sdk_client, new_session_id(), audio=pcm_tone(0.2))
            assert second.error is None, second.error
        finally:
            await sdk_client._config.transport.close()  # type: ignore[attr-defined]


async def test_partials_reach_the_sdk_cut_between_characters_as_a_reader_sees_them(
    client, emulator
):
    """Cut by code point, a partial showed a flag's first half, a thumb without its
    skin tone; and a one-character content (to a reader) got a partial."""
    flags = "\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea"  # US, FR, DE
    thumb = "\U0001f44d\U0001f3fd"
    session_id = new_session_id()
    segments = [
        {"begin": 0.1, "end": 0.5, "content": flags, "partials": 3},
        {"begin": 0.6, "end": 0.9, "content": thumb},  # one character: no partial
    ]
    scripted(emulator, session_id, {"segments": segments})
    result = await run_session(client, session_id, audio=pcm_tone(1.0))
    assert result.error is None, result.error
    contents = [(s.is_partial, s.content) for s in result.segments]
    # By code point the partials were flags[:1], [:3] and [:4].
    assert contents == [
        (True, flags[:2]),
        (True, flags[:2]),
        (True, flags[:4]),
        (False, flags),
        (False, thumb),
    ]


async def test_a_stream_ending_at_a_segments_begin_gets_none_of_it(client, emulator):
    """A partial rounded down to its segment's begin covered no audio: a stream ending
    exactly there got a partial and a final of no length. Now neither comes; a stream
    one millisecond on hears the segment (shorter than a millisecond: its partial at
    its end)."""
    segment = {"begin": 1.0, "end": 1.0004, "content": "tiny segment", "partials": 1}
    silent = new_session_id()
    scripted(emulator, silent, {"segments": [segment]})
    result = await run_session(client, silent, audio=pcm_tone(1.0))
    assert result.error is None, result.error
    assert result.segments == []
    heard = new_session_id()
    scripted(emulator, heard, {"segments": [segment]})
    result = await run_session(client, heard, audio=pcm_tone(1.1)[:32032])  # 1.001 s
    assert [(s.is_partial, s.audio_end_offset) for s in result.segments] == [
        (True, 1.0004),
        (False, 1.0004),
    ]


def test_a_disconnect_fault_with_a_message_is_refused_by_the_admin_api(emulator):
    rule = {"scenario": {"faults": [{"at": 3, "disconnect": True, "message": "you see me?"}]}}
    status, body = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 400
    assert "scenario.faults[0].message: a disconnect has no message" in body["message"]


async def test_a_segment_the_audio_passes_by_under_a_millisecond_is_not_sent(client, emulator):
    """Heard means the audio passes the begin by a millisecond, wherever the grid's
    milliseconds fall: 0.79 ms past an off-grid begin (1.0004) crosses 1.001, and the
    segment was sent, ending before a millisecond of it was heard."""
    segment = {"begin": 1.0004, "end": 2.0, "content": "barely begun", "partials": 0}
    unheard = new_session_id()
    scripted(emulator, unheard, {"segments": [segment]})
    result = await run_session(client, unheard, audio=pcm_tone(1.1)[:32038])  # 1.0011875 s
    assert result.error is None, result.error
    assert result.segments == []
    heard = new_session_id()
    scripted(emulator, heard, {"segments": [segment]})
    result = await run_session(client, heard, audio=pcm_tone(1.1)[:32048])  # 1.0015 s
    assert [(s.is_partial, s.audio_end_offset) for s in result.segments] == [(False, 1.001)]


async def test_flac_cut_inside_its_last_frame_ends_at_the_last_whole_frame(client, emulator):
    """The cut frame's 4,096 samples counted from its header: a segment past the
    audio got its final, and the session more audio than it was sent."""
    from .test_audio import BLOCK, encode_flac, frame_spans

    data = encode_flac(16_000, 1, BLOCK * 3)
    last, _ = frame_spans(data)[-1]
    session_id = new_session_id()
    end = 3 * BLOCK / 16_000  # 0.768 s
    segments = [
        {"begin": 0.1, "end": 0.4, "content": "heard in full", "partials": 0},
        {"begin": 0.45, "end": end, "content": "into the cut frame", "partials": 0},
    ]
    scripted(emulator, session_id, {"segments": segments})
    result = await run_session(
        client, session_id, audio=data[: last + 20], chunk_bytes=4000, encoding="flac"
    )
    assert result.error is None, repr(result.error)
    assert [(s.content, s.audio_end_offset) for s in result.finals] == [
        ("heard in full", 0.4),
        ("into the cut frame", 0.512),  # clamped to the two whole frames
    ]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert (details["status"], details["audioSeconds"]) == ("COMPLETED", 2 * BLOCK / 16_000)


async def test_flac_with_a_frame_missing_is_refused_in_stream(client, emulator):
    from .test_audio import BLOCK, encode_flac, frame_spans

    data = encode_flac(16_000, 1, BLOCK * 5)
    spans = frame_spans(data)
    session_id = new_session_id()
    # Due within frame 1, which the refused header shows whole: its final comes
    # before the exception, as results due up to the audio limit do.
    segment = {"begin": 0.1, "end": 0.45, "content": "before the gap", "partials": 0}
    scripted(emulator, session_id, {"segments": [segment]})
    result = await run_session(
        client,
        session_id,
        audio=data[: spans[2][0]] + data[spans[3][0] :],
        chunk_bytes=4000,
        encoding="flac",
    )
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert "is numbered 3, where frame 2 was due" in result.error.message
    assert [(s.content, s.audio_end_offset) for s in result.finals] == [("before the gap", 0.45)]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert (details["status"], details["audioSeconds"]) == ("FAILED", 2 * BLOCK / 16_000)
