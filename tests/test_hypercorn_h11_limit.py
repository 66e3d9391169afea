"""The 16 KiB limit on an HTTP/1.1 request head holds however the head arrives.

h11 checked it only while a head was incomplete, and hypercorn reads 64 KiB at a
time, so a head that came in one read was taken at up to 64 KiB. The head is the
request line, the header field lines and the empty line, each with its line
ending, as sent; 16384 bytes of it are read, 16385 are refused with a 431.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import h11
import pytest

from emulator.hypercorn_h11 import _HeadLimitedConnection

from .support import parse_http11_response

LIMIT = 16384  # hypercorn's h11_max_incomplete_size, which the emulator keeps


def _head(
    size: int,
    *,
    close: bool = True,
    newline: bytes = b"\r\n",
    line: bytes = b"GET /_emulator/health HTTP/1.1",
    fields: tuple[bytes, ...] = (),
) -> bytes:
    """A request head of exactly ``size`` bytes, padded in a last field ``x-big``."""
    lines = [line, b"host: x", *fields, *([b"connection: close"] if close else [])]
    bare = newline.join([*lines, b"x-big: ", b"", b""])
    return bare.replace(b"x-big: ", b"x-big: " + b"a" * (size - len(bare)))


def test_the_heads_used_here_have_the_sizes_asked_for():
    for size in (LIMIT, LIMIT + 1):
        for newline in (b"\r\n", b"\n"):
            head = _head(size, newline=newline)
            assert len(head) == size and head.endswith(b"aa" + newline * 2)


# -- the h11 connection alone (sans-IO) -------------------------------------


def _read(data: bytes, *, step: int | None = None) -> list[object]:
    """Events a server connection reads from ``data``, fed whole or ``step`` bytes
    at a time, up to the first NEED_DATA or PAUSED once all is fed."""
    connection = _HeadLimitedConnection(h11.SERVER, max_incomplete_event_size=LIMIT)
    events: list[object] = []
    step = step or len(data)
    for start in range(0, len(data), step):
        connection.receive_data(data[start : start + step])
        while (event := connection.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            events.append(event)
    return events


@pytest.mark.parametrize("step", [None, 1, 1000], ids=["whole", "bytewise", "1000-bytes"])
@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_a_head_of_exactly_the_limit_is_read(step, newline):
    (request, end) = _read(_head(LIMIT, newline=newline), step=step)
    assert isinstance(request, h11.Request) and isinstance(end, h11.EndOfMessage)


@pytest.mark.parametrize("step", [None, 1, 1000], ids=["whole", "bytewise", "1000-bytes"])
@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_a_head_one_byte_past_the_limit_is_refused_with_431(step, newline):
    with pytest.raises(h11.RemoteProtocolError) as refused:
        _read(_head(LIMIT + 1, newline=newline), step=step)
    assert refused.value.error_status_hint == 431


def test_a_body_after_the_head_does_not_count():
    line = b"POST /_emulator/rules HTTP/1.1"
    head = _head(LIMIT, line=line, fields=(b"content-length: 4",))
    events = _read(head + b"body")
    assert [type(event) for event in events] == [h11.Request, h11.Data, h11.EndOfMessage]


def test_pipelined_heads_are_each_counted_alone():
    """Two 10,000-byte heads in one buffer: 20,000 bytes buffered, each head under."""
    connection = _HeadLimitedConnection(h11.SERVER, max_incomplete_event_size=LIMIT)
    connection.receive_data(_head(10_000, close=False) + _head(10_000))
    for _ in range(2):
        assert isinstance(connection.next_event(), h11.Request)
        assert isinstance(connection.next_event(), h11.EndOfMessage)
        connection.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
        connection.send(h11.EndOfMessage())
        if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            connection.start_next_cycle()


# -- a real server -----------------------------------------------------------


def _send(sock: socket.socket, pieces: list[bytes]) -> None:
    """Send ``pieces`` one write each."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for number, piece in enumerate(pieces):
        if number:
            time.sleep(0.005)  # so the server likely reads the pieces apart
        sock.sendall(piece)


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _exchange(port: int, pieces: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send ``pieces`` and read the response until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        _send(sock, pieces)
        data = _until_closed(sock)
    return parse_http11_response(data)


def _in_pieces(data: bytes, size: int = 1024) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def _split_before_last_byte(data: bytes) -> list[bytes]:
    """All of the head but its last byte (as much as h11 lets wait), then that byte."""
    return [data[:-1], data[-1:]]


SENDINGS = {
    "one-write": lambda data: [data],
    "1024-byte-pieces": _in_pieces,
    "then-the-last-byte": _split_before_last_byte,
}


@pytest.mark.parametrize("send", SENDINGS.values(), ids=SENDINGS.keys())
def test_a_head_one_byte_past_the_limit_gets_the_431_however_it_arrives(emulator, send):
    status, fields, body = _exchange(emulator.h2c_port, send(_head(LIMIT + 1)))
    assert status == 431
    assert fields["x-amzn-errortype"] == "ValidationException"
    assert fields["content-type"] == "application/json"
    assert fields["connection"] == "close"  # and _exchange read until the server closed
    assert fields["x-amzn-request-id"]
    message = json.loads(body)["message"]
    assert f"({LIMIT} bytes)" in message and "aaaa" not in message
    # The server serves on.
    with urllib.request.urlopen(f"{emulator.h2c_url}/_emulator/health", timeout=10) as response:
        assert response.status == 200


@pytest.mark.parametrize("send", SENDINGS.values(), ids=SENDINGS.keys())
def test_a_head_of_exactly_the_limit_is_served_however_it_arrives(emulator, send):
    status, fields, body = _exchange(emulator.h2c_port, send(_head(LIMIT)))
    assert status == 200
    assert json.loads(body)["status"] == "ready"


def test_pipelined_heads_under_the_limit_are_served_though_read_together(emulator):
    """Two 10,000-byte requests in one write: the limit is on each head, not the read."""
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        sock.sendall(_head(10_000, close=False) + _head(10_000))
        data = _until_closed(sock)
    assert data.count(b"HTTP/1.1 200 ") == 2 and b"HTTP/1.1 431" not in data


def _response(client: h11.Connection, sock: socket.socket) -> h11.Response:
    """Read one response with ``client``; return its head once its body is read."""
    response = None
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            response = event
    assert response is not None
    return response


def test_a_head_past_the_limit_on_a_kept_alive_connection_gets_the_431(emulator):
    """The limit holds for each request of a connection, not just its first."""
    client = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", emulator.h2c_port), timeout=10) as sock:
        for size, status in [(LIMIT, 200), (LIMIT + 1, 431)]:
            if client.our_state is h11.DONE:
                client.start_next_cycle()
            x_big = "a" * (size - len(_head(0, close=False)))  # _head(0): no padding
            request = h11.Request(
                method="GET", target="/_emulator/health", headers=[("host", "x"), ("x-big", x_big)]
            )
            head = client.send(request)
            assert head == _head(size, close=False)
            sock.sendall(head + client.send(h11.EndOfMessage()))
            assert _response(client, sock).status_code == status
        assert sock.recv(1) == b""  # the server closed the connection


@pytest.mark.parametrize("path", ["/_emulator/rules", "/domain"])
def test_a_malformed_chunked_body_is_a_400_and_no_error_in_the_log(emulator, caplog, path):
    """The 400 is HTTP/1.1's; the app reading the body then finds it gone, which is
    no error of the server's (it logged a ClientDisconnect traceback at ERROR)."""
    port = int(emulator.h2c_url.rsplit(":", 1)[1])
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request = head.encode() + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n"
    with caplog.at_level("WARNING"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            answer = b""
            while data := sock.recv(65536):
                answer += data
        status, _, body = parse_http11_response(answer)
        time.sleep(0.3)  # the app's part runs after the answer
    assert status == 400
    assert b"chunked encoding is malformed" in body
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
