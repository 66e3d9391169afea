"""The session's state machine, sans-IO: every (state, input event) pair, and the
session's own events (input closed, timeout, failure, scripted disconnect).

No server: a :class:`ScribeSession` is driven directly, as h11's ``test_state.py``
drives its connection state. The expected states and refusal texts are written
out here, not read from :data:`TRANSITIONS`, so a change of the table shows.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from emulator.errors import ValidationException
from emulator.events import StreamException, StreamReset, TranscriptResult
from emulator.eventstream import Message
from emulator.scenario import Fault, Scenario, Segment
from emulator.session import (
    AUDIO_EVENTS,
    INPUT_EVENT_TYPES,
    INTERNAL_EVENTS,
    TRANSITIONS,
    ScribeSession,
    SessionState,
)
from emulator.validation import StreamRequest

from .support import S3_URI, SANS_IO_REQUEST, pcm_tone
from .test_audio import encode_flac

AWAITING = SessionState.AWAITING_CONFIGURATION
STREAMING = SessionState.STREAMING
COMPLETED = SessionState.COMPLETED
FAILED = SessionState.FAILED
PAUSED = SessionState.PAUSED

REQUEST = SANS_IO_REQUEST
CONFIGURATION = json.dumps(
    {
        "postStreamActionSettings": {
            "outputS3Uri": S3_URI,
            "clinicalNoteGenerationSettings": {
                "noteTemplateSettings": {"managedTemplate": {"templateType": "DAP"}}
            },
        }
    }
).encode()
#: A valid payload of each input event type.
PAYLOADS = {
    "configurationEvent": CONFIGURATION,
    "audioEvent": b'{"audioChunk":"AAAA"}',
    "binaryAudioEvent": b"\0\0" * 160,
    "sessionControlEvent": b'{"type":"END_OF_SESSION"}',
}
SCENARIO = Scenario(name="s", segments=(Segment(begin=0.0, end=1.0, content="hello there"),))

#: The accepted pairs and the state each leads to; every other pair is refused.
ACCEPTED = {
    (AWAITING, "configurationEvent"): STREAMING,
    (STREAMING, "audioEvent"): STREAMING,
    (STREAMING, "binaryAudioEvent"): STREAMING,
    (STREAMING, "sessionControlEvent"): COMPLETED,
}
#: The refusal of an event in each state, the event's type in place of {event}.
REFUSALS = {
    AWAITING: (
        "{event} received before configurationEvent: the first event of a stream "
        "must be a configurationEvent"
    ),
    STREAMING: "{event} received after the configurationEvent: only one is allowed per stream",
    COMPLETED: "{event} received after END_OF_SESSION: the session has ended",
    FAILED: "{event} received after the stream failed",
    PAUSED: "{event} received after the input stream was closed",
}

PAIRS = list(itertools.product(SessionState, sorted(INPUT_EVENT_TYPES)))
PAIR_IDS = [f"{state.name}-{event}" for state, event in PAIRS]


def event(event_type: str, payload: bytes | None = None) -> Message:
    headers = {":message-type": "event", ":event-type": event_type}
    return Message(headers=headers, payload=PAYLOADS[event_type] if payload is None else payload)


def session_in(
    state: SessionState, scenario: Scenario = SCENARIO, request: StreamRequest = REQUEST
) -> tuple[ScribeSession, list]:
    """A session brought to ``state`` the way a stream brings it there, and what it sent."""
    sent: list = []
    session = ScribeSession(request=request, scenario_for=lambda c: scenario, send=sent.append)
    if state is not AWAITING:
        session.receive_event(event("configurationEvent"))
    if state is COMPLETED:
        session.receive_event(event("sessionControlEvent"))
    elif state is FAILED:
        session.fail("validationException", "bad input")
    elif state is PAUSED:
        session.input_closed()
    assert session.state is state
    return session, sent


@pytest.mark.parametrize(("state", "event_type"), PAIRS, ids=PAIR_IDS)
def test_each_input_event_moves_to_its_state_or_is_refused_with_the_rule(state, event_type):
    """An accepted pair moves to its state; any other is refused, naming the rule,
    and leaves the state as it was."""
    session, _ = session_in(state)
    if (state, event_type) in ACCEPTED:
        session.receive_event(event(event_type))
        assert session.state is ACCEPTED[(state, event_type)]
    else:
        with pytest.raises(ValidationException) as caught:
            session.receive_event(event(event_type))
        assert caught.value.message == REFUSALS[state].format(event=event_type)
        assert session.state is state


AUDIO_PAIRS = list(itertools.product(SessionState, sorted(AUDIO_EVENTS)))


@pytest.mark.parametrize(
    ("state", "event_type"), AUDIO_PAIRS, ids=[f"{s.name}-{e}" for s, e in AUDIO_PAIRS]
)
def test_the_one_call_audio_path_accepts_and_refuses_as_the_table_does(state, event_type):
    """receive_audio_event inlines the audio entries of the table: the same answer."""
    session, _ = session_in(state)
    if (state, event_type) in ACCEPTED:
        session.receive_audio_event(event_type, PAYLOADS[event_type])
        assert session.state is ACCEPTED[(state, event_type)]
        assert session.stats.events_received[event_type] == 1
    else:
        with pytest.raises(ValidationException) as caught:
            session.receive_audio_event(event_type, PAYLOADS[event_type])
        assert caught.value.message == REFUSALS[state].format(event=event_type)
        assert session.state is state


def test_the_table_holds_exactly_the_accepted_input_pairs():
    """The fast audio path inlines (STREAMING, audio) -> STREAMING: it must stay the
    only audio entry, and every entry names a known event."""
    inputs = {pair: state for pair, state in TRANSITIONS.items() if pair[1] in INPUT_EVENT_TYPES}
    assert inputs == ACCEPTED
    assert {event_type for _, event_type in TRANSITIONS} <= INPUT_EVENT_TYPES | INTERNAL_EVENTS


# -- the session's own events -------------------------------------------------

#: (state, internal event) -> the state after it; a finished state the event
#: leaves alone maps to itself.
INTERNAL = {
    (AWAITING, "inputClosed"): PAUSED,
    (STREAMING, "inputClosed"): PAUSED,
    (COMPLETED, "inputClosed"): COMPLETED,
    (FAILED, "inputClosed"): FAILED,
    (PAUSED, "inputClosed"): PAUSED,
    (AWAITING, "timeout"): PAUSED,
    (STREAMING, "timeout"): PAUSED,
    (COMPLETED, "timeout"): COMPLETED,
    (FAILED, "timeout"): FAILED,
    (PAUSED, "timeout"): PAUSED,
    (AWAITING, "fail"): FAILED,
    (STREAMING, "fail"): FAILED,
    (COMPLETED, "fail"): FAILED,
    (PAUSED, "fail"): FAILED,
    (FAILED, "fail"): FAILED,
}
INTERNAL_PAIRS = sorted(INTERNAL, key=lambda pair: (pair[1], list(SessionState).index(pair[0])))


def apply(session: ScribeSession, internal: str) -> None:
    if internal == "inputClosed":
        session.input_closed()
    elif internal == "timeout":
        session.time_out("quiet")
    else:
        session.fail("internalFailureException", "boom")


@pytest.mark.parametrize(
    ("state", "internal"), INTERNAL_PAIRS, ids=[f"{s.name}-{e}" for s, e in INTERNAL_PAIRS]
)
def test_the_sessions_own_events_move_as_the_table_says_and_only_once(state, internal):
    """Input closing or a timeout pauses a session still open; an exception fails
    any session not failed yet. A finished session ignores the first two and a
    failed one a second exception, sending nothing."""
    session, sent = session_in(state)
    before = len(sent)
    apply(session, internal)
    after = INTERNAL[(state, internal)]
    assert session.state is after
    if after is state:
        assert len(sent) == before
        assert (state, internal) not in TRANSITIONS
    else:
        assert TRANSITIONS[(state, internal)] is after
        if internal == "timeout":
            assert sent[-1] == StreamException(member="validationException", message="quiet")
        elif internal == "fail":
            assert sent[-1] == StreamException(member="internalFailureException", message="boom")
        else:
            assert len(sent) == before


@pytest.mark.parametrize(
    ("fault", "state", "last"),
    [
        (
            Fault(at=0.05, disconnect=True),
            PAUSED,
            StreamReset(reason="scripted disconnect at 0.05 s"),
        ),
        (
            Fault(at=0.05, exception="internalFailureException", message="down"),
            FAILED,
            StreamException(member="internalFailureException", message="down"),
        ),
    ],
    ids=["disconnect", "exception"],
)
def test_a_scripted_fault_ends_a_streaming_session_on_the_audio_that_reaches_it(fault, state, last):
    """A disconnect pauses the session (resumable), an exception fails it."""
    scenario = Scenario(name="fault", faults=(fault,))
    session, sent = session_in(STREAMING, scenario)
    session.receive_event(event("binaryAudioEvent", pcm_tone(0.1)))
    assert session.state is state
    assert sent == [last]
    assert TRANSITIONS[(STREAMING, "disconnect" if fault.disconnect else "fail")] is state


FLAC_REQUEST = dataclasses.replace(REQUEST, media_encoding="flac")


@pytest.mark.parametrize(
    ("fault", "state"),
    [
        (Fault(at=0.85, disconnect=True), PAUSED),
        (Fault(at=0.85, exception="validationException"), FAILED),
    ],
    ids=["disconnect", "exception"],
)
def test_a_fault_end_of_session_makes_due_is_the_outcome_not_completed(fault, state):
    """END_OF_SESSION counts a FLAC stream's last frame (0.768 s to 1.0 s) first: a
    fault inside it fires, and the session ends as the fault says, not COMPLETED."""
    scenario = Scenario(
        name="late-fault",
        segments=(Segment(begin=0.2, end=0.95, content="never finished"),),
        faults=(fault,),
    )
    session, sent = session_in(STREAMING, scenario, FLAC_REQUEST)
    session.receive_event(event("binaryAudioEvent", encode_flac(16_000, 1, 16_000)))
    assert session.state is STREAMING
    session.receive_event(event("sessionControlEvent"))
    assert session.state is state
    assert isinstance(sent[-1], StreamReset if fault.disconnect else StreamException)
    assert not [e for e in sent if isinstance(e, TranscriptResult) and not e.is_partial]


#: Each state change the session makes, by the pair of the table it applies.
CHANGES = [
    (STREAMING, "sessionControlEvent"),
    (AWAITING, "inputClosed"),
    (STREAMING, "inputClosed"),
    (STREAMING, "timeout"),
    (STREAMING, "fail"),
    (PAUSED, "fail"),
    (STREAMING, "disconnect"),
]


@pytest.mark.parametrize("pair", CHANGES, ids=[f"{s.name}-{e}" for s, e in CHANGES])
def test_every_state_change_is_the_tables_answer(monkeypatch, pair):
    """The table is the state machine, not a gate beside it: an entry changed in
    the table changes where the session goes."""
    state, happening = pair
    elsewhere = COMPLETED if TRANSITIONS[pair] is not COMPLETED else PAUSED
    scenario = SCENARIO
    if happening == "disconnect":
        scenario = Scenario(name="fault", faults=(Fault(at=0.05, disconnect=True),))
    session, _ = session_in(state, scenario)
    monkeypatch.setitem(TRANSITIONS, pair, elsewhere)
    if happening == "sessionControlEvent":
        session.receive_event(event("sessionControlEvent"))
    elif happening == "disconnect":
        session.receive_event(event("binaryAudioEvent", pcm_tone(0.1)))
    else:
        apply(session, happening)
    assert session.state is elsewhere


def _resumed_results(scenario: Scenario, progress: object, seconds: float) -> list:
    """What a stream resuming at ``progress`` sends for ``seconds`` more of audio."""
    sent: list = []
    session = ScribeSession(
        request=REQUEST, scenario_for=lambda c: scenario, send=sent.append, resume=progress
    )
    session.receive_event(event("configurationEvent"))
    audio = pcm_tone(seconds)
    for start in range(0, len(audio), 32_000):
        session.receive_event(event("binaryAudioEvent", audio[start : start + 32_000]))
    return [(r.content, r.is_partial) for r in sent if isinstance(r, TranscriptResult)]


@pytest.mark.parametrize(
    ("unsent", "again"),
    [
        (0, []),
        (1, [("one two three", False)]),  # the final alone
        (2, [("one", True), ("one two three", False)]),  # a partial and the final
        (3, [("one", True), ("one two three", False)]),  # more than it made: no further back
    ],
)
def test_results_withdrawn_unsent_come_again_on_the_resumed_stream(unsent, again):
    """A session's results held by a chaos pause when its stream closed are taken back
    (the last ones of the segment), and a stream resuming it sends them again."""
    scenario = Scenario(
        name="s",
        segments=(
            Segment(begin=0.0, end=0.5, content="one two three", partials=1),
            Segment(begin=2.0, end=2.5, content="later", partials=0),
        ),
    )
    sent: list = []
    session = ScribeSession(request=REQUEST, scenario_for=lambda c: scenario, send=sent.append)
    session.receive_event(event("configurationEvent"))
    session.receive_event(event("binaryAudioEvent", pcm_tone(1.0)))
    results = [r for r in sent if isinstance(r, TranscriptResult)]
    assert [(r.content, r.is_partial) for r in results] == [("one", True), ("one two three", False)]
    session.input_closed()
    session.withdraw(results[len(results) - unsent :] if unsent <= 2 else results * 2)
    assert _resumed_results(scenario, session.progress(), 2.0) == [*again, ("later", False)]


def test_a_completed_session_withdraws_nothing():
    session, sent = session_in(COMPLETED)
    before = session.progress()
    session.withdraw([r for r in sent if isinstance(r, TranscriptResult)])
    assert session.progress() == before
