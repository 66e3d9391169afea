"""Chaos rules: delay, slow output, disconnect (reset or TCP close), GOAWAY, malformed frames."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import time

import pytest

from emulator.errors import MessageCRCError
from emulator.eventstream import EventStreamDecoder
from emulator.sdk import make_client
from emulator.server import Settings

from .support import (
    DOMAIN_ID,
    H2Client,
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
from .test_stream_wire import END, audio, config_event, headers, merge_spy, script

SCRIPT = {
    "segments": [
        {"begin": 0.2, "end": 0.8, "content": "first words here", "partials": 1},
        {"begin": 1.0, "end": 1.6, "content": "second words here", "partials": 1},
        {"begin": 2.2, "end": 2.8, "content": "third words here", "partials": 1},
    ]
}


def chaos_rule(emulator, session_id: str, chaos: dict, *, scenario: dict = SCRIPT) -> None:
    status, body = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"sessionId": session_id}, "scenario": scenario, "chaos": chaos},
    )
    assert status == 201, body


def body(seconds: float) -> bytes:
    tone = pcm_tone(seconds)
    return config_event() + b"".join(audio(tone[i : i + 3200]) for i in range(0, len(tone), 3200))


def test_slow_output_sends_each_event_on_its_own(emulator):
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"slow": 0.05})
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, body(3.0) + END, end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    events = EventStreamDecoder().receive_data(bytes(response["data"]))
    assert len(events) == 6  # three partials, three finals
    assert response["frames"] >= len(events)
    # Paced events are counted and journaled as they are sent: all of them here.
    status, detail = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert detail["eventsSent"] == {"transcriptEvent": 6}
    status, journal = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    sent = [e for e in journal["events"] if e["direction"] == "out" and e["type"] != "chaos"]
    assert len(sent) == 6


def test_slow_output_of_real_time_audio_is_paced_by_the_stream_not_sent_inline(
    emulator, monkeypatch
):
    """Audio arriving at a real-time pace is taken in the connection's task
    (InlineBody), which also sends a session's output there; paced output never
    goes that way: the stream sends each event after its pause."""
    from .test_stream_wire import _inline_spy, signed

    answers, sent = _inline_spy(monkeypatch)
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"slow": 0.05})
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, signed(config_event()))
        client.wait(stream, for_headers=True)
        tone = pcm_tone(3.0)
        for i in range(0, len(tone), 3200):
            time.sleep(0.02)
            client.send(stream, signed(audio(tone[i : i + 3200])))
        client.send(stream, signed(END), end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    assert False in answers  # audio went in without waking the stream
    assert sent == []
    events = EventStreamDecoder().receive_data(bytes(response["data"]))
    assert len(events) == 6
    assert response["frames"] >= len(events)


def test_delay_holds_the_response_start(emulator):
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"delay": {"seconds": 0.3, "jitter": 0.1}})
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        started = time.monotonic()
        stream = client.request(headers(session_id))
        client.wait(stream, for_headers=True)
        # A lower bound only: the configured delay has passed before the 200.
        assert time.monotonic() - started >= 0.3
        client.send(stream, END, end_stream=True)
    finally:
        client.close()


async def test_disconnect_reset_at_an_audio_time_reaches_the_sdk_as_a_stream_end(client, emulator):
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"disconnect": {"at": 1.2, "mode": "reset"}})
    # Paced, so that the sender is still sending when the reset lands (all at once, a
    # loaded machine could let it finish first).
    result = await run_session(client, session_id, audio=pcm_tone(3.0), timeout=20, pace=0.05)
    assert result.error is None and result.input_failed
    assert [s.content for s in result.finals] == ["first words here"]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED"


@pytest.mark.parametrize(
    "chaos",
    [
        {"disconnect": {"at": 1.2, "mode": "reset"}},
        {"malformed": {"at": 1.2}},
    ],
    ids=["disconnect", "malformed"],
)
async def test_a_resumed_stream_does_not_replay_chaos_its_session_already_reached(
    client, emulator, chaos
):
    """It fired again at once on every resume, so "drop the connection (or break
    the stream), then check my client resumes" could never pass: the resume now
    goes on from 1.2 s."""
    session_id = new_session_id()
    chaos_rule(emulator, session_id, chaos)
    first = await run_session(client, session_id, audio=pcm_tone(3.0), timeout=20)
    assert [s.content for s in first.finals] == ["first words here"]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED"
    resumed = await run_session(client, session_id, audio=pcm_tone(2.0), timeout=20)
    assert resumed.error is None, repr(resumed.error)
    assert [s.content for s in resumed.finals] == ["second words here", "third words here"]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert details["status"] == "COMPLETED"


@pytest.mark.parametrize("times", [1, None], ids=["times-1", "no-times"])
async def test_a_rule_that_started_a_session_acts_on_its_resumed_stream_with_its_uses_spent(
    client, emulator, times
):
    """A session-pinned disconnect at 2.0 s with times: 1 was skipped by the session's
    own resumed stream (its one use spent on the start), where without times it fired:
    a resumed stream uses none, so it fires either way. Another session does not get
    the spent rule."""
    session_id = new_session_id()
    rule = {
        "match": {"domainId": DOMAIN_ID},
        "scenario": SCRIPT,
        "chaos": {"disconnect": {"at": 2.0}},
        **({} if times is None else {"times": times}),
    }
    status, added = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201, added
    first = await run_session(client, session_id, audio=pcm_tone(1.0), end_of_session=False)
    assert [s.content for s in first.finals] == ["first words here"]
    resumed = await run_session(client, session_id, audio=pcm_tone(2.0), timeout=20, pace=0.05)
    assert resumed.error is None and resumed.input_failed  # reset at 2.0 s
    assert [s.content for s in resumed.finals] == ["second words here"]
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert (details["status"], details["audioSeconds"]) == ("PAUSED", 2.0)
    status, journal = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    started = [e for e in journal["events"] if e["type"] == "streamStarted"]
    assert [e["rule"] for e in started] == [added["id"], added["id"]]
    status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
    assert listed["rules"][0]["uses"] == 1
    if times == 1:
        other = await run_session(client, new_session_id(), audio=pcm_tone(3.0), timeout=20)
        assert other.error is None and not other.input_failed
        assert len(other.finals) != 0


async def test_a_times_rule_acting_on_another_rules_resumed_session_spends_a_use(client, emulator):
    """A times: 1 chaos rule acted on every resumed stream of sessions it had not
    started, for free, until a new session spent its one use: it now spends it on
    the first of them, and acts on nothing after."""
    session_id = new_session_id()
    script(emulator, session_id, SCRIPT)
    first = await run_session(client, session_id, audio=pcm_tone(1.0), end_of_session=False)
    assert [s.content for s in first.finals] == ["first words here"]
    status, chaos = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"domainId": DOMAIN_ID}, "chaos": {"disconnect": {"at": 1.5}}, "times": 1},
    )
    assert status == 201, chaos
    resumed = await run_session(
        client, session_id, audio=pcm_tone(1.0), end_of_session=False, timeout=20, pace=0.05
    )
    assert resumed.input_failed  # the chaos rule's reset at 1.5 s
    status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
    uses = {rule["id"]: (rule["uses"], rule["remaining"]) for rule in listed["rules"]}
    assert uses[chaos["id"]] == (1, 0)
    again = await run_session(client, session_id, audio=pcm_tone(1.5), timeout=20)
    assert again.error is None and not again.input_failed
    assert [s.content for s in again.finals] == ["second words here", "third words here"]
    other = await run_session(client, new_session_id(), audio=pcm_tone(2.0), timeout=20)
    assert other.error is None and not other.input_failed


async def test_a_times_rule_whose_disconnect_the_resumed_session_passed_spends_no_use(
    client, emulator
):
    """A disconnect at a time the session has passed does not happen on its resumed
    stream: the rule did nothing there, and its use is left for a session it acts on."""
    session_id = new_session_id()
    script(emulator, session_id, SCRIPT)
    await run_session(client, session_id, audio=pcm_tone(2.0), end_of_session=False)
    rule = {"match": {"domainId": DOMAIN_ID}, "chaos": {"disconnect": {"at": 1.5}}, "times": 1}
    status, chaos = admin(emulator.h2c_url, "POST", "/_emulator/rules", rule)
    assert status == 201
    resumed = await run_session(client, session_id, audio=pcm_tone(1.0), timeout=20)
    assert resumed.error is None and not resumed.input_failed
    status, listed = admin(emulator.h2c_url, "GET", "/_emulator/rules")
    uses = {r["id"]: (r["uses"], r["remaining"]) for r in listed["rules"]}
    assert uses[chaos["id"]] == (0, 1)
    other = await run_session(client, new_session_id(), audio=pcm_tone(3.0), timeout=20, pace=0.05)
    assert other.error is None and other.input_failed  # the rule's one use, at 1.5 s


def test_disconnect_close_drops_the_connection_but_not_the_server(emulator):
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"disconnect": {"at": 1.2, "mode": "close"}})
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = client.request(headers(session_id))
        with pytest.raises(ConnectionError):
            client.send(stream, body(3.0))
            client.wait(stream)
    finally:
        client.close()
    other = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = other.request(headers(new_session_id()))
        other.send(stream, body(0.5) + END, end_stream=True)
        assert other.wait(stream)["ended"]
    finally:
        other.close()


async def test_goaway_lets_the_stream_finish_and_the_sdk_reconnects(client, emulator):
    """A graceful GOAWAY mid-stream: the session under way completes with every final,
    and the emulator then closes the retired connection (RFC 9113 §6.8). Left open
    until the keep-alive timeout, it was the SDK's (0.12) pick for every new request,
    each failing at once with AWS_ERROR_HTTP_GOAWAY_RECEIVED, for 5 s. A new session
    on the same client now goes through, at worst after one immediate retry."""
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"goaway": {"at": 1.0}})
    result = await run_session(client, session_id, audio=pcm_tone(3.0))
    assert result.error is None, repr(result.error)
    assert [s.content for s in result.finals] == [seg["content"] for seg in SCRIPT["segments"]]
    status, events = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    assert any(e.get("kind") == "goaway" for e in events["events"])
    failures: list[Exception] = []
    for _attempt in range(4):  # retried at once, as an application would
        next_id = new_session_id()
        stream = await client.start_medical_scribe_listening_session(input=stream_input(next_id))
        try:
            _, output_stream = await stream.await_output()
        except Exception as error:  # noqa: BLE001 - what the SDK raises is the point
            # Its input publisher is left alone: the SDK's close() of a request
            # refused so never returns.
            failures.append(error)
            continue
        tone = pcm_tone(0.5)
        for event in [configuration_event()] + [
            audio_event(tone[i : i + 3200]) for i in range(0, len(tone), 3200)
        ]:
            await stream.input_stream.send(event)
        await stream.input_stream.send(end_of_session_event())
        await stream.input_stream.close()
        async for _ in output_stream:
            pass
        break
    else:
        pytest.fail(f"no session got through after the GOAWAY: {failures!r}")
    assert len(failures) <= 1, failures
    assert all("GOAWAY" in str(error) for error in failures), failures
    status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{next_id}")
    assert details["status"] == "COMPLETED"


def test_malformed_frame_is_sent_and_the_response_ends(emulator):
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"malformed": {"at": 1.0}})
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, body(3.0) + END, end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"]
    decoder = EventStreamDecoder()
    good = decoder.receive_data(bytes(response["data"]))
    assert [json.loads(m.payload)["transcriptSegment"]["content"] for m in good][-1] == (
        "first words here"
    )
    with pytest.raises(MessageCRCError):
        decoder.end_of_data()


def test_a_chaos_time_is_kept_for_audio_queued_behind_a_busy_pump(emulator, monkeypatch):
    """DATA queued while the pump is busy is not merged into fewer messages
    (InlineBody.merge) while a chaos rule waits for an audio time, which is
    checked after each message: the malformed frame still goes out at 1.0 s,
    not after whatever audio had queued up behind it."""
    merged = merge_spy(monkeypatch)
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"malformed": {"at": 1.0}})
    tone = pcm_tone(1.3)  # 13 frames: within the stream's first window
    chunks = [tone[i : i + 3200] for i in range(0, len(tone), 3200)]
    # A first frame of two events, which only the pump reads, then one audio
    # event a frame, in one write: they arrive while it is busy with the first.
    frames = [config_event() + audio(chunks[0])] + [audio(chunk) for chunk in chunks[1:]]
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.wait(stream, for_headers=True)
        for frame in frames:
            client.conn.send_data(stream, frame)
        client._flush()
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"]
    assert True not in merged
    status, events = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    [fired] = [e for e in events["events"] if e.get("kind") == "malformed"]
    assert fired["audioClock"] == pytest.approx(1.0)


async def test_malformed_frame_reaches_the_sdk_as_a_decoding_error(client, emulator):
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"malformed": {"at": 1.0}})
    result = await run_session(client, session_id, audio=pcm_tone(3.0))
    assert result.error is not None
    assert [s.content for s in result.finals] == ["first words here"]


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("where", ["before-response", "before-output"])
@pytest.mark.parametrize("gone", ["reset", "socket-closed"])
def test_a_client_gone_during_an_hours_delay_ends_its_session_at_once(emulator, where, gone):
    """The app asleep in a chaos delay does not read, so ASGI could not tell it the
    client had gone: the session (and its quota slot) stayed open for the hour. The
    delay now ends when the stream closes, and the session closes with it."""
    backend = emulator.app.backend
    before = backend.active
    session_id = new_session_id()
    # The first delay is before the response; with a script whose first output
    # comes at 0.8 s, a "slow" output is the one after the response starts.
    chaos_rule(
        emulator, session_id, {"delay": 3600} if where == "before-response" else {"slow": 3600}
    )
    h2 = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = h2.request(headers(session_id))
        h2.send(stream, body(1.0))
        if where == "before-output":
            h2.wait(stream, for_headers=True)
        _wait_until(lambda: backend.active == before + 1, "the session to open")
        h2.ping()  # everything sent so far has been read
        if gone == "reset":
            h2.conn.reset_stream(stream)
            h2.ping()
        else:
            h2.sock.close()
        _wait_until(lambda: backend.active == before, "the session to close")
    finally:
        h2.close()
    status, detail = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 200, detail
    # Ended as any stream whose client went away without END_OF_SESSION, with none
    # of the output the delay held counted as sent: it never was.
    assert detail["status"] == "PAUSED" and detail["endedAt"] is not None
    assert detail["eventsSent"] == {}
    assert detail["partialsSent"] == detail["finalsSent"] == 0


def test_a_paced_exception_the_client_never_got_still_says_why_the_session_failed(emulator):
    """Audio before the configuration fails the session; with slow output the
    exception waits its turn, and the client resets the stream first. It was never
    sent (not counted, not journaled as output), but the record keeps the reason."""
    backend = emulator.app.backend
    before = backend.active
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"slow": 3600})
    h2 = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        stream = h2.request(headers(session_id))
        h2.send(stream, audio(b"\0" * 3200))  # no configuration first
        h2.wait(stream, for_headers=True)
        _wait_until(lambda: backend.active == before + 1, "the session to open")
        h2.ping()
        h2.conn.reset_stream(stream)
        h2.ping()
        _wait_until(lambda: backend.active == before, "the session to close")
    finally:
        h2.close()
    status, detail = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert detail["status"] == "FAILED"
    assert detail["eventsSent"] == {}
    (error,) = detail["errors"]
    assert error["type"] == "validationException"
    assert "configuration" in error["message"]


#: An application that closes its client with the stream's input still open
#: leaves the SDK's request-body coroutine pending; closed by the garbage
#: collector, it raises HTTP_STREAM_HAS_COMPLETED into it (awscrt's noise,
#: which these tests of a client giving up provoke on purpose).
_ABANDONED_INPUT = pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*_set_request_body_generator"
    ":pytest.PytestUnraisableExceptionWarning"
)


async def _left_during_an_hours_pause(
    emulator, script: dict, *, heard: float, end: bool = False
) -> str:
    """A session of ``script`` whose output waits out an hour of `slow`, through the
    real SDK: a second of audio sent (then END_OF_SESSION, with ``end``), the
    client closed once the session has ``heard`` seconds of it (and, with
    ``end``, has completed); returns the session's id once its stream has closed."""
    import asyncio

    from emulator.sdk import make_client
    from emulator.session import SessionState

    from .support import audio_event, configuration_event, end_of_session_event, stream_input

    backend = emulator.app.backend
    before = backend.active
    session_id = new_session_id()
    chaos_rule(emulator, session_id, {"slow": 3600}, scenario=script)
    client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
    try:
        stream = await asyncio.wait_for(
            client.start_medical_scribe_listening_session(input=stream_input(session_id)), 30
        )
        await stream.input_stream.send(configuration_event())
        tone = pcm_tone(1.0)
        for i in range(0, len(tone), 3200):
            await stream.input_stream.send(audio_event(tone[i : i + 3200]))
        if end:
            await stream.input_stream.send(end_of_session_event())
            # As an application does after END_OF_SESSION: its body then ends
            # cleanly, not in the SDK's writer when the transport closes under it.
            await stream.input_stream.close()

        def arrived(record) -> bool:
            if record is None or record.audio_seconds < heard:
                return False
            return not end or (record.live and record.live.state is SessionState.COMPLETED)

        deadline = time.monotonic() + 30
        while not arrived(backend.find(session_id)):
            assert time.monotonic() < deadline, "the audio did not arrive"
            await asyncio.sleep(0.01)
    finally:
        await client._config.transport.close()  # the application gives up
        # The SDK's request-body coroutine, left pending, is closed here, in the
        # test that left it (see _ABANDONED_INPUT), not in a later one.
        gc.collect()
    deadline = time.monotonic() + 30
    while backend.active != before:
        assert time.monotonic() < deadline, "the session stays open in its pause"
        await asyncio.sleep(0.01)
    return session_id


