"""Always-on limits and admin protection: the idle timeout and --admin-token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.eventstream import EventStreamDecoder
from emulator.server import RunningServer, Settings

from .support import H2Client, admin, new_session_id, raw_http11, running_emulator
from .test_stream_wire import END, _inline_spy, audio, config_event, headers, signed

TOKEN = "let-me-in"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(
        port=0,
        h2c_port=0,
        state_dir=Path(tmp_path_factory.mktemp("limits-state")),
        idle_timeout=0.5,
        admin_token=TOKEN,
    )
    with running_emulator(settings) as running:
        yield running


def authorized(running: RunningServer, path: str) -> tuple[int, object]:
    request = urllib.request.Request(running.h2c_url + path)
    request.add_header("authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_a_stream_with_no_input_for_the_idle_timeout_ends_with_a_validation_exception_paused(
    guarded,
):
    session_id = new_session_id()
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, config_event())  # then silence, input left open
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"]
    (exception,) = EventStreamDecoder().receive_data(bytes(response["data"]))
    assert exception.headers[":exception-type"] == "validationException"
    message = json.loads(exception.payload)["message"]
    assert "no input for 0.5 s" in message and "the session is paused" in message
    assert "timed out waiting for audio (the emulator's --idle-timeout)" in message
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    # A client whose network dropped without a word resumes its session later.
    assert details["status"] == "PAUSED"
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, config_event() + audio(b"\0" * 3200) + END, end_stream=True)
        assert client.wait(stream)["headers"][":status"] == "200"
    finally:
        client.close()
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert (details["status"], details["streams"]) == ("COMPLETED", 2)


def _timed_out_after(running: RunningServer, sent: bytes) -> str:
    """The message a stream that sent ``sent`` and then nothing is timed out with."""
    client = H2Client("127.0.0.1", running.h2c_port)
    try:
        stream = client.request(headers(new_session_id()))
        if sent:
            client.send(stream, sent)
        response = client.wait(stream)
    finally:
        client.close()
    (exception,) = EventStreamDecoder().receive_data(bytes(response["data"]))
    return json.loads(exception.payload)["message"]


def test_a_stream_that_never_sends_its_configuration_is_told_what_it_waited_for(guarded):
    """Opened and silent: the stream waited for its configuration event, not for
    audio, and the message says so."""
    message = _timed_out_after(guarded, b"")
    assert message.startswith(
        "no input for 0.5 s: the stream timed out waiting for its configuration event "
        "(the emulator's --idle-timeout)"
    ), message


def test_a_stream_stopped_inside_a_message_is_told_it_waited_for_the_rest_of_it(guarded):
    """A prelude declaring a large message, then part of it and silence: the stream
    was told it "timed out waiting for audio", though it was inside a message."""
    whole = audio(b"\0" * 30_000)
    message = _timed_out_after(guarded, config_event() + whole[:1000])
    assert message.startswith(
        "no input for 0.5 s: the stream timed out waiting for the rest of an event-stream "
        f"message (1,000 of its {len(whole):,} bytes came) (the emulator's --idle-timeout)"
    ), message


def test_a_final_signed_frame_without_end_stream_closes_the_input_at_the_idle_timeout(guarded):
    """The empty signed frame says the input is over; a client that then leaves its
    HTTP/2 stream open is not failed as if it had gone quiet mid-visit: the session
    pauses, as at END_STREAM, and the response ends without an exception."""
    session_id = new_session_id()
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, signed(config_event()) + signed(audio(b"\0" * 3200)) + signed(b""))
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"]
    assert EventStreamDecoder().receive_data(bytes(response["data"])) == []
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED"
    assert details["audioSeconds"] == 0.1


def test_a_flac_streams_final_signed_frame_then_the_idle_timeout_sends_its_last_results(guarded):
    """The input closed by the empty signed frame counts a FLAC stream's last frame,
    and the results it makes due are sent before the response ends (they were
    counted as sent and dropped)."""
    from .test_audio import encode_flac

    session_id = new_session_id()
    rule = {
        "match": {"sessionId": session_id},
        "scenario": {"segments": [{"begin": 0.2, "end": 0.9, "content": "all done here"}]},
    }
    request = urllib.request.Request(
        guarded.h2c_url + "/_emulator/rules", data=json.dumps(rule).encode(), method="POST"
    )
    request.add_header("authorization", f"Bearer {TOKEN}")
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        stream = client.request(headers(session_id, **{"x-amzn-medscribe-media-encoding": "flac"}))
        flac = encode_flac(16_000, 1, 16_000)  # 1.0 s; its last frame ends at the input's end
        client.send(stream, signed(config_event()) + signed(audio(flac)) + signed(b""))
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"]
    messages = EventStreamDecoder().receive_data(bytes(response["data"]))
    segments = [json.loads(m.payload)["transcriptSegment"] for m in messages]
    assert [(s["content"], s["isPartial"]) for s in segments][-1] == ("all done here", False)
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED" and details["audioSeconds"] == pytest.approx(1.0)
    assert details["finalsSent"] == 1


def test_audio_taken_inline_for_longer_than_the_idle_timeout_is_input(guarded, monkeypatch):
    """Real-time audio for twice the idle timeout, taken while the pump waits
    (never waking it), counts as input: the stream is not timed out."""
    import time

    answers, _ = _inline_spy(monkeypatch)
    session_id = new_session_id()
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, signed(config_event()))
        client.wait(stream, for_headers=True)
        for _ in range(20):
            time.sleep(0.05)
            client.send(stream, signed(audio(b"\0" * 1600)))
        client.send(stream, signed(END), end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"] and response["reset"] is None
    assert answers.count(False) >= 10
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "COMPLETED"
    assert details["audioSeconds"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "path", ["/_emulator/rules", "/_emulator/sessions"], ids=["rules", "sessions"]
)
def test_admin_api_needs_the_bearer_token(guarded, path):
    status, body = admin(guarded.h2c_url, "GET", path)
    assert status == 401
    assert "--admin-token" in body["message"]
    assert authorized(guarded, path)[0] == 200


@pytest.mark.parametrize(
    ("authorization", "status", "message"),
    [
        (f"bearer {TOKEN}", 200, None),
        (f"BEARER  {TOKEN} ", 200, None),
        ("Bearer wrong-token", 401, "is not the one the emulator was started with"),
        (f"Basic {TOKEN}", 401, "not that scheme"),
        ("Bearer", 401, "is not the one the emulator was started with"),
    ],
    ids=["lower-case-scheme", "upper-case-and-spaces", "wrong-token", "other-scheme", "empty"],
)
def test_the_token_check_reads_the_scheme_in_any_case_and_says_what_is_wrong(
    guarded, authorization, status, message
):
    request = urllib.request.Request(guarded.h2c_url + "/_emulator/rules")
    request.add_header("authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            got, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        got, body = error.code, json.loads(error.read())
    assert got == status, body
    if message is not None:
        assert message in body["message"] and "--admin-token" in body["message"]


def test_health_and_ca_stay_open_without_the_token(guarded):
    status, body = admin(guarded.h2c_url, "GET", "/_emulator/health")
    assert status == 200 and body["status"] == "ready"
    status, pem = admin(guarded.h2c_url, "GET", "/_emulator/ca.pem")
    assert status == 200 and pem.startswith(b"-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (b"BROKEN\r\n\r\n", 400, "could not be read as HTTP/1.1"),
        (
            b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n",
            431,
            "16384 bytes",
        ),
        (
            b"POST /_emulator/rules HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"BROKEN\r\n",
            400,
            "request body could not be read",
        ),
    ],
    ids=["malformed", "too-large", "malformed-body"],
)
def test_an_unreadable_http11_request_gets_the_services_error_shape(
    emulator, request_bytes, status, words
):
    """hypercorn answered these with an empty body; boto3 then reports a bare status."""
    got, fields, body = raw_http11(emulator.h2c_port, request_bytes)
    assert got == status
    assert fields["x-amzn-errortype"] == "ValidationException"
    assert fields["content-type"] == "application/json"
    assert fields["x-amzn-request-id"]
    message = json.loads(body)["message"]
    assert words in message
    assert "BROKEN" not in message and "aaaa" not in message  # the request is not quoted
    # The server serves on.
    with urllib.request.urlopen(f"{emulator.h2c_url}/_emulator/health", timeout=10) as response:
        assert response.status == 200


def _busy_rule(base_url: str, session_id: str) -> None:
    words = "lorem ipsum dolor sit amet " * 30
    script = {
        "segments": [
            {"begin": t + 0.1, "end": t + 0.9, "partials": 5, "content": words} for t in range(60)
        ]
    }
    rule = {"match": {"sessionId": session_id}, "scenario": script}
    status, body = admin(base_url, "POST", "/_emulator/rules", rule, token=TOKEN)
    assert status == 201, body


def _reset_with_nothing_taken(guarded, session_id: str, send_input) -> None:
    """Open ``session_id``'s stream from a client that grants its response no window,
    ``send_input(client, stream)``, and see the stream reset with nothing taken."""
    from h2.settings import SettingCodes

    h2 = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        h2.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        stream = h2.request(headers(session_id))
        send_input(h2, stream)
        response = h2.wait(stream)  # until the reset; H2Client bounds it at 10 s
        assert response["reset"] is not None
        assert response["data"] == b""
    finally:
        h2.close()


def test_a_client_that_takes_no_output_for_the_idle_timeout_is_reset(guarded):
    """A client that grants its response no window while its stream stays open: the
    session waits in its send (the server keeps about 32 KiB of output), and after
    --idle-timeout without the client taking any, the stream is reset and the
    session ends as if the client had gone. Its quota slot is free again."""
    from .test_stream_wire import _send_until_blocked

    backend = guarded.app.backend
    before = backend.active
    session_id = new_session_id()
    _busy_rule(guarded.h2c_url, session_id)

    def send_input(h2: H2Client, stream: int) -> None:
        frames = [config_event(), *(audio(b"\0" * 3200) for _ in range(600))]
        assert _send_until_blocked(h2, stream, frames) < len(frames)

    _reset_with_nothing_taken(guarded, session_id, send_input)
    assert backend.active == before
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED"
    status, journal = authorized(guarded, f"/_emulator/sessions/{session_id}/events")
    (stalled,) = [entry for entry in journal["events"] if entry["type"] == "outputStalled"]
    assert stalled["direction"] == "stream" and stalled["seconds"] == 0.5


def test_a_finished_session_whose_client_takes_no_output_is_reset_at_the_timeout(guarded):
    """The session completes, but its client never takes the output: the response's
    end, which waits for all of it to be written, gives up after --idle-timeout and
    resets the stream, instead of the server waiting for that client for ever."""
    backend = guarded.app.backend
    before = backend.active
    session_id = new_session_id()
    # A little output (under the 32 KiB at which a send waits), so the end waits for it.
    script = {"segments": [{"begin": 0.2, "end": 0.8, "content": "hello there", "partials": 1}]}
    _script_rule(guarded.h2c_url, session_id, script)

    def send_input(h2: H2Client, stream: int) -> None:
        h2.send(stream, config_event() + audio(b"\0" * 32000) + END, end_stream=True)

    _reset_with_nothing_taken(guarded, session_id, send_input)
    assert backend.active == before
    # The session was over when its output stalled: it stays COMPLETED, and its
    # journal says what became of the output after the session's end.
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "COMPLETED"
    status, journal = authorized(guarded, f"/_emulator/sessions/{session_id}/events")
    kinds = [entry["type"] for entry in journal["events"]]
    assert kinds[-2:] == ["streamEnded", "outputStalled"]
    assert journal["events"][-1]["stream"] == journal["events"][-2]["stream"] == 1


def _script_rule(base_url: str, session_id: str, script: dict) -> None:
    rule = {"match": {"sessionId": session_id}, "scenario": script}
    status, body = admin(base_url, "POST", "/_emulator/rules", rule, token=TOKEN)
    assert status == 201, body


def test_a_slow_client_that_keeps_taking_output_is_not_reset(guarded):
    """The output timer restarts with every chunk the client takes: a client reading
    1,600 bytes every 100 ms through a backlog of output is slow, not gone, although
    a send of the session waits longer than --idle-timeout (0.5 s) for room."""
    import select

    import h2.events
    from h2.settings import SettingCodes

    session_id = new_session_id()
    words = "lorem ipsum dolor sit amet " * 30
    segments = [
        {"begin": t + 0.1, "end": t + 0.9, "partials": 5, "content": words} for t in range(20)
    ]
    _script_rule(guarded.h2c_url, session_id, {"segments": segments})
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        stream = client.request(headers(session_id))
        frames = [config_event(), *(audio(b"\0" * 3200) for _ in range(200)), END]
        taken, outcome, tick = 0, None, time.monotonic()
        deadline = tick + 60
        while outcome is None:
            assert time.monotonic() < deadline, "the session did not end"
            while frames and client.conn.local_flow_control_window(stream) >= len(frames[0]):
                frame = frames.pop(0)
                client.conn.send_data(stream, frame, end_stream=not frames)
            if time.monotonic() >= tick:  # the reader takes 1,600 bytes
                tick += 0.1
                client.conn.increment_flow_control_window(1600, stream_id=stream)
            client._flush()
            if select.select([client.sock], [], [], 0.01)[0]:
                for event in client.conn.receive_data(client.sock.recv(65536)):
                    if isinstance(event, h2.events.DataReceived):
                        taken += len(event.data)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                        outcome = type(event).__name__
                client._flush()
    finally:
        client.close()
    assert outcome == "StreamEnded"
    assert taken > 32 * 1024  # more than the server keeps: it waited for this client
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "COMPLETED"


@pytest.mark.parametrize("opening", ["then-audio", "together"])
def test_sessions_of_a_client_that_stopped_reading_its_socket_end_at_the_timeout(guarded, opening):
    """A client that grants every window but no longer reads its socket (a wedged
    process) backs TCP up: each session's output stalls, and resetting its stream
    must not wait for that socket either, or the sessions stay open for ever. With
    each stream's audio sent along with its opening, the later sessions find the
    socket backed up before their response has even started."""
    from h2.settings import SettingCodes

    backend = guarded.app.backend
    before = backend.active
    script = {
        "segments": [
            {"begin": t * 0.1 + 0.01, "end": t * 0.1 + 0.09, "partials": 2, "content": "y" * 5000}
            for t in range(100)
        ]
    }
    session_ids = [new_session_id() for _ in range(60)]
    for session_id in session_ids:
        _script_rule(guarded.h2c_url, session_id, script)
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**30})
        client.ping()
        streams = []
        for session_id in session_ids:
            streams.append(stream := client.request(headers(session_id)))
            client.conn.send_data(stream, config_event())
            if opening == "together":
                for _ in range(13):
                    client.conn.send_data(stream, audio(b"\0" * 3200))
            client._flush()
        if opening == "then-audio":
            client.ping()
            for stream in streams:  # 1.3 s of audio each, inside the stream windows
                for _ in range(13):
                    client.conn.send_data(stream, audio(b"\0" * 3200))
            client._flush()
        # ...and the socket is never read again, input left open.
        deadline = time.monotonic() + 30
        while backend.active != before:
            assert time.monotonic() < deadline, f"{backend.active - before} sessions still open"
            time.sleep(0.05)
    finally:
        client.sock.close()
    stalled = 0
    for session_id in session_ids:
        path = f"/_emulator/sessions/{session_id}/events"
        status, journal = admin(guarded.h2c_url, "GET", path, token=TOKEN)
        if status == 404:  # its HEADERS were never read: no session
            continue
        stalled += any(entry["type"] == "outputStalled" for entry in journal["events"])
    assert stalled > 0


def test_output_taken_while_the_session_waits_for_input_does_not_count_as_input(guarded):
    """The client sends no more audio but takes its output a byte at a time: the
    input timeout still fires (output taken restarts only the output timer)."""
    import select

    from h2.settings import SettingCodes

    backend = guarded.app.backend
    before = backend.active
    session_id = new_session_id()
    script = {"segments": [{"begin": 0.05, "end": 0.15, "partials": 3, "content": "w" * 1500}]}
    _script_rule(guarded.h2c_url, session_id, script)
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        stream = client.request(headers(session_id))
        client.conn.send_data(stream, config_event())
        for _ in range(3):
            client.conn.send_data(stream, audio(b"\0" * 3200))
        client._flush()
        deadline = time.monotonic() + 20
        while backend.active == before:
            assert time.monotonic() < deadline, "the session did not open"
            time.sleep(0.01)
        tick = time.monotonic() + 0.3
        while backend.active != before:
            assert time.monotonic() < deadline, "the input timeout never fired"
            if time.monotonic() >= tick:  # a byte every 0.45 s: under the 0.5 s timeout
                tick += 0.45
                client.conn.increment_flow_control_window(1, stream_id=stream)
                client._flush()
            if select.select([client.sock], [], [], 0.02)[0]:
                client.conn.receive_data(client.sock.recv(65536))
                client._flush()
    finally:
        client.close()
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "PAUSED"
    assert "no input for 0.5 s" in details["errors"][0]["message"]


def test_chaos_pauses_longer_than_the_idle_timeout_are_not_a_stalled_client(guarded):
    """A chaos delay (1 s) and slow output (0.7 s an event), each longer than the
    0.5 s --idle-timeout: the emulator's own pauses, not the client's, so the
    session completes and its client gets everything."""
    session_id = new_session_id()
    script = {"segments": [{"begin": 0.2, "end": 0.8, "content": "hello there", "partials": 1}]}
    rule = {
        "match": {"sessionId": session_id},
        "scenario": script,
        "chaos": {"delay": 1.0, "slow": 0.7},
    }
    assert admin(guarded.h2c_url, "POST", "/_emulator/rules", rule, token=TOKEN)[0] == 201
    client = H2Client("127.0.0.1", guarded.h2c_port)
    try:
        stream = client.request(headers(session_id))
        client.send(stream, config_event() + audio(b"\0" * 32000) + END, end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    assert response["ended"] and response["reset"] is None
    messages = EventStreamDecoder().receive_data(bytes(response["data"]))
    assert [m.headers[":event-type"] for m in messages] == ["transcriptEvent"] * 2
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert details["status"] == "COMPLETED"


def test_a_chaos_delay_ends_when_the_server_stops(tmp_path):
    """An app asleep in an hour's chaos delay when the server is told to stop: its
    connection is dropped at the end of the grace period, the delay ends with it,
    and the session is saved as a client gone away (not left IN_PROGRESS)."""
    settings = Settings(port=0, h2c_port=0, state_dir=tmp_path)
    with running_emulator(settings) as running:
        backend = running.app.backend
        session_id = new_session_id()
        rule = {"match": {"sessionId": session_id}, "chaos": {"delay": 3600}}
        assert admin(running.h2c_url, "POST", "/_emulator/rules", rule)[0] == 201
        client = H2Client("127.0.0.1", running.h2c_port)
        stream = client.request(headers(session_id))
        client.send(stream, config_event())
        deadline = time.monotonic() + 10
        while backend.active == 0:
            assert time.monotonic() < deadline, "the session did not open"
            time.sleep(0.01)
    # running_emulator has stopped the server (it waits for the thread).
    client.close()
    record = backend.find(session_id)
    assert record is not None and backend.active == 0
    assert record.status.value == "PAUSED"
    # It woke and saw its client gone, rather than being cancelled in its sleep.
    kinds = [entry["type"] for entry in record.journal.entries()]
    assert kinds[-2:] == ["disconnect", "streamEnded"]


async def test_an_sdk_client_gone_quiet_is_told_and_resumes_its_paused_session(guarded):
    """Through the real SDK: a client that stops sending (its network gone without a
    word) gets the validationException, and the same ids resume the session."""
    from aws_sdk_connecthealth import models as m

    from emulator.sdk import make_client

    from .support import audio_event, configuration_event, end_of_session_event, run_session

    session_id = new_session_id()
    chunk = b"\0" * 3200
    async with await make_client(
        endpoint_url=guarded.endpoint_url, ca_file=guarded.ca_file
    ) as client:
        quiet = await run_session(
            client,
            session_id,
            events=[configuration_event(), audio_event(chunk), audio_event(chunk)],
            pace=1.5,  # three times the 0.5 s --idle-timeout
        )
        assert isinstance(quiet.error, m.ValidationException), quiet.error
        assert "the session is paused" in quiet.error.message
        status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
        assert details["status"] == "PAUSED"
        resumed = await run_session(
            client,
            session_id,
            events=[configuration_event(), audio_event(chunk), end_of_session_event()],
        )
    assert resumed.error is None, resumed.error
    status, details = authorized(guarded, f"/_emulator/sessions/{session_id}")
    assert (details["status"], details["streams"]) == ("COMPLETED", 2)
