"""The admin API's view of sessions: listing, details over several streams, ids, reset."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import struct
import wave

import pytest

from .support import (
    DOMAIN_ID,
    admin,
    configuration_event,
    end_of_session_event,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
    stream_input,
)

OTHER_DOMAIN = "dom-zzzzzzzzzz0123456789"


def get(emulator, path: str) -> dict:
    status, body = admin(emulator.h2c_url, "GET", path)
    assert status == 200, body
    return body


async def test_rejected_requests_are_listed_with_time_ids_and_reason_and_filtered(client, emulator):
    from aws_sdk_connecthealth import models as m

    from emulator.testing import MedscribeEmulator

    done, paused = new_session_id(), new_session_id()
    await run_session(client, done, audio=pcm_tone(0.2))
    await run_session(client, paused, audio=pcm_tone(0.2), end_of_session=False)
    refused = await run_session(client, done, audio=pcm_tone(0.2))  # a COMPLETED session
    assert isinstance(refused.error, m.ValidationException)
    (entry,) = get(emulator, "/_emulator/sessions")["rejected"]
    assert list(entry) == [
        "requestId",
        "time",
        "sessionId",
        "domainId",
        "subscriptionId",
        "error",
        "message",
    ]
    assert entry["sessionId"] == done and entry["domainId"] == DOMAIN_ID
    assert entry["error"] == "ValidationException" and "COMPLETED" in entry["message"]
    assert entry["time"].endswith("Z")
    assert MedscribeEmulator.from_running(emulator).rejected() == [entry]
    # Filters: by any id (sessions and rejected alike) and by status (sessions only).
    by_id = get(emulator, f"/_emulator/sessions?sessionId={done}")
    assert [s["sessionId"] for s in by_id["sessions"]] == [done] and by_id["rejected"] == [entry]
    by_status = get(emulator, "/_emulator/sessions?status=PAUSED")
    assert [s["sessionId"] for s in by_status["sessions"]] == [paused]
    assert by_status["rejected"] == []
    other = get(emulator, f"/_emulator/sessions?domainId={OTHER_DOMAIN}")
    assert other == {"sessions": [], "rejected": [], "rejectedDropped": 0}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "?domainID=x",
            "unknown filter ?domainID; the sessions can be filtered by ?sessionId, ?domainId, "
            "?subscriptionId, ?status",
        ),
        ("?status=DONE", "?status='DONE' is not one of IN_PROGRESS, PAUSED, COMPLETED, FAILED"),
    ],
    ids=["unknown-filter", "unknown-status"],
)
def test_a_bad_session_listing_filter_is_a_400_naming_it(emulator, query, message):
    status, body = admin(emulator.h2c_url, "GET", "/_emulator/sessions" + query)
    assert status == 400 and body["message"] == message


async def test_sessions_are_listed_oldest_first_with_their_status_and_streams(client, emulator):
    first, second = new_session_id(), new_session_id()
    await run_session(client, first, audio=pcm_tone(0.2), end_of_session=False)
    await run_session(client, second, audio=pcm_tone(0.2))
    await run_session(client, first, audio=pcm_tone(0.2))
    listed = get(emulator, "/_emulator/sessions")["sessions"]
    assert [(s["sessionId"], s["status"], s["streams"]) for s in listed] == [
        (first, "COMPLETED", 2),
        (second, "COMPLETED", 1),
    ]
    assert listed[0]["scenario"] == "synthetic"


async def test_details_add_up_every_stream_of_a_session(client, emulator):
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.5), end_of_session=False)
    await run_session(client, session_id, audio=pcm_tone(0.7), binary=True)
    details = get(emulator, f"/_emulator/sessions/{session_id}")
    assert details["audioSeconds"] == pytest.approx(1.2)
    assert details["eventsReceived"] == {
        "configurationEvent": 2,
        "audioEvent": 5,  # 3200-byte chunks
        "binaryAudioEvent": 7,
        "sessionControlEvent": 1,
    }
    assert details["audioBytes"] == len(pcm_tone(0.5)) + len(pcm_tone(0.7))
    # As GetMedicalScribeListeningSession gives it.
    results = details["postStreamActionResult"]["clinicalNoteGenerationResult"]
    assert results["noteResult"]["status"] in ("IN_PROGRESS", "COMPLETED")


@pytest.mark.parametrize(("channels", "sent"), [(1, 3201), (2, 3202)], ids=["mono", "stereo"])
async def test_audio_wav_of_a_ragged_pcm_stream_holds_whole_sample_frames(
    client, emulator, channels, sent
):
    """A PCM client that sent a byte count that is not whole sample frames got a WAV
    whose data chunk declared those bytes: not a whole number of blocks, so not a
    valid WAV. The trailing partial frame is left out."""
    session_id = new_session_id()
    audio = pcm_tone(0.1, channels=channels)[:3200] + b"\x01" * (sent - 3200)
    result = await run_session(client, session_id, audio=audio, two_channels=channels == 2)
    assert result.error is None
    status, body = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/audio.wav")
    assert status == 200
    whole = 3200  # 1,600 mono frames of 2 bytes, or 800 stereo ones of 4
    (riff_size,) = struct.unpack_from("<I", body, 4)
    assert body[36:40] == b"data" and struct.unpack_from("<I", body, 40) == (whole,)
    assert len(body) == 44 + whole and riff_size == len(body) - 8
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getnchannels(), wav.getnframes()) == (channels, whole // (2 * channels))
        assert wav.readframes(wav.getnframes()) == audio[:whole]


@pytest.mark.parametrize(("channels", "stray"), [(1, 1), (2, 3)], ids=["mono", "stereo"])
async def test_audio_wav_of_a_resumed_session_drops_each_streams_partial_frame(
    client, emulator, channels, stray
):
    """The clock drops a stream's trailing partial frame; the WAV joined the streams'
    bytes, so the next stream began mid-frame: its mono samples noise, its stereo
    channels swapped."""
    session_id = new_session_id()
    tone = pcm_tone(0.2, channels=channels)
    half = len(tone) // 2
    first, second = tone[:half], tone[half:]
    two = channels == 2
    await run_session(
        client, session_id, audio=first + b"\x7f" * stray, two_channels=two, end_of_session=False
    )
    result = await run_session(client, session_id, audio=second, two_channels=two, binary=True)
    assert result.error is None, repr(result.error)
    assert get(emulator, f"/_emulator/sessions/{session_id}")["audioSeconds"] == pytest.approx(0.2)
    status, body = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}/audio.wav")
    assert status == 200
    with wave.open(io.BytesIO(body)) as wav:
        assert wav.getnchannels() == channels
        assert wav.readframes(wav.getnframes()) == tone


async def test_the_same_session_id_in_two_domains_is_two_sessions(client, emulator):
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.2))
    await run_session(client, session_id, audio=pcm_tone(0.2), domain_id=OTHER_DOMAIN)
    newest = get(emulator, f"/_emulator/sessions/{session_id}")
    assert newest["domainId"] == OTHER_DOMAIN  # without a filter the newest wins
    older = get(emulator, f"/_emulator/sessions/{session_id}?domainId={DOMAIN_ID}")
    assert older["domainId"] == DOMAIN_ID
    events = get(emulator, f"/_emulator/sessions/{session_id}/events?domainId={DOMAIN_ID}")
    assert events["domainId"] == DOMAIN_ID and events["events"]
    status, answer = admin(
        emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}?subscriptionId=sub-nope"
    )
    assert status == 400  # no subscription id looks like that
    assert answer["message"].startswith("?subscriptionId='sub-nope': a subscriptionId must")
    unused = "sub-" + "Z" * 21
    for path in ("", "/events", "/audio.wav"):
        status, answer = admin(
            emulator.h2c_url,
            "GET",
            f"/_emulator/sessions/{session_id}{path}?subscriptionId={unused}",
        )
        assert status == 404
        assert f"subscriptionId {unused}" in answer["message"]
        assert f"has domainId {OTHER_DOMAIN}" in answer["message"]  # where it is instead


async def test_reset_forgets_finished_sessions_and_their_journals_but_not_a_live_one(
    client, emulator, caplog
):
    """And says so in the log, with who asked: on a shared emulator another job's
    sessions went without a trace."""
    done = new_session_id()
    await run_session(client, done, audio=pcm_tone(0.2))
    live = new_session_id()
    stream = await client.start_medical_scribe_listening_session(input=stream_input(live))
    await stream.input_stream.send(configuration_event())
    await asyncio.wait_for(stream.await_output(), 10)
    with caplog.at_level(logging.INFO, logger="medscribe.admin"):
        assert admin(emulator.h2c_url, "POST", "/_emulator/reset")[0] == 200
    (said,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reset by")]
    assert re.fullmatch(
        r"reset by 127\.0\.0\.1:\d+: 1 session\(s\) forgotten, 1 kept for their open stream",
        said,
    ), said
    listed = get(emulator, "/_emulator/sessions")["sessions"]
    assert [s["sessionId"] for s in listed] == [live]
    assert admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{done}/events")[0] == 404
    await stream.input_stream.send(end_of_session_event())
    await stream.input_stream.close()
    _, output = await stream.await_output()
    _ = [event async for event in output]
    assert get(emulator, f"/_emulator/sessions/{live}")["status"] == "COMPLETED"
    # A forgotten session id may stream again.
    assert (await run_session(client, done, audio=pcm_tone(0.2))).error is None


async def test_health_counts_live_and_total_streams(client, emulator):
    before = get(emulator, "/_emulator/health")["sessions"]
    await run_session(client, new_session_id(), audio=pcm_tone(0.2))
    after = get(emulator, "/_emulator/health")["sessions"]
    assert after == {"active": 0, "total": before["total"] + 1}


@pytest.mark.parametrize(
    ("key", "value", "header"),
    [
        ("sessionId", "s1", "x-amzn-medscribe-session-id"),
        ("domainId", "domain-throttled", "x-amzn-medscribe-domain-id"),
        ("subscriptionId", "sub-inline", "x-amzn-medscribe-subscription-id"),
    ],
)
def test_a_rule_that_could_never_match_is_a_400_naming_the_header_rule(
    emulator, key, value, header
):
    """Headers are validated before rules apply: a match value no request could carry
    would be a rule that silently never fires, so it is refused."""
    body = {"match": {key: value}, "error": {"type": "ThrottlingException"}}
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/rules", body)
    assert status == 400
    assert f"match.{key}: '{value}' can never match" in answer["message"]
    assert header in answer["message"]
    assert value not in str(get(emulator, "/_emulator/rules"))


BAD_BODIES = {
    "empty": (b"", "request body is empty"),
    "not-json": (b"{match", "request body is not valid JSON"),
    "not-utf-8": (b'{"scenario": "\xff"}', "request body is not valid JSON"),
    "nested-past-the-parser": (b"[" * 100_000, "nested too deeply"),
    "a-number-of-5000-digits": (
        b'{"scenario": "primary-care-visit", "times": ' + b"9" * 5000 + b"}",
        "request body: an integer of 5000 digits; no member takes one of more than 4300",
    ),
    "a-probability-of-400-digits": (
        b'{"scenario": "primary-care-visit", "probability": 1' + b"0" * 400 + b"}",
        "probability: must be a finite number, got an integer of over 308 digits",
    ),
    "unpaired-surrogate": (
        b'{"scenario": {"segments": [{"begin": 0, "end": 1, "content": "\\ud800"}]}}',
        "scenario.segments[0].content: must be valid Unicode text",
    ),
    "times-of-400-digits": (
        b'{"scenario": "primary-care-visit", "times": 1' + b"0" * 400 + b"}",
        "times: must be at most 1000000000 (omit it for no limit), got an integer of 401 digits",
    ),
    "a-member-twice": (
        b'{"scenario": "primary-care-visit", "scenario": "synthetic"}',
        "<request>: scenario: duplicate key",
    ),
    "a-nested-member-twice": (
        b'{"scenario": {"segments": [], "segments": []}}',
        "<request>: scenario.segments: duplicate key",
    ),
    "a-delay-of-400-digits": (
        b'{"chaos": {"delay": {"seconds": 1' + b"0" * 400 + b"}}}",
        "chaos.delay.seconds: must be a finite number",
    ),
}


@pytest.mark.parametrize(("raw", "fragment"), BAD_BODIES.values(), ids=BAD_BODIES)
def test_a_bad_rule_body_is_a_json_400_naming_the_problem(emulator, raw, fragment):
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/rules", raw)
    assert status == 400
    assert fragment in answer["message"]  # admin() decodes JSON answers only
    assert get(emulator, "/_emulator/health")["status"] == "ready"


DUPLICATE_KEYS = {
    "in-an-inline-segment": (
        b'{"match": {"sessionId": "00000000-0000-4000-8000-000000000001"}, "scenario": '
        b'{"segments": [{"channel": 0, "begin": 1.0, "end": 2.0, "begin": 1.5, '
        b'"content": "dup"}]}}',
        "scenario.segments[0].begin",
    ),
    "in-a-later-segment": (
        b'{"scenario": {"segments": [{"begin": 0, "end": 1, "content": "a"}, '
        b'{"begin": 1, "end": 2, "content": "b", "content": "c"}]}}',
        "scenario.segments[1].content",
    ),
    # The inner repeat is written first, though json builds the outer object's
    # members after it and keeps the second "scenario" alone.
    "inside-a-member-given-twice": (
        b'{"scenario": {"segments": [{"end": 1, "end": 2}]}, "scenario": "synthetic"}',
        "scenario.segments[0].end",
    ),
    "a-member-twice-before-a-repeat-inside-it": (
        b'{"times": 1, "times": 2, "scenario": {"faults": [], "faults": []}}',
        "times",
    ),
}


@pytest.mark.parametrize(("raw", "path"), DUPLICATE_KEYS.values(), ids=DUPLICATE_KEYS)
def test_a_duplicate_key_in_a_rule_body_is_named_by_its_path(emulator, raw, path):
    """A name given twice is a 400 naming its path, as the rule's other problems are
    named (``<request>: scenario.segments[N].field``), the first written if several:
    "member 'begin' appears more than once" did not say which of dozens of segments."""
    before = get(emulator, "/_emulator/rules")
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/rules", raw)
    assert status == 400
    assert answer == {"message": f"invalid rule: <request>: {path}: duplicate key"}
    assert get(emulator, "/_emulator/rules") == before


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b'{"match": {"": 1, "": 2}}', "match: duplicate key ''"),
        (b'{"a.b": 1, "a.b": 2}', "duplicate key 'a.b'"),
        (
            b'{"scenario": {"' + b"k" * 100_000 + b'": 1, "' + b"k" * 100_000 + b'": 2}}',
            "scenario: duplicate key 'kkkk",
        ),
    ],
    ids=["empty", "dotted", "100-kB"],
)
def test_a_duplicate_key_a_path_cannot_show_is_quoted_after_its_parent(emulator, raw, named):
    """An empty name showed as nothing, a dotted one as two members, and a long one
    whole: each is quoted (cut short) after the path to its object."""
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/rules", raw)
    assert status == 400
    assert answer["message"].startswith(f"invalid rule: <request>: {named}")
    assert len(answer["message"]) < 200


def test_an_oversized_body_is_refused_without_reading_it_whole(emulator):
    """A 300 MiB rule took 300 MiB of the server's memory before its 400."""
    import socket

    from emulator.admin import MAX_ADMIN_BODY

    port = int(emulator.h2c_url.rsplit(":", 1)[1])
    for declared in (True, False):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            framing = (
                f"content-length: {64 * MAX_ADMIN_BODY}\r\n"
                if declared
                else "transfer-encoding: chunked\r\n"
            )
            sock.sendall(f"POST /_emulator/rules HTTP/1.1\r\nhost: x\r\n{framing}\r\n".encode())
            chunk = b"x" * 65536
            if not declared:
                chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
            answer = b""
            sent = 0
            # Send until the server answers: it must not wait for 256 MiB.
            while b"\r\n\r\n" not in answer and sent < 32 * MAX_ADMIN_BODY:
                try:
                    sock.sendall(chunk)
                except OSError:
                    break
                sent += len(chunk)
                sock.settimeout(0.0 if sent <= 2 * MAX_ADMIN_BODY else 5)
                try:
                    answer += sock.recv(65536)
                except (BlockingIOError, TimeoutError):
                    pass
                sock.settimeout(10)
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), head
        assert sent <= 2 * MAX_ADMIN_BODY + 65536 * 4, sent
        expected = (
            f"request body is {64 * MAX_ADMIN_BODY} bytes; the limit is {MAX_ADMIN_BODY}"
            if declared
            else f"request body is over {MAX_ADMIN_BODY} bytes, the limit"
        )
        assert expected.encode() in body
    assert get(emulator, "/_emulator/health")["status"] == "ready"


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        (
            "GET",
            "/_emulator/health/",
            404,
            "no route for GET /_emulator/health/ (did you mean /_emulator/health, "
            "without the trailing slash?)",
        ),
        ("POST", "/_emulator/rules/", 404, "no route for POST /_emulator/rules/ (did you mean"),
        ("GET", "/_emulator/nothing/", 404, "no route for GET /_emulator/nothing/"),
        ("PUT", "/_emulator/reset", 405, "PUT is not allowed on /_emulator/reset"),
    ],
    ids=["trailing-slash", "trailing-slash-post", "unknown", "wrong-method"],
)
def test_unknown_admin_routes_are_json_errors_saying_what_is_wrong(
    emulator, method, path, status, message
):
    """No redirects (a 307 with an empty body): a JSON 404/405 naming the request, and
    the route meant when only a trailing slash is in the way."""
    got, answer = admin(emulator.h2c_url, method, path, {} if method != "GET" else None)
    assert got == status
    assert answer["message"].startswith(message)
    if "nothing" in path:
        assert "did you mean" not in answer["message"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/domain", 405),
        ("GET", "/no-such-operation", 404),
        ("GET", "/domains/", 404),
        ("POST", "/medical-scribe-stream", 404),
    ],
)
def test_a_request_naming_no_operation_is_unknown_operation_in_the_service_shape(
    emulator, method, path, status
):
    """Outside /_emulator/ the paths are the service's: an error there carries
    x-amzn-errortype, as boto3 and the SDK read the service's errors."""
    import json
    import urllib.error
    import urllib.request

    data = b"{}" if method != "GET" else None
    request = urllib.request.Request(emulator.h2c_url + path, data=data, method=method)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == status
    assert refused.value.headers["x-amzn-errortype"] == "UnknownOperationException"
    assert len(refused.value.headers["x-amzn-requestid"]) == 36
    assert path in json.loads(refused.value.read())["message"]


