"""The admin API and the control plane against careless and hostile clients: bodies
where none belongs, bodies cut short or never finished, repeated parameters, web
pages of other sites, and what a 405 says the path takes."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

from emulator.server import Settings

from .support import H2Client, admin, new_session_id, parse_http11_response, running_emulator
from .test_stream_wire import headers as stream_headers

RULE = {"match": {"domainId": "dom-zzzzzzzzzz0123456789"}, "scenario": "synthetic"}


def _rules(emulator) -> list[dict]:
    status, answer = admin(emulator.h2c_url, "GET", "/_emulator/rules")
    assert status == 200
    return answer["rules"]


def _exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 10) -> bytes:
    """Send ``data`` over HTTP/1.1 and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("method", "path", "hint"),
    [
        (
            "DELETE",
            "/_emulator/rules",
            "it deletes every rule; DELETE /_emulator/rules/{id} deletes one",
        ),
        ("DELETE", "/_emulator/rules/{id}", "the rule is named by the path"),
        ("POST", "/_emulator/reset", "it resets the whole emulator; nothing narrows it"),
    ],
    ids=["delete-all", "delete-one", "reset"],
)
def test_a_route_that_acts_on_everything_refuses_a_body_naming_what_to_act_on(
    emulator, method, path, hint
):
    """DELETE /_emulator/rules with {"id": ...} deleted every job's rules."""
    status, rule = admin(emulator.h2c_url, "POST", "/_emulator/rules", RULE)
    assert status == 201
    path = path.replace("{id}", rule["id"])
    status, answer = admin(emulator.h2c_url, method, path, {"id": rule["id"]})
    assert status == 400
    assert answer["message"] == (
        f'{method} {path} takes no body ({hint}), got \'{{"id": "{rule["id"]}"}}\''
    )
    assert [r["id"] for r in _rules(emulator)] == [rule["id"]]
    # An empty JSON object, as some clients send with every POST, is no body.
    status, _ = admin(emulator.h2c_url, method, path, {})
    assert status == 200
    assert _rules(emulator) == []


def test_a_long_body_where_none_belongs_is_quoted_cut_short(emulator):
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/reset", {"x": "y" * 100_000})
    assert status == 400
    assert answer["message"].endswith("got " + repr('{"x": "' + "y" * 57) + "...")


@pytest.mark.parametrize(("length", "cut"), [(64, False), (65, True)])
def test_a_body_where_none_belongs_is_quoted_whole_up_to_64_bytes(emulator, length, cut):
    body = {"x": "y" * (length - 9)}  # '{"x": "' and '"}' are 9 bytes
    assert len(json.dumps(body)) == length
    status, answer = admin(emulator.h2c_url, "POST", "/_emulator/reset", body)
    assert status == 400
    quoted = json.dumps(body)[:64]
    assert answer["message"].endswith("got " + repr(quoted) + ("..." if cut else ""))


@pytest.mark.parametrize(
    ("path", "typed"),
    [("/_emulator/rules", False), ("/domain", True)],
    ids=["admin", "control-plane"],
)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_cut_short_by_a_half_close_is_a_400_saying_so(emulator, path, typed, framing):
    """A client that closed its side before its body's end got a bare 500 (admin) or
    an empty 400 without an error type (control plane)."""
    if framing == "content-length":
        head = "content-length: 100\r\n\r\n"
        body = b'{"na'
    else:
        head = "transfer-encoding: chunked\r\n\r\n"
        body = b'10\r\n{"na'
    request = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{head}"
    answer = _exchange(emulator.h2c_port, request.encode() + body, half_close=True)
    status, fields, raw = parse_http11_response(answer)
    assert status == 400
    assert fields["content-type"] == "application/json"
    message = json.loads(raw)["message"]
    assert "ended before it was complete" in message or "ended before its content-length" in (
        message
    )
    if typed:
        assert fields["x-amzn-errortype"] == "ValidationException"
    assert admin(emulator.h2c_url, "GET", "/_emulator/health")[0] == 200


