"""A service error becomes wire bytes in one place: :func:`emulator.errors.http_error`.

Its output is pinned here class by class (status, headers, exact body bytes), and
every site that answers in the service's error shape (the stream's ASGI answer,
the control plane's and the app's Starlette ones, the HTTP/1.1 refusals, the
HTTP/2 shutdown answer and the TLS port's cleartext answer) is checked to send
what it returns. In-stream, :func:`emulator.errors.stream_member_of` names the
output-stream member.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import h11
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from emulator import app as app_module
from emulator import errors, hypercorn_h2, hypercorn_h11, hypercorn_tcp
from emulator.control import service_error_response
from emulator.errors import (
    AccessDeniedException,
    FramingError,
    InternalServerException,
    NotEmulatedError,
    ServiceError,
    ValidationException,
    http_error,
    stream_member_of,
)
from emulator.ids import request_id_headers
from emulator.stream import error_response

# Each service error class: its status and x-amzn-errortype, as the model (or, for
# the last three, the REST-JSON protocol and S3) gives them.
SHAPES = {
    "ValidationException": (400, b"ValidationException"),
    "AccessDeniedException": (401, b"AccessDeniedException"),
    "ServiceQuotaExceededException": (402, b"ServiceQuotaExceededException"),
    "ResourceNotFoundException": (404, b"ResourceNotFoundException"),
    "ThrottlingException": (429, b"ThrottlingException"),
    "InternalServerException": (500, b"InternalServerException"),
    "SerializationException": (400, b"SerializationException"),
    "UnknownOperationException": (404, b"UnknownOperationException"),
    "NotEmulatedError": (501, b"NotImplemented"),
}

# Each class's in-stream member: the model's, or validationException where it has
# none (the client's fault), internalFailureException for a bug of ours.
MEMBERS = {
    "ValidationException": "validationException",
    "AccessDeniedException": "validationException",
    "ServiceQuotaExceededException": "validationException",
    "ResourceNotFoundException": "validationException",
    "ThrottlingException": "validationException",
    "InternalServerException": "internalFailureException",
    "SerializationException": "validationException",
    "UnknownOperationException": "validationException",
    "NotEmulatedError": "validationException",
}

RID = "8f0e7c2a-4b1d-4e6f-9a3b-5c7d9e1f2a4b"


def _classes(base: type) -> list[type]:
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, base) and value is not base
    ]


@pytest.mark.parametrize("name", SHAPES)
def test_http_error_is_status_errortype_and_compact_message(name: str) -> None:
    """Status and x-amzn-errortype are the class's; the body is compact JSON."""
    status, code = SHAPES[name]
    assert http_error(getattr(errors, name)("no")) == (
        status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"16"),
            (b"x-amzn-errortype", code),
        ],
        b'{"message":"no"}',
    )


def test_every_service_error_class_is_pinned_here() -> None:
    assert sorted(cls.__name__ for cls in _classes(ServiceError)) == sorted(SHAPES)


def test_http_error_takes_a_status_and_headers_after_its_own() -> None:
    """A 405 UnknownOperationException, an allow and the request ids, in that order."""
    status, headers, body = http_error(
        errors.UnknownOperationException("POST is not allowed on /x; it takes GET"),
        status=405,
        headers=[(b"allow", b"GET"), *request_id_headers(RID)],
    )
    assert status == 405
    assert body == b'{"message":"POST is not allowed on /x; it takes GET"}'
    assert headers == [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-amzn-errortype", b"UnknownOperationException"),
        (b"allow", b"GET"),
        (b"x-amzn-requestid", RID.encode()),
        (b"x-amzn-request-id", RID.encode()),
    ]


def test_http_error_body_is_ascii_whatever_the_message_quotes() -> None:
    """Non-ASCII is escaped by JSON, an undecodable byte's surrogate by the error."""
    body = http_error(ValidationException("Value 'é\udcff' at 'x'"))[2]
    assert body == b"{\"message\":\"Value '\\u00e9\\\\udcff' at 'x'\"}"
    assert json.loads(body) == {"message": "Value 'é\\udcff' at 'x'"}


@pytest.mark.parametrize("name", MEMBERS)
def test_stream_member_of_a_service_error(name: str) -> None:
    assert stream_member_of(getattr(errors, name)("no")) == MEMBERS[name]


@pytest.mark.parametrize("cls", _classes(FramingError), ids=lambda cls: cls.__name__)
def test_a_framing_error_is_a_validation_exception_in_stream(cls: type) -> None:
    assert cls.stream_member == "validationException"
    assert stream_member_of(cls("bad bytes")) == "validationException"


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("x"), errors.ConfigError("x")])
def test_any_other_exception_is_an_internal_failure_in_stream(error: Exception) -> None:
    assert stream_member_of(error) == "internalFailureException"


def test_the_tree_drawing_and_all_name_every_class() -> None:
    """The module docstring draws the whole tree, and ``__all__`` exports it."""
    drawn = (errors.__doc__ or "").split()
    for cls in _classes(errors.EmulatorError) + [errors.EmulatorError]:
        assert cls.__name__ in drawn, cls.__name__
        assert cls.__name__ in errors.__all__, cls.__name__
        assert inspect.getdoc(cls), cls.__name__
    assert "http_error" in errors.__all__ and "stream_member_of" in errors.__all__