def test_a_reset_whose_fixtures_directory_is_gone_is_refused_and_changes_nothing(tmp_path):
    """A CI step re-creating the directory (rm -rf, cp -r), an unmounted volume: the
    reset answered 200 and dropped every rules-file rule, where start-up refuses a
    fixtures directory that is not there."""
    from emulator.server import Settings

    fixtures = tmp_path / "fixtures"
    (fixtures / "scenarios").mkdir(parents=True)
    (fixtures / "scenarios" / "exact.yaml").write_text(
        "segments:\n  - {begin: 0.0, end: 0.5, content: As scripted.}\n"
    )
    (fixtures / "rules.yaml").write_text("- {scenario: exact}\n")
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / "state", fixtures=fixtures
    )
    with running_emulator(settings) as run:
        rules_before = get(run, "/_emulator/rules")
        assert [rule["id"] for rule in rules_before["rules"]] == ["file-1"]
        fixtures.rename(tmp_path / "elsewhere")
        status, answer = admin(run.h2c_url, "POST", "/_emulator/reset")
        assert status == 400, answer
        assert (
            f"{fixtures}: no such fixtures directory (it was there at start-up)"
            in (answer["message"])
        )
        assert get(run, "/_emulator/rules") == rules_before
        (tmp_path / "elsewhere").rename(fixtures)
        assert admin(run.h2c_url, "POST", "/_emulator/reset")[0] == 200


