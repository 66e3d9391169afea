"""The wrong endpoint gets an answer saying which is right.

A cleartext HTTP request on the TLS port gets a 400, not a silent close: the
CRT client behind the SDK waits for ever on a connection closed before its
response; an application configured with ``http://`` and the TLS port hung.
And a stream over HTTP/1.1 (what the SDK sends to ``http://`` and the cleartext
port) is refused: it carried no audio, and its session ended empty and "fine".
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.request

import pytest

from emulator.hypercorn_tcp import cleartext_answer

from .support import admin, new_session_id, pcm_tone, run_session
from .test_stream_wire import config_event, headers

#: What emulator.sdk warns of an http:// endpoint: a stream through it gets no audio.
CLEARTEXT_WARNING = (
    r"over http:// the SDK's CRT client sends a stream's events only once its input "
    r"is closed, so a streaming session gets no audio and waits; give the emulator's "
    r"https:// endpoint"
)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):  # the server closes after its answer
            received += chunk
        return received


@pytest.mark.parametrize(
    "method", [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"M-SEARCH"]
)
def test_a_cleartext_request_gets_a_400_naming_both_endpoints(emulator, method):
    """Of any method: OpenSSL recognises GET, POST, HEAD and PUT only, and a
    DELETE (the control plane's DeleteDomain) was closed without a word."""
    answer = _exchange(
        _port(emulator.endpoint_url),
        method + b" /_emulator/health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["x-amzn-errortype"] == "ValidationException"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    message = json.loads(body)["message"]
    assert message.startswith("this port speaks TLS only, and the request came in cleartext")
    assert emulator.endpoint_url in message and emulator.h2c_url in message


def test_tls_clients_are_served_as_before_and_after(emulator):
    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    url = emulator.endpoint_url.replace("127.0.0.1", "localhost") + "/_emulator/health"
    for _ in range(2):
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            assert json.loads(response.read())["status"] == "ready"
        _exchange(_port(emulator.endpoint_url), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_bytes_that_are_not_http_are_closed_without_an_answer(emulator):
    """Only what OpenSSL recognises as an HTTP request is answered."""
    assert _exchange(_port(emulator.endpoint_url), b"\x00" * 64) == b""


def test_an_http2_prior_knowledge_client_gets_a_goaway_carrying_the_answer(emulator):
    """An h2c client (``curl --http2-prior-knowledge``) on the TLS port: the
    server's preface and a GOAWAY whose debug data is the 400's body."""
    import h2.connection
    import h2.events

    connection = h2.connection.H2Connection()
    connection.initiate_connection()
    answer = _exchange(_port(emulator.endpoint_url), connection.data_to_send())
    events = connection.receive_data(answer)
    goaway = [event for event in events if isinstance(event, h2.events.ConnectionTerminated)]
    assert len(goaway) == 1 and goaway[0].error_code == 1  # PROTOCOL_ERROR
    message = json.loads(goaway[0].additional_data)["message"]
    assert message.startswith("this port speaks TLS only, and the request came in cleartext")
    assert emulator.h2c_url in message


@pytest.mark.parametrize("operation", ["get", "delete"])
async def test_an_sdk_client_given_http_and_the_tls_port_fails_instead_of_hanging(
    emulator, operation
):
    """GetMedicalScribeListeningSession (GET) and DeleteDomain (DELETE, which hung)."""
    from aws_sdk_connecthealth.models import (
        DeleteDomainInput,
        GetMedicalScribeListeningSessionInput,
    )
    from smithy_core.exceptions import CallError

    from emulator.sdk import make_client

    url = emulator.endpoint_url.replace("https://", "http://")
    with pytest.warns(UserWarning, match=CLEARTEXT_WARNING):  # the helper says so at once
        client = await make_client(endpoint_url=url)
    try:
        if operation == "get":
            call = client.get_medical_scribe_listening_session(
                GetMedicalScribeListeningSessionInput(
                    domain_id="d" * 10, subscription_id="s" * 10, session_id=new_session_id()
                )
            )
        else:
            call = client.delete_domain(DeleteDomainInput(domain_id="d" * 10))
        # The bound only keeps a regression from hanging the suite.
        with pytest.raises(CallError) as raised:
            await asyncio.wait_for(call, 60)
        assert "ValidationException" in str(raised.value)
    finally:
        await client._config.transport.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("pace", [0.0, 0.7], ids=["at-once", "for-7-s"])
async def test_an_sdk_stream_to_the_http_endpoint_is_refused_naming_the_https_one(emulator, pace):
    """Over http:// the CRT client sends its request only when the input closes; a
    client that streamed for longer than hypercorn's 5 s keep-alive found the
    connection closed and got AWS_ERROR_HTTP_CONNECTION_CLOSED, not this 400. The
    connection now waits for a request as long as --idle-timeout (15 s)."""
    from aws_sdk_connecthealth import models as m

    from emulator.sdk import make_client

    with pytest.warns(UserWarning, match=CLEARTEXT_WARNING):  # the helper says so at once
        client = await make_client(endpoint_url=emulator.h2c_url)
    session_id = new_session_id()
    try:
        result = await run_session(client, session_id, audio=pcm_tone(1.0), timeout=30, pace=pace)
    finally:
        await client._config.transport.close()  # type: ignore[attr-defined]
    assert isinstance(result.error, m.ValidationException), repr(result.error)
    assert "needs HTTP/2" in result.error.message
    assert "HTTP/1.1" in result.error.message and emulator.endpoint_url in result.error.message
    status, _ = admin(emulator.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 404  # no session was started


async def test_an_sdk_app_awaiting_its_output_first_over_http_is_named_in_the_log(
    tmp_path, caplog, monkeypatch
):
    """An app that awaits the stream's output before it sends (to learn whether the
    start was refused) waits for ever over http://: the CRT client sends its
    request only once the input closes. The emulator closed the silent
    connection at its keep-alive timeout and said nothing; it now says why."""
    from emulator import hypercorn_tcp
    from emulator.logs import Throttle
    from emulator.sdk import make_client
    from emulator.server import Settings

    from .support import running_emulator, stream_input

    monkeypatch.setattr(hypercorn_tcp, "_SILENT_CLEARTEXT", Throttle(60.0))  # none said yet
    settings = Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, idle_timeout=1)
    with (
        caplog.at_level("INFO", logger="medscribe.server"),
        running_emulator(settings) as run,
    ):
        with pytest.warns(UserWarning, match=CLEARTEXT_WARNING):  # the helper says so at once
            client = await make_client(endpoint_url=run.h2c_url)
        try:
            stream = await client.start_medical_scribe_listening_session(
                input=stream_input(new_session_id())
            )
            with pytest.raises(TimeoutError):  # the premise: the SDK hangs here
                await asyncio.wait_for(stream.await_output(), 8)
        finally:
            await client._config.transport.close()  # type: ignore[attr-defined]
    said = [r.getMessage() for r in caplog.records if "sent no request" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert said[0].endswith(
        "sent no request for 5 s and was closed; perhaps an AWS SDK streaming client given "
        "an http:// endpoint, which sends nothing until its input is closed: its streams "
        "need the https:// endpoint"
    )


@pytest.mark.parametrize("framing", ["empty", "content-length", "chunked"])
def test_a_stream_request_over_http1_is_a_400_validation_exception(emulator, framing):
    """Whatever its body: HTTP/1.1 cannot carry the response while the input flows."""
    body = config_event()
    fields = {**headers(new_session_id()), "host": "localhost"}
    if framing == "empty":
        fields["content-length"], body = "0", b""
    elif framing == "content-length":
        fields["content-length"] = str(len(body))
    else:
        fields["transfer-encoding"] = "chunked"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = "POST /medical-scribe-stream/ HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items() if not name.startswith(":")
    )
    answer = _exchange(_port(emulator.h2c_url), head.encode() + b"connection: close\r\n\r\n" + body)
    head_out, _, payload = answer.partition(b"\r\n\r\n")
    lines = head_out.decode("ascii").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400")
    response_headers = dict(line.split(": ", 1) for line in lines[1:])
    assert response_headers["x-amzn-errortype"] == "ValidationException"
    message = json.loads(payload)["message"]
    assert message.startswith("StartMedicalScribeListeningSession needs HTTP/2")
    assert emulator.endpoint_url in message


def test_a_stream_request_over_http1_on_tls_says_h2_was_not_negotiated(emulator):
    """Over TLS the fix is not another endpoint but ALPN: the message says so."""
    import ssl

    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    context.set_alpn_protocols(["http/1.1"])
    fields = {**headers(new_session_id()), "host": "localhost", "content-length": "0"}
    head = "POST /medical-scribe-stream/ HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in fields.items() if not name.startswith(":")
    )
    with socket.create_connection(("127.0.0.1", _port(emulator.endpoint_url)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(head.encode() + b"connection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    head_out, _, payload = answer.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 400")
    message = json.loads(payload)["message"]
    assert "HTTP/2 was not negotiated on this TLS connection" in message
    assert "http://" not in message


def test_the_answer_is_one_well_formed_http_response():
    answer = cleartext_answer("https://localhost:8443", "http://localhost:8080")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert f"content-length: {len(body)}".encode() in head.split(b"\r\n")
    assert json.loads(body) == {
        # By port first: from another container, localhost is that container.
        "message": "this port speaks TLS only, and the request came in cleartext: use "
        "https:// on this port, 8443 (as the emulator names it, https://localhost:8443), "
        "trusting the emulator's CA, or the cleartext port 8080 (http://localhost:8080) "
        "(the AWS SDK's streams need https://: over http:// it sends no audio)"
    }


async def test_two_emulators_on_one_loop_each_name_their_own_endpoints(tmp_path):
    """The answer belongs to the port: an application (or a test) running two
    emulators in one event loop, and a TLS server of its own beside them."""
    from emulator.server import Settings, serve
    from emulator.tls import ensure_certificates

    stop = asyncio.Event()
    started: list = []
    servers = [
        asyncio.create_task(
            serve(
                Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / name),
                shutdown=stop,
                ready=started.append,
            )
        )
        for name in ("one", "two")
    ]
    files = ensure_certificates(tmp_path / "own")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    own = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    try:
        while len(started) < 2:
            await asyncio.sleep(0.05)
        request = b"GET /_emulator/health HTTP/1.1\r\nHost: localhost\r\n\r\n"
        for running in started:
            answer = await asyncio.to_thread(_exchange, _port(running.endpoint_url), request)
            message = json.loads(answer.partition(b"\r\n\r\n")[2])["message"]
            assert running.endpoint_url in message and running.h2c_url in message
            other = started[1] if running is started[0] else started[0]
            assert other.endpoint_url not in message
        own_port = own.sockets[0].getsockname()[1]
        assert await asyncio.to_thread(_exchange, own_port, request) == b""
    finally:
        own.close()
        stop.set()
        await asyncio.gather(*servers)


def test_a_tls_client_on_the_cleartext_port_is_logged_not_answered_in_http(emulator, caplog):
    """The reverse mistake: an HTTP 400 is nothing a TLS client can read (the SDK
    reports a timeout), so the server closes and says in its log what happened."""
    import ssl

    port = _port(emulator.h2c_url)
    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    with caplog.at_level("WARNING", logger="medscribe.server"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as failed:
                context.wrap_socket(raw, server_hostname="localhost")
        deadline = time.monotonic() + 5
        while "TLS handshake reached the cleartext port" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.02)
    assert "WRONG_VERSION_NUMBER" not in str(failed.value)  # HTTP text read as TLS
    assert f"cleartext port {port}" in caplog.text