async def _resumed_without_rules(running, session_id: str, *, seconds: float):
    """Delete every rule (no pause this time), then resume ``session_id`` through
    the real SDK with ``seconds`` of audio; return its result."""
    assert admin(running.h2c_url, "DELETE", "/_emulator/rules")[0] == 200
    resumed = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
    try:
        return await run_session(resumed, session_id, audio=pcm_tone(seconds), timeout=30)
    finally:
        await resumed._config.transport.close()


@_ABANDONED_INPUT
async def test_an_sdk_client_that_leaves_during_a_pause_ends_its_session_with_nothing_sent(
    emulator,
):
    """Through the real SDK: a session whose first result waits out an hour of
    `slow`, and an application that gives up and closes its client. The pause ends
    with the connection, the session closes at once (not an hour later), and the
    result it never sent is not counted as sent."""
    script = {"segments": [{"begin": 0.1, "end": 0.3, "content": "held back", "partials": 0}]}
    # Past 0.3 s of audio the final is made, and waits out its pause.
    session_id = await _left_during_an_hours_pause(emulator, script, heard=0.3)
    status, detail = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert detail["status"] == "PAUSED"
    assert detail["eventsSent"] == {}
    assert detail["finalsSent"] == detail["partialsSent"] == 0


@_ABANDONED_INPUT
async def test_results_a_pause_held_when_the_client_left_come_on_the_resumed_stream(emulator):
    """A final and partial made but held by `slow` when the client closed its
    connection were dropped, and the script had moved past them: the resumed
    stream never sent them, and the session's transcript lacked them. They are
    taken back, and come when the resumed stream's configuration is taken."""

    script = {
        "segments": [
            {"begin": 0.1, "end": 0.3, "content": "held back", "partials": 1},
            {"begin": 0.5, "end": 2.0, "content": "and the next one", "partials": 0},
        ]
    }
    session_id = await _left_during_an_hours_pause(emulator, script, heard=1.0)
    result = await _resumed_without_rules(emulator, session_id, seconds=1.5)
    assert result.error is None
    assert [(p.content, p.audio_end_offset) for p in result.partials] == [("held", 0.2)]
    assert [f.content for f in result.finals] == ["held back", "and the next one"]
    status, detail = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert detail["status"] == "COMPLETED" and detail["finalsSent"] == 2