def test_a_reset_refused_for_broken_fixture_files_names_both_and_changes_nothing(tmp_path):
    """Reset reads rules.yaml and resources.yaml again, both before it changes anything:
    when an edit broke them, the 400 names every problem of both files, and the rules,
    sessions and resources are as they were (they were half reset: the rules gone, the
    resources kept)."""
    from emulator.sdk import boto3_client
    from emulator.server import Settings

    fixtures = tmp_path / "fixtures"
    (fixtures / "scenarios").mkdir(parents=True)
    (fixtures / "scenarios" / "exact.yaml").write_text(
        "segments:\n  - {begin: 0.0, end: 0.5, content: As scripted.}\n"
    )
    rules = fixtures / "rules.yaml"
    rules.write_text("- {scenario: exact}\n")
    resources = fixtures / "resources.yaml"
    resources.write_text("domains:\n  - {domainId: dom-0123456789abcdefghij, name: seeded}\n")
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / "state", fixtures=fixtures
    )
    with running_emulator(settings) as run:
        boto = boto3_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file)
        made = boto.create_domain(name="made-by-a-test")["domainId"]
        added = {"match": {"sessionId": new_session_id()}, "error": {"type": "ThrottlingException"}}
        assert admin(run.h2c_url, "POST", "/_emulator/rules", added)[0] == 201
        rules_before = get(run, "/_emulator/rules")
        assert len(rules_before["rules"]) == 2

        rules.write_text("- {scenario: nosuch}\n")
        resources.write_text("domains:\n  - {domainId: not-a-domain-id, name: seeded}\n")
        status, answer = admin(run.h2c_url, "POST", "/_emulator/reset")
        assert status == 400
        assert answer["message"].startswith("cannot reset: ")
        assert "rules.yaml:1: [0].scenario: unknown scenario 'nosuch'" in answer["message"]
        assert "resources.yaml:2: domains[0].domainId" in answer["message"]
        assert get(run, "/_emulator/rules") == rules_before
        assert boto.get_domain(domainId=made)["name"] == "made-by-a-test"

        # One file broken is refused the same way.
        rules.write_text("- {scenario: exact}\n")
        status, answer = admin(run.h2c_url, "POST", "/_emulator/reset")
        assert status == 400 and "rules.yaml" not in answer["message"]
        assert get(run, "/_emulator/rules") == rules_before
        assert boto.get_domain(domainId=made)["name"] == "made-by-a-test"

        # Mended, the reset does all of it.
        resources.write_text("domains:\n  - {domainId: dom-0123456789abcdefghij, name: again}\n")
        assert admin(run.h2c_url, "POST", "/_emulator/reset")[0] == 200
        assert [rule["scenario"] for rule in get(run, "/_emulator/rules")["rules"]] == ["exact"]
        names = [d["name"] for d in boto.list_domains()["domains"]]
        assert names == ["again"]


