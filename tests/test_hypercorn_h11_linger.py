"""An HTTP/1.1 answer sent before its request body has all arrived.

A body over its limit is refused as soon as that is known, while the client
may still be sending. hypercorn closed the connection then; the kernel reset
it for the unread bytes, and a client that reads its answer only once its body
is sent (boto3, urllib, curl) lost the answer, over TLS every time. The server
now reads the rest of the body and drops it (up to LINGER_BYTES), then goes on
as after any answer. The TLS case through boto3 and urllib is in
test_control_plane_big_body.py; these tests look at the connection itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import h11
import pytest

from emulator.admin import MAX_ADMIN_BODY
from emulator.control import MAX_REQUEST_BODY
from emulator.hypercorn_h11 import LINGER_BYTES
from emulator.server import Settings

from .support import running_emulator

OVER = MAX_ADMIN_BODY + 1024 * 1024


def _client() -> h11.Connection:
    return h11.Connection(h11.CLIENT)


def _post_rules(client: h11.Connection, size: int) -> bytes:
    """A rule request head declaring ``size`` bytes of body (sent separately)."""
    return client.send(
        h11.Request(
            method="POST",
            target="/_emulator/rules",
            headers=[("host", "x"), ("content-length", str(size))],
        )
    )


def _answer(client: h11.Connection, sock: socket.socket) -> tuple[int, bytes]:
    """The next whole response on ``sock``: its status and body."""
    status, body = 0, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            client.receive_data(data)
            if not data:
                raise AssertionError("the server closed the connection before its answer")
        elif type(event) is h11.Response:
            status = event.status_code
        elif type(event) is h11.Data:
            body += event.data
        elif type(event) is h11.EndOfMessage:
            return status, body


def _closed(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (bar what it still sends) within its timeout."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_the_answer_comes_at_once_and_the_connection_serves_on_after_the_body(emulator):
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        client = _client()
        sock.sendall(_post_rules(client, OVER))
        # Refused by its Content-Length, before a byte of the body came.
        status, body = _answer(client, sock)
        assert status == 400
        assert f"request body is {OVER} bytes" in json.loads(body)["message"]
        # The client, not reading, sends its whole body: none of it is refused.
        sock.sendall(client.send(h11.Data(data=b"x" * OVER)) + client.send(h11.EndOfMessage()))
        client.start_next_cycle()
        sock.sendall(
            client.send(
                h11.Request(method="GET", target="/_emulator/health", headers=[("host", "x")])
            )
            + client.send(h11.EndOfMessage())
        )
        status, body = _answer(client, sock)
        assert (status, json.loads(body)["status"]) == (200, "ready")


@pytest.mark.parametrize(
    ("path", "piece", "message"),
    [
        ("/_emulator/rules", 16384, f"request body is over {MAX_ADMIN_BODY} bytes"),
        ("/_emulator/rules", 1000, f"request body is over {MAX_ADMIN_BODY} bytes"),
        ("/domain", 16384, f"Request body must be at most {MAX_REQUEST_BODY} bytes"),
        ("/domain", 1000, f"Request body must be at most {MAX_REQUEST_BODY} bytes"),
    ],
    ids=["admin-16k", "admin-1k", "control-plane-16k", "control-plane-1k"],
)
def test_a_chunked_body_refused_part_way_is_read_to_its_end_and_the_connection_serves_on(
    emulator, path, piece, message
):
    """Refused once past the limit, with the app's queue full of the parts it no
    longer reads: hypercorn's reader waited to put the next part there for ever,
    and the connection was reset under the client."""
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        client = _client()
        head = h11.Request(
            method="POST",
            target=path,
            headers=[("host", "x"), ("transfer-encoding", "chunked")],
        )
        sock.sendall(client.send(head))
        data = b" " * piece
        for _ in range(OVER // piece + 1):
            sock.sendall(client.send(h11.Data(data=data)))
        sock.sendall(client.send(h11.EndOfMessage()))
        status, body = _answer(client, sock)
        assert status == 400
        assert message in json.loads(body)["message"]
        client.start_next_cycle()
        health = h11.Request(method="GET", target="/_emulator/health", headers=[("host", "x")])
        sock.sendall(client.send(health) + client.send(h11.EndOfMessage()))
        status, body = _answer(client, sock)
        assert (status, json.loads(body)["status"]) == (200, "ready")


def test_a_request_sent_right_behind_the_dropped_body_is_answered(emulator):
    health = h11.Request(method="GET", target="/_emulator/health", headers=[("host", "x")])
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        client = _client()
        request = _post_rules(client, OVER)
        request += client.send(h11.Data(data=b"x" * OVER)) + client.send(h11.EndOfMessage())
        # The GET goes in the same write; h11 encodes it only in its next cycle.
        behind = _client()
        request += behind.send(health) + behind.send(h11.EndOfMessage())
        sock.sendall(request)
        status, _ = _answer(client, sock)
        assert status == 400
        client.start_next_cycle()
        client.send(health)  # what was sent already, to read its answer
        client.send(h11.EndOfMessage())
        status, body = _answer(client, sock)
        assert (status, json.loads(body)["status"]) == (200, "ready")


def test_a_body_past_what_is_dropped_closes_the_connection(emulator):
    size = LINGER_BYTES + 16 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        client = _client()
        sock.sendall(_post_rules(client, size))
        status, _ = _answer(client, sock)
        assert status == 400
        chunk = b"x" * (1024 * 1024)
        sent = 0
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset, or a broken pipe, once past what is dropped
            pass
        assert sent >= LINGER_BYTES - 8 * len(chunk)  # kernel buffers hold a few
        assert _closed(sock)
    status, body = _get_health(emulator)
    assert (status, body["status"]) == (200, "ready")


def test_a_body_that_stops_arriving_after_the_answer_is_closed_at_the_idle_timeout(
    tmp_path: Path,
):
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / "state", idle_timeout=1.0
    )
    with running_emulator(settings) as running:
        with socket.create_connection(("127.0.0.1", running.h2c_port), timeout=10) as sock:
            client = _client()
            sock.sendall(_post_rules(client, OVER) + b"x" * 1000)
            status, _ = _answer(client, sock)
            assert status == 400
            # Nothing more is sent: the keep-alive timer (5 s at least) closes it,
            # well within the socket's 10 s.
            assert _closed(sock)


def test_a_body_that_stopped_arriving_before_the_answer_closes_its_connection(tmp_path: Path):
    """Its 400 says the body stopped coming for --idle-timeout: the server does
    not wait for it again (it lingered up to the keep-alive timer more), and
    what the client sends after the answer is not taken as the body's rest."""
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / "state", idle_timeout=1.0
    )
    with running_emulator(settings) as running:
        with socket.create_connection(("127.0.0.1", running.h2c_port), timeout=10) as sock:
            client = _client()
            sock.sendall(_post_rules(client, 1000) + b'{"match": ')
            status, body = _answer(client, sock)
            assert status == 400
            assert "the request body stopped arriving" in json.loads(body)["message"]
            late = b" " * 990 + b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\n\r\n"
            answered = b""
            try:
                sock.sendall(late)
                while chunk := sock.recv(65536):
                    answered += chunk
            except OSError:  # reset, or a broken pipe: closed either way
                pass
            assert b"HTTP/1.1" not in answered