@_ABANDONED_INPUT
async def test_results_a_pause_held_when_a_completed_sessions_client_left_are_in_its_artifacts(
    emulator,
):
    """END_OF_SESSION taken, its finals held by `slow`, and the client gone before
    they were sent: the session is COMPLETED, and no stream will resume it. Its
    transcript left those finals out (built from what was sent); the service
    builds its artifacts from the audio, so they are in them now, and in the
    journal as `unsent`, never counted as sent."""
    # Both end past the second of audio sent, so END_OF_SESSION makes them: no
    # pause holds the input before it.
    script = {
        "segments": [
            {"begin": 0.1, "end": 1.5, "content": "said at the start", "partials": 0},
            {"begin": 0.5, "end": 2.0, "content": "cut short by the end", "partials": 0},
        ]
    }
    session_id = await _left_during_an_hours_pause(emulator, script, heard=1.0, end=True)
    deadline = time.monotonic() + 30
    while True:
        status, detail = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
        results = detail["postStreamActionResult"]["clinicalNoteGenerationResult"]
        if all(r["status"] != "IN_PROGRESS" for r in results.values()):
            break
        assert time.monotonic() < deadline, results
        await asyncio.sleep(0.1)
    assert detail["status"] == "COMPLETED"
    assert detail["finalsSent"] == 0
    assert {r["status"] for r in results.values()} == {"COMPLETED"}, results
    location = results["transcriptResult"]["outputLocation"].removeprefix("s3://")
    bucket, key = location.split("/", 1)
    transcript = json.loads((emulator.ca_file.parent / "s3" / bucket / key).read_text())
    segments = transcript["Conversation"]["TranscriptSegments"]
    assert [(s["Content"], s["EndAudioTime"]) for s in segments] == [
        ("said at the start", 1.0),
        ("cut short by the end", 1.0),
    ]
    status, events = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    unsent = [e for e in events["events"] if e["direction"] == "unsent"]
    assert [e["transcriptSegment"]["content"] for e in unsent] == [
        "said at the start",
        "cut short by the end",
    ]