@pytest.mark.parametrize("path", ["", "/events", "/audio.wav"])
async def test_a_session_look_up_refuses_a_parameter_it_does_not_know(client, emulator, path):
    """?domainid= (a typo) was ignored: the newest session of the id came back, perhaps
    another job's, as if it were the one asked for."""
    session_id = new_session_id()
    await run_session(client, session_id, audio=pcm_tone(0.2))
    status, answer = admin(
        emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}{path}?domainid={DOMAIN_ID}"
    )
    assert status == 400
    assert answer["message"] == (
        "unknown parameter ?domainid; a session is picked by ?domainId, ?subscriptionId"
    )
    assert admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}{path}")[0] == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/_emulator/rules"),
        ("GET", "/_emulator/rules"),
        ("POST", "/_emulator/reset"),
        ("DELETE", "/_emulator/rules/rule-1"),
        ("GET", "/_emulator/health"),
        ("GET", "/_emulator/scenarios"),
    ],
)
def test_a_route_without_parameters_refuses_one_rather_than_acting_on_everything(
    emulator, method, path
):
    """DELETE /_emulator/rules?domainId=... ignored its parameter: it deleted every
    job's rules on a shared emulator, and GET listed them all."""
    body = {"match": {"domainId": OTHER_DOMAIN}, "scenario": "synthetic"}
    status, rule = admin(emulator.h2c_url, "POST", "/_emulator/rules", body)
    assert status == 201, rule
    status, answer = admin(emulator.h2c_url, method, f"{path}?domainId={OTHER_DOMAIN}")
    assert status == 400
    assert answer["message"] == (
        f"{method} {path} takes no parameters, got ?domainId; only /_emulator/sessions "
        "and a session's look-ups take some"
    )
    assert [r["id"] for r in get(emulator, "/_emulator/rules")["rules"]] == [rule["id"]]