def _get_health(emulator) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        client = _client()
        sock.sendall(
            client.send(
                h11.Request(method="GET", target="/_emulator/health", headers=[("host", "x")])
            )
            + client.send(h11.EndOfMessage())
        )
        status, body = _answer(client, sock)
        return status, json.loads(body)


def _expecting(path: str, size: int) -> bytes:
    """A POST head declaring ``size`` bytes and waiting for ``100 Continue``."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {size}\r\nexpect: 100-continue\r\n\r\n"
    ).encode()


def _head(sock: socket.socket) -> bytes:
    """Bytes from ``sock`` up to the end of the first response head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(
    ("path", "size"),
    [("/_emulator/rules", MAX_ADMIN_BODY + 1), ("/domain", MAX_REQUEST_BODY + 1)],
    ids=["admin", "control-plane"],
)
def test_a_body_refused_by_its_length_is_not_asked_for_with_100_continue(emulator, path, size):
    """hypercorn sent ``100 Continue`` as soon as the head was read, so a client
    waiting for it uploaded a body the app had refused by its Content-Length."""
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        sock.sendall(_expecting(path, size))
        head = _head(sock)
        assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
        # The client may skip the body; the connection ends after this answer.
        assert b"\r\nconnection: close\r\n" in head.lower()
        # A client that sends the body all the same has it read, then the close.
        sock.sendall(b" " * size)
        assert _closed(sock)


def test_a_body_the_app_reads_is_asked_for_with_100_continue(emulator):
    # A rule for a session no test opens: the emulator is shared by this module.
    body = json.dumps({"match": {"sessionId": str(uuid.uuid4())}, "scenario": "synthetic"})
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        sock.sendall(_expecting("/_emulator/rules", len(body)))
        assert _head(sock).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(body.encode())
        client = _client()
        client.send(_parsed_request("/_emulator/rules", len(body)))
        client.send(h11.Data(data=body.encode()))
        client.send(h11.EndOfMessage())
        status, answer = _answer(client, sock)
        assert status == 201, answer
        # Asked for and sent: the connection serves on.
        client.start_next_cycle()
        health = h11.Request(method="GET", target="/_emulator/health", headers=[("host", "x")])
        sock.sendall(client.send(health) + client.send(h11.EndOfMessage()))
        assert _answer(client, sock)[0] == 200


def _parsed_request(path: str, size: int) -> h11.Request:
    return h11.Request(
        method="POST", target=path, headers=[("host", "x"), ("content-length", str(size))]
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("verify", [False, True], ids=["unsigned", "verify-signatures"])
def test_curl_posting_past_the_limit_gets_its_400_without_uploading(tmp_path: Path, verify):
    """curl sends ``Expect: 100-continue`` with a body over 1 MiB."""
    upload = tmp_path / "big.json"
    upload.write_bytes(b" " * (MAX_REQUEST_BODY + 1))
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path / "state",
        verify_signatures=verify,
        access_key_id="AKIDEXAMPLE" if verify else None,
        secret_access_key="secret" if verify else None,
    )
    with running_emulator(settings) as running:
        done = subprocess.run(
            [
                "curl", "-sS", "--http1.1", "--data-binary", f"@{upload}",
                "-H", "content-type: application/json",
                "-w", "\n%{http_code} %{size_upload}",
                f"http://127.0.0.1:{running.h2c_port}/domain",
            ],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    body, _, summary = done.stdout.rpartition("\n")
    assert summary == "400 0", done.stdout
    assert f"Request body must be at most {MAX_REQUEST_BODY} bytes" in json.loads(body)["message"]