async def test_disconnect_close_delivers_the_output_due_before_it(emulator):
    """A close at 2.0 s dropped what the session had sent before it but the send task
    had not yet written: the client got 0 to 4 of the 4 results due before 2.0 s,
    differently from run to run, while the session counted 4 sent. The stream's
    output is now written before the connection closes, as a reset does."""
    for _ in range(4):
        session_id = new_session_id()
        chaos_rule(emulator, session_id, {"disconnect": {"at": 2.0, "mode": "close"}})
        client = await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file)
        try:
            result = await run_session(client, session_id, audio=pcm_tone(3.0), timeout=20)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client._config.transport.close(), 5)
        # The SDK may have sent all its audio before the close: the session says
        # the close came first.
        got = [(s.is_partial, s.content) for s in result.segments]
        assert got == [
            (True, "first"),
            (False, "first words here"),
            (True, "second"),
            (False, "second words here"),
        ], session_id
        status, details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
        assert (details["status"], details["audioSeconds"]) == ("PAUSED", 2.0)
        assert details["eventsSent"] == {"transcriptEvent": 4}


async def test_a_disconnect_close_before_any_output_closes_at_once(client, emulator):
    """A chaos close that came before the stream had sent a result waited for its
    output buffer to empty, which hypercorn says only after a first result: the
    whole --idle-timeout, then "the client took no output", though the SDK read
    all along. It now closes at once, and the session pauses for the close."""
    session_id = new_session_id()
    late = {"segments": [{"channel": 0, "begin": 2.5, "end": 2.9, "content": "Too late."}]}
    chaos_rule(emulator, session_id, {"disconnect": {"at": 1.0, "mode": "close"}}, scenario=late)
    try:
        result = await run_session(client, session_id, audio=pcm_tone(3.0), timeout=60)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client._config.transport.close(), 5)
    assert result.segments == []
    status, journal = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
    types = [e["type"] for e in journal["events"]]
    assert "chaos" in types and "outputStalled" not in types, types
    details = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")[1]
    assert details["status"] == "PAUSED" and details["audioSeconds"] <= 1.1