def test_deleting_the_rules_answers_how_many_it_deleted(emulator, caplog):
    """DELETE /_emulator/rules answers {"deleted": N}, N the rules it removed, and
    DELETE /_emulator/rules/{id} 1, or 404 for a rule that is not there."""
    ids = []
    for _ in range(2):
        status, rule = admin(
            emulator.h2c_url, "POST", "/_emulator/rules", {"scenario": "synthetic"}
        )
        assert status == 201, rule
        ids.append(rule["id"])
    assert admin(emulator.h2c_url, "DELETE", f"/_emulator/rules/{ids[0]}") == (200, {"deleted": 1})
    status, answer = admin(emulator.h2c_url, "DELETE", f"/_emulator/rules/{ids[0]}")
    assert status == 404 and ids[0] in answer["message"]
    admin(emulator.h2c_url, "POST", "/_emulator/rules", {"scenario": "synthetic"})
    with caplog.at_level(logging.INFO, logger="medscribe.admin"):
        assert admin(emulator.h2c_url, "DELETE", "/_emulator/rules") == (200, {"deleted": 2})
    assert re.search(r"every rule deleted by 127\.0\.0\.1:\d+: 2$", caplog.text, re.M)
    assert get(emulator, "/_emulator/rules")["rules"] == []
    assert admin(emulator.h2c_url, "DELETE", "/_emulator/rules") == (200, {"deleted": 0})