def test_a_body_that_stops_arriving_ends_with_a_400_after_the_idle_timeout(tmp_path):
    """A request whose head came but not all of its body held its connection for the
    server's life, over HTTP/1.1 and HTTP/2; now it ends after --idle-timeout."""
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=0.5)
    expected = "the request body stopped arriving: nothing of it came for 0.5 s (--idle-timeout)"
    with running_emulator(settings) as run:
        for path in ("/_emulator/rules", "/domain"):
            started = time.monotonic()
            request = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{"
            status, fields, raw = parse_http11_response(_exchange(run.h2c_port, request.encode()))
            assert status == 400 and expected in json.loads(raw)["message"]
            assert time.monotonic() - started < 8
        # A route that takes no body, its body cut short or stalled before a byte of it:
        # refused, not carried out on everything.
        admin(run.h2c_url, "POST", "/_emulator/rules", RULE)
        request = b"DELETE /_emulator/rules HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\n"
        status, _, raw = parse_http11_response(_exchange(run.h2c_port, request))
        assert status == 400 and expected in json.loads(raw)["message"]
        status, _, raw = parse_http11_response(_exchange(run.h2c_port, request, half_close=True))
        assert status == 400 and "ended before it was complete" in json.loads(raw)["message"]
        assert len(admin(run.h2c_url, "GET", "/_emulator/rules")[1]["rules"]) == 1
        client = H2Client("127.0.0.1", run.h2c_port)
        try:
            for path in ("/_emulator/rules", "/domain"):
                stream = client.request({"content-type": "application/json"}, path=path)
                client.send(stream, b'{"scen')
                response = client.wait(stream)
                assert dict(response["headers"])[":status"] == "400"
                assert expected in json.loads(bytes(response["data"]))["message"]
        finally:
            client.close()
        # A body that comes whole in its time, in pieces, is read.
        client = H2Client("127.0.0.1", run.h2c_port)
        try:
            stream = client.request({"content-type": "application/json"}, path="/_emulator/rules")
            for piece in (b'{"scenario"', b': "synthetic"}'):
                client.send(stream, piece)
                time.sleep(0.15)
            client.send(stream, b"", end_stream=True)
            assert dict(client.wait(stream)["headers"])[":status"] == "201"
        finally:
            client.close()


def test_a_body_trickled_in_pieces_each_within_the_idle_timeout_ends_with_a_400(tmp_path, caplog):
    """Each piece of a body restarted the --idle-timeout: a byte every 12 s held a
    request (and over HTTP/1.1 its connection) open for hours, with nothing logged.
    A body now has twice the idle timeout plus a second per 64 KiB of it, in all."""
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=1.0)
    expected = (
        "the request body came too slowly: {} bytes in 2 s; a body has twice --idle-timeout "
        "(2 s) plus a second for each 64 KiB of it; send the whole body"
    )
    with (
        caplog.at_level(logging.INFO, logger="medscribe.server"),
        running_emulator(settings) as run,
    ):
        with socket.create_connection(("127.0.0.1", run.h2c_port), timeout=10) as sock:
            sock.sendall(b"POST /domain HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
            sent = 0
            answer = b""
            sock.settimeout(0.4)
            while b"\r\n\r\n" not in answer and sent < 20:
                sock.sendall(b" ")  # one byte in every 0.4 s: never idle for 1 s
                sent += 1
                with contextlib.suppress(TimeoutError):
                    answer += sock.recv(65536)
            sock.settimeout(10)
            while chunk := sock.recv(65536):  # the server closes after its answer
                answer += chunk
            status, fields, raw = parse_http11_response(answer)
        assert status == 400 and fields["x-amzn-errortype"] == "ValidationException"
        message = json.loads(raw)["message"]
        assert message == expected.format(re.search(r"(\d+) bytes", message)[1])
        assert 3 < sent < 9, sent
        client = H2Client("127.0.0.1", run.h2c_port)
        try:
            stream = client.request({"content-type": "application/json"}, path="/_emulator/rules")
            client.sock.settimeout(0.4)
            for _ in range(20):
                client.send(stream, b" ")  # one byte in every 0.4 s
                with contextlib.suppress(TimeoutError):
                    client.receive_once()
                if client.responses[stream]["headers"] is not None:
                    break
            client.sock.settimeout(10)
            response = client.wait(stream)
            assert dict(response["headers"])[":status"] == "400"
            assert "came too slowly" in json.loads(bytes(response["data"]))["message"]
        finally:
            client.close()
    said = [r.getMessage() for r in caplog.records if "came too slowly" in r.getMessage()]
    assert [line.split(" from ")[0] for line in said] == ["POST /domain", "POST /_emulator/rules"]


def test_a_signed_control_plane_request_cut_short_is_answered(tmp_path):
    """With --verify-signatures the body is read whole before the signature is checked:
    a body cut short got no answer at all, the connection just closed."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path,
        verify_signatures=True,
        access_key_id="AKIDEXAMPLE",
        secret_access_key="s3cret",
        idle_timeout=0.5,
    )
    with running_emulator(settings) as run:
        request = b"POST /domain HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{}"
        status, fields, raw = parse_http11_response(
            _exchange(run.h2c_port, request, half_close=True)
        )
        assert status == 400
        assert fields["x-amzn-errortype"] == "ValidationException"
        assert "ended before it was complete" in json.loads(raw)["message"]
        # Stalled, it is bounded by --idle-timeout as an unsigned one is.
        status, fields, raw = parse_http11_response(_exchange(run.h2c_port, request))
        assert status == 400
        assert fields["x-amzn-errortype"] == "ValidationException"
        assert "stopped arriving: nothing of it came for 0.5 s" in json.loads(raw)["message"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?status=COMPLETED&status=FAILED", "?status"),
        ("?sessionId=a&domainId=b&sessionId=c&domainId=b", "?domainId, ?sessionId"),
    ],
)
def test_a_filter_given_twice_is_a_400_not_its_last_value(emulator, query, named):
    """?status=COMPLETED&status=FAILED listed the failed sessions alone."""
    status, answer = admin(emulator.h2c_url, "GET", f"/_emulator/sessions{query}")
    assert status == 400
    assert answer["message"] == f"{named} given more than once; each filter takes one value"


async def test_a_session_picked_by_a_domain_given_twice_is_a_400(client, emulator):
    from .support import run_session

    session_id = new_session_id()
    await run_session(client, session_id, end_of_session=False)
    query = "?domainId=dom-aaaaaaaaaaaaaaaaaaaa&domainId=dom-bbbbbbbbbbbbbbbbbbbb"
    status, answer = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}{query}")
    assert status == 400 and answer["message"].startswith("?domainId given more than once")


def test_the_rejections_kept_are_the_newest_and_the_dropped_are_counted(emulator, monkeypatch):
    """Past the cap the oldest rejection went without a word, as if it never came."""
    monkeypatch.setattr("emulator.backend.MAX_REJECTIONS", 2)
    client = H2Client("127.0.0.1", emulator.h2c_port)
    try:
        sent = []
        for n in range(3):
            bad = f"bad-{n}"
            stream = client.request(
                stream_headers(new_session_id(), **{"x-amzn-medscribe-session-id": bad}),
                end_stream=True,
            )
            assert dict(client.wait(stream)["headers"])[":status"] == "400"
            sent.append(bad)
    finally:
        client.close()
    status, listed = admin(emulator.h2c_url, "GET", "/_emulator/sessions")
    assert [entry["sessionId"] for entry in listed["rejected"]] == sent[1:]
    assert listed["rejectedDropped"] == 1
    assert admin(emulator.h2c_url, "POST", "/_emulator/reset")[0] == 200
    status, listed = admin(emulator.h2c_url, "GET", "/_emulator/sessions")
    assert listed["rejected"] == [] and listed["rejectedDropped"] == 0


def test_a_rule_as_listed_can_be_posted_back(emulator):
    """The list shows absent members as null; posting one back was refused ("got both"
    for "error": null)."""
    status, rule = admin(emulator.h2c_url, "POST", "/_emulator/rules", {**RULE, "times": 2})
    assert status == 201
    listed = {k: v for k, v in rule.items() if k not in ("id", "uses", "remaining")}
    assert listed["error"] is None and listed["chaos"] is None
    status, copy = admin(emulator.h2c_url, "POST", "/_emulator/rules", listed)
    assert status == 201, copy
    assert {k: v for k, v in copy.items() if k != "id"} == {
        k: v for k, v in rule.items() if k != "id"
    }


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/_emulator/rules", "GET, HEAD, POST, DELETE"),
        ("/domain", "GET, HEAD, POST"),
        ("/domain/dom-aaaaaaaaaaaaaaaaaaaa", "GET, HEAD, DELETE"),
    ],
)
def test_a_405_names_every_method_the_path_takes(emulator, path, allowed):
    """Its Allow header named the first route's methods only (GET for the rules)."""
    request = urllib.request.Request(emulator.h2c_url + path, data=b"{}", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    assert refused.value.headers.get_all("allow") == [allowed]
    assert json.loads(refused.value.read())["message"] == (
        f"PUT is not allowed on {path}; it takes {allowed}"
    )


@pytest.mark.parametrize(
    ("path", "typed"), [("/_emulator/reset", False), ("/domain", True)], ids=["admin", "control"]
)
def test_a_web_page_of_another_site_cannot_change_the_emulator(emulator, path, typed):
    """A page's no-preflight POST (a form's or text's content type) added rules and
    reset the emulator from the developer's browser."""
    admin(emulator.h2c_url, "POST", "/_emulator/rules", RULE)
    for content_type in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded"):
        request = urllib.request.Request(
            emulator.h2c_url + path,
            data=b'{"name": "from-a-page"}',
            method="POST",
            headers={"origin": "https://evil.example", "content-type": content_type},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == (401 if typed else 403)
        message = json.loads(refused.value.read())["message"]
        assert message.startswith(
            "a request from a web page of another origin (https://evil.example) is refused"
        )
        if typed:
            assert refused.value.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert len(_rules(emulator)) == 1
    # Reading is not refused (a page cannot read the answer), nor is the same origin.
    request = urllib.request.Request(
        emulator.h2c_url + "/_emulator/rules", headers={"origin": "https://evil.example"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    origin = emulator.h2c_url
    request = urllib.request.Request(
        emulator.h2c_url + "/_emulator/reset", data=b"", method="POST", headers={"origin": origin}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert _rules(emulator) == []


def test_a_request_framed_twice_is_answered_and_its_connection_closed(emulator):
    """Content-Length with Transfer-Encoding: the body is read as chunked, and the
    connection closed after the answer (RFC 9112 §6.1), so that a proxy that read
    the other length cannot slip a second request through."""
    body = b'{"scenario": "synthetic"}'
    first = (
        b"POST /_emulator/rules HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n"
        b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    second = b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\n\r\n"
    answer = _exchange(emulator.h2c_port, first + second)
    status, fields, raw = parse_http11_response(answer)
    assert status == 201, raw
    assert fields["connection"] == "close"
    assert answer.count(b"HTTP/1.1 ") == 1
    assert len(_rules(emulator)) == 1


def test_a_body_where_none_belongs_is_refused_without_waiting_for_the_rest(emulator):
    """Its first bytes say it is not empty: the answer does not wait for 10 MB more
    (nor for the idle timeout, had the client stopped)."""
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        head = b"POST /_emulator/reset HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n"
        sock.sendall(head + b'{"sessionId": "' + b"x" * 1000)
        answer = b""
        while b"}" not in answer.partition(b"\r\n\r\n")[2]:
            answer += sock.recv(65536)
    status, _, raw = parse_http11_response(answer)
    assert status == 400
    assert "takes no body" in json.loads(raw)["message"]


def test_another_sites_page_cannot_delete_the_rules_either(emulator):
    admin(emulator.h2c_url, "POST", "/_emulator/rules", RULE)
    request = urllib.request.Request(
        emulator.h2c_url + "/_emulator/rules",
        method="DELETE",
        headers={"origin": "https://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 403
    assert len(_rules(emulator)) == 1


def test_requests_with_one_framing_keep_their_connection(emulator):
    """Only a request framed twice closes it: two POSTs and a GET share one connection."""
    body = b'{"scenario": "synthetic"}'
    post = b"POST /_emulator/rules HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    chunked = (
        b"POST /_emulator/rules HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    last = b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    answer = _exchange(emulator.h2c_port, post + chunked + last)
    assert answer.count(b"HTTP/1.1 201 ") == 2 and answer.count(b"HTTP/1.1 200 ") == 1
    assert len(_rules(emulator)) == 2


async def test_a_bounded_receive_bounds_the_body_only():
    """Once the body is whole, a later receive() (a streamed answer listening for its
    client's disconnect) waits as long as it takes; before, it gives up after the
    bound, and the message then says the body stopped arriving."""
    import asyncio

    from emulator.requestbody import bounded_receive, unfinished_body

    async def slow_then(messages):
        async def receive():
            delay, message = messages.pop(0)
            await asyncio.sleep(delay)
            return message

        return receive

    scope: dict = {}
    whole = {"type": "http.request", "body": b"{}", "more_body": False}
    gone = {"type": "http.disconnect"}
    receive = bounded_receive(scope, await slow_then([(0, whole), (0.3, gone)]), 0.1)
    assert await receive() == whole
    assert await receive() == gone  # after 0.3 s, past the bound: not cut
    assert "ended before it was complete" in unfinished_body(scope)

    scope = {}
    part = {"type": "http.request", "body": b"{", "more_body": True}
    receive = bounded_receive(scope, await slow_then([(0, part), (0.3, whole)]), 0.1)
    assert await receive() == part
    assert await receive() == gone
    assert unfinished_body(scope).startswith(
        "the request body stopped arriving: nothing of it came for 0.1 s"
    )
    assert bounded_receive(scope, receive, 0) is receive  # 0: no bound