def test_disconnect_close_for_a_client_taking_no_output_ends_at_the_idle_timeout(tmp_path):
    """The close waits for the stream's output to be written; a client that grants no
    window takes none, and the wait ends as any send's does, after --idle-timeout:
    the stream is reset and the session ends, instead of holding it for ever."""

    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=0.5)
    with running_emulator(settings) as run:
        session_id = new_session_id()
        chaos_rule(run, session_id, {"disconnect": {"at": 1.2, "mode": "close"}})
        details = _streamed_taking_no_output(run, session_id, seconds=3.0)
        assert details["status"] == "PAUSED"
        status, journal = admin(run.h2c_url, "GET", f"/_emulator/sessions/{session_id}/events")
        types = [e["type"] for e in journal["events"]]
        assert "outputStalled" in types
        assert types.index("chaos") < types.index("outputStalled")
        assert admin(run.h2c_url, "GET", "/_emulator/health")[0] == 200


def _streamed_taking_no_output(run, session_id: str, *, seconds: float) -> dict:
    """Stream ``seconds`` of audio over h2c from a client that grants no window
    (so takes no output); return the session's details once its stream has ended."""
    import h2.settings

    client = H2Client("127.0.0.1", run.h2c_port)
    try:
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        client._flush()
        stream = client.request(headers(session_id))
        client.send(stream, body(seconds))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, details = admin(run.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
            if status == 200 and details["status"] != "IN_PROGRESS":
                return details
            time.sleep(0.05)
        raise AssertionError(f"the session's stream did not end: {details}")
    finally:
        client.close()


async def test_paced_results_cut_off_by_the_idle_timeout_come_on_the_resumed_stream(tmp_path):
    """Paced output to a client that grants no window fills the stream's buffer,
    and the next send waits until --idle-timeout cuts it off. The results from
    that one on were dropped uncounted, and the script had moved past them: a
    resumed stream never sent them. They are taken back as a pause's are."""

    words = "word " * 1600  # each final about 8 KB: the stream's buffer holds four
    script = {
        "segments": [
            {"begin": i / 10, "end": i / 10 + 0.09, "content": f"part {i} {words}", "partials": 0}
            for i in range(10)
        ]
    }
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=0.5)
    with running_emulator(settings) as run:
        session_id = new_session_id()
        chaos_rule(run, session_id, {"slow": 0.001}, scenario=script)
        first = _streamed_taking_no_output(run, session_id, seconds=1.0)
        assert first["status"] == "PAUSED"
        # Counted: handed to the stream's buffer before it filled (never taken).
        counted = first["finalsSent"]
        assert 0 < counted < 10
        result = await _resumed_without_rules(run, session_id, seconds=1.0)
        assert result.error is None
        assert [f.content.split()[1] for f in result.finals] == [str(i) for i in range(counted, 10)]
        status, detail = admin(run.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
        assert (detail["status"], detail["finalsSent"]) == ("COMPLETED", 10)


@pytest.mark.parametrize("held", [True, False], ids=["response-held-by-a-delay", "under-way"])
async def test_a_stream_open_when_the_emulator_stops_ends_for_the_sdk(tmp_path, held):
    """The connection was dropped at the end of the shutdown's grace period with no
    frame: a stream whose response a chaos delay still held left the SDK waiting
    for ever (the CRT client waits for a response that never comes). It now gets a
    500 InternalServerException; a stream under way is reset, its output ending as
    after any reset."""
    from emulator.testing import EmulatorThread

    from .support import audio_event, configuration_event, stream_input

    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path)
    thread = EmulatorThread(settings)
    running = thread.start()
    session_id = new_session_id()
    if held:
        chaos_rule(running, session_id, {"delay": 3600})
    client = await make_client(endpoint_url=running.endpoint_url, ca_file=running.ca_file)
    try:
        stream = await client.start_medical_scribe_listening_session(input=stream_input(session_id))
        await stream.input_stream.send(configuration_event())
        await stream.input_stream.send(audio_event(pcm_tone(0.2)))
        output = asyncio.create_task(stream.await_output())
        if not held:
            _, events = await asyncio.wait_for(output, 10)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(thread.stop)
        if held:
            with pytest.raises(Exception) as info:
                await asyncio.wait_for(output, 10)
            assert type(info.value).__name__ == "InternalServerException"
            assert info.value.message == (
                "the emulator stopped before this stream's response started"
            )
        else:

            async def drain() -> int:
                return len([event async for event in events])

            assert await asyncio.wait_for(drain(), 10) == 0  # ended, no exception
    finally:
        thread.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client._config.transport.close(), 5)