async def test_rules_count_their_uses_and_name_themselves_where_they_acted(client, emulator):
    """A listing showed no uses (a rule without times: null remaining, never seen to
    fire); a refusal did not name its rule; a resumed stream's rule replaced the
    session's ruleId, though the rule that chose its scenario was the first one."""
    from aws_sdk_connecthealth import models as m

    refused, resumed = new_session_id(), new_session_id()
    _, error_rule = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"sessionId": refused}, "error": {"type": "ThrottlingException"}},
    )
    _, scenario_rule = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"sessionId": resumed}, "scenario": "synthetic", "times": 1},
    )
    result = await run_session(client, refused, audio=pcm_tone(0.2))
    assert isinstance(result.error, m.ThrottlingException)
    (entry,) = get(emulator, "/_emulator/sessions")["rejected"]
    assert entry["ruleId"] == error_rule["id"]
    await run_session(client, resumed, audio=pcm_tone(0.2), end_of_session=False)
    _, chaos_rule = admin(
        emulator.h2c_url,
        "POST",
        "/_emulator/rules",
        {"match": {"sessionId": resumed}, "chaos": {"slow": 0.01}},
    )
    assert (await run_session(client, resumed, audio=pcm_tone(0.2))).error is None
    session = get(emulator, f"/_emulator/sessions/{resumed}")
    assert session["streams"] == 2 and session["ruleId"] == scenario_rule["id"]
    events = get(emulator, f"/_emulator/sessions/{resumed}/events")["events"]
    started = [e["rule"] for e in events if e["type"] == "streamStarted"]
    assert started == [scenario_rule["id"], chaos_rule["id"]]
    listed = get(emulator, "/_emulator/rules")["rules"]
    uses = {r["id"]: (r["uses"], r["remaining"]) for r in listed}
    assert uses == {
        error_rule["id"]: (1, None),
        scenario_rule["id"]: (1, 0),
        # Its chaos acted on a session another rule started: a use.
        chaos_rule["id"]: (1, None),
    }