# -- every site sends what http_error returns --------------------------------------------


async def _asgi(app: Any, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *bodies = sent
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


def _scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"x")],
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
    }


def _without_request_id(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` less its one ``x-amzn-requestid``, a random UUID."""
    ids = [value for name, value in headers if name == b"x-amzn-requestid"]
    assert len(ids) == 1 and len(ids[0]) == 36
    return [(name, value) for name, value in headers if name != b"x-amzn-requestid"]


async def test_the_stream_endpoint_sends_http_error_with_both_request_ids() -> None:
    error = errors.ThrottlingException("slow down")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await error_response(send, error, request_id=RID)

    answer = await _asgi(app, _scope("POST", "/medical-scribe-stream/"))
    assert answer == http_error(error, headers=request_id_headers(RID))


async def test_the_control_plane_sends_http_error_with_a_request_id() -> None:
    error = errors.ResourceNotFoundException("Domain dom-x not found")
    status, headers, body = await _asgi(service_error_response(error), _scope("GET", "/x"))
    assert (status, _without_request_id(headers), body) == http_error(error)


async def test_an_unknown_path_is_http_errors_unknown_operation() -> None:
    """404 (no route) and 405 (a method its route lacks) outside the admin API."""

    async def only_get(request: Any) -> Any:
        raise AssertionError("not called")

    app = Starlette(
        routes=[Route("/domain", only_get, methods=["GET"])],
        exception_handlers={HTTPException: app_module._http_error},
    )
    status, headers, body = await _asgi(app, _scope("GET", "/nothing"))
    expected = errors.UnknownOperationException("no route for GET /nothing")
    assert (status, _without_request_id(headers), body) == http_error(expected)

    status, headers, body = await _asgi(app, _scope("POST", "/domain"))
    expected = errors.UnknownOperationException(
        "POST is not allowed on /domain; it takes GET, HEAD"
    )
    assert (status, _without_request_id(headers), body) == http_error(
        expected, status=405, headers=[(b"allow", b"GET, HEAD")]
    )


async def test_a_method_the_session_path_lacks_is_http_errors_405() -> None:
    path = "/medical-scribe-stream/domain/d/subscription/s/session/x"

    async def session_path(scope: Any, receive: Any, send: Any) -> None:
        await app_module._not_allowed(send, scope, "GET, HEAD", "GetMedicalScribeListeningSession")

    status, headers, body = await _asgi(session_path, _scope("PUT", path))
    expected = errors.UnknownOperationException(
        f"PUT is not allowed on {path}; it takes GET, HEAD (GetMedicalScribeListeningSession)"
    )
    # Both request-id headers, as the path's GET and HEAD answers carry.
    [request_id] = [value for name, value in headers if name == b"x-amzn-request-id"]
    assert (status, _without_request_id(headers), body) == http_error(
        expected,
        status=405,
        headers=[(b"allow", b"GET, HEAD"), (b"x-amzn-request-id", request_id)],
    )
    assert (b"x-amzn-requestid", request_id) in headers


class _Config:
    h11_max_incomplete_size = 16384

    @staticmethod
    def response_headers(protocol: str) -> list[tuple[bytes, bytes]]:
        return []


class _H11Protocol:
    """What ``_send_error_response`` reads of hypercorn's ``H11Protocol``."""

    def __init__(self) -> None:
        self.connection = h11.Connection(h11.SERVER)
        self.config = _Config()
        self.stream = None
        self.events: list[Any] = []

    async def _send_h11_event(self, event: Any) -> None:
        self.events.append(event)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ValidationException), (431, ValidationException), (501, NotEmulatedError)],
)
async def test_an_http11_refusal_is_http_error(
    status: int, error: type[ServiceError], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hypercorn_h11, "new_request_id", lambda: RID)
    protocol = _H11Protocol()
    await hypercorn_h11._send_error_response(protocol, status)  # type: ignore[arg-type]
    response, data, end = protocol.events
    assert type(end) is h11.EndOfMessage
    message = json.loads(data.data)["message"]
    assert (response.status_code, list(response.headers), data.data) == http_error(
        error(message),
        status=status,
        headers=[*request_id_headers(RID), (b"connection", b"close")],
    )


def test_the_http2_shutdown_answer_is_http_error() -> None:
    assert hypercorn_h2.SHUTDOWN_ERROR == http_error(
        InternalServerException("the emulator stopped before this stream's response started")
    )


def test_the_tls_ports_cleartext_answer_is_http_error() -> None:
    answer = hypercorn_tcp.cleartext_answer("https://localhost:8443", "http://localhost:8080")
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.split(b"\r\n")
    assert status_line == b"HTTP/1.1 400 Bad Request"
    headers = [tuple(field.split(b": ", 1)) for field in fields]
    message = json.loads(body)["message"]
    assert (400, headers, body) == http_error(
        ValidationException(message), headers=[(b"connection", b"close")]
    )


def test_access_denied_has_no_stream_member_of_its_own() -> None:
    """The model's output union has no member for it: a refused event signature
    is reported as the client's fault."""
    assert AccessDeniedException.stream_member is None
    assert stream_member_of(AccessDeniedException("bad signature")) == "validationException"