def test_a_paused_sessions_end_line_names_each_way_its_stream_was_cut(tmp_path, caplog):
    """The end line of a PAUSED session says why, for the ways the emulator itself
    ends a stream: a scripted disconnect, a chaos disconnect, no input for
    --idle-timeout, and no output taken for it (the client's own ends and a stop
    are tested with the command line, in test_cli_serve)."""
    caplog.set_level("INFO", logger="medscribe.sessions")
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=0.5)
    with running_emulator(settings) as run:
        ids = {name: new_session_id() for name in ("scripted", "chaos", "quiet", "stalled")}
        scripted = {**SCRIPT, "faults": [{"at": 0.5, "disconnect": True}]}
        rule = {"match": {"sessionId": ids["scripted"]}, "scenario": scripted}
        assert admin(run.h2c_url, "POST", "/_emulator/rules", rule)[0] == 201
        chaos_rule(run, ids["chaos"], {"disconnect": {"at": 0.5, "mode": "reset"}})
        words = "word " * 1600  # each final about 8 KB: the stream's buffer holds four
        loud = {
            "segments": [
                {"begin": i / 10, "end": i / 10 + 0.09, "content": f"{i} {words}", "partials": 0}
                for i in range(10)
            ]
        }
        rule = {"match": {"sessionId": ids["stalled"]}, "scenario": loud}
        assert admin(run.h2c_url, "POST", "/_emulator/rules", rule)[0] == 201
        client = H2Client("127.0.0.1", run.h2c_port)
        try:
            for name, sent in (("scripted", body(1.0)), ("chaos", body(1.0)), ("quiet", b"")):
                stream = client.request(headers(ids[name]))
                client.send(stream, sent or config_event())
            deadline = time.monotonic() + 10
            while any(
                admin(run.h2c_url, "GET", f"/_emulator/sessions/{ids[name]}")[1].get("status")
                != "PAUSED"
                for name in ("scripted", "chaos", "quiet")
            ):
                assert time.monotonic() < deadline
                client.receive_once()
        finally:
            client.close()
        assert _streamed_taking_no_output(run, ids["stalled"], seconds=1.0)["status"] == "PAUSED"
    said = {
        name: re.search(
            rf"session {session_id} ended: PAUSED .* results? sent \((.*)\)$", caplog.text, re.M
        )
        for name, session_id in ids.items()
    }
    assert {name: found and found.group(1) for name, found in said.items()} == {
        "scripted": "scripted disconnect at 0.5 s",
        "chaos": "chaos disconnect-reset",
        "quiet": "no input for the idle timeout",
        "stalled": "the client took no output for 0.5 s",
    }, caplog.text