async def test_a_reset_under_strict_resources_keeps_a_streaming_sessions_domain(tmp_path):
    """A reset keeps a session whose stream is open; under --strict-resources it also
    deleted that session's domain, so the client's Get after its stream (another CI
    job's reset, on a shared emulator) was ResourceNotFound. Through the SDK and boto3."""
    from emulator.sdk import boto3_client, make_client
    from emulator.server import Settings

    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, strict_resources=True
    )
    with running_emulator(settings) as run:
        boto = boto3_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file)
        domain = boto.create_domain(name="streaming-job")["domainId"]
        subscription = boto.create_subscription(domainId=domain)["subscriptionId"]
        finished = boto.create_domain(name="finished-job")["domainId"]
        sdk = await make_client(endpoint_url=run.endpoint_url, ca_file=run.ca_file)
        session_id = new_session_id()
        try:
            stream = await sdk.start_medical_scribe_listening_session(
                input=stream_input(session_id, domain_id=domain, subscription_id=subscription)
            )
            await stream.input_stream.send(configuration_event())
            await asyncio.wait_for(stream.await_output(), 10)
            status, answer = admin(run.h2c_url, "POST", "/_emulator/reset")
            assert status == 200 and answer["liveSessions"] == [session_id]
            await stream.input_stream.send(end_of_session_event())
            await stream.input_stream.close()
            _, output = await stream.await_output()
            _ = [event async for event in output]
        finally:
            await sdk._config.transport.close()  # type: ignore[attr-defined]
        details = boto.get_medical_scribe_listening_session(
            domainId=domain, subscriptionId=subscription, sessionId=session_id
        )["medicalScribeListeningSessionDetails"]
        assert details["streamStatus"] == "COMPLETED"
        assert boto.get_domain(domainId=domain)["domainId"] == domain
        with pytest.raises(boto.exceptions.ResourceNotFoundException):
            boto.get_domain(domainId=finished)  # the rest was reset
