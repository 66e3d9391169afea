"""The ASGI application: the two scribe-stream routes in raw ASGI, the rest through Starlette.

Starlette serves the admin API (``/_emulator/``) and, when the backend has a
resource registry, the control plane of domains, subscriptions and tags.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from .admin import admin_routes
from .backend import Backend, log_refused_call
from .control import (
    MAX_REQUEST_BODY,
    body_too_large,
    control_routes,
    routing_scope,
    service_error_response,
)
from .details import SessionDetailsEndpoint, match_session_path
from .errors import (
    AccessDeniedException,
    ServiceError,
    UnknownOperationException,
    ValidationException,
    http_error,
)
from .extensions import Message, Receive, Scope, Send
from .ids import new_request_id, request_id_headers
from .logs import get_logger
from .quotas import Quotas
from .requestbody import bounded_receive, declared_size, unfinished_body
from .sigv4 import CredentialStore, verify_request
from .stream import StreamEndpoint, error_response

log = get_logger("medscribe.admin")

__all__ = ["create_app", "STREAM_PATH"]

#: The model's HTTP binding of StartMedicalScribeListeningSession.
STREAM_PATH = "/medical-scribe-stream/"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    path = request.url.path
    if exc.status_code == 404:
        message = f"no route for {request.method} {path}"
        bare = path.rstrip("/")
        if path.endswith("/") and (_routed(request, bare) or match_session_path({"path": bare})):
            message += f" (did you mean {bare}, without the trailing slash?)"
        elif path + "/" == STREAM_PATH:
            message += f" (did you mean {STREAM_PATH}, with the trailing slash?)"
    headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        message = f"{request.method} is not allowed on {path}; it takes {', '.join(allowed)}"
        if path.endswith("/") and _routed(request, path.rstrip("/"), request.method):
            # POST /domain/: CreateDomain with a stray slash, not a method GetDomain lacks.
            message += (
                f" (did you mean {request.method} {path.rstrip('/')}, without the trailing slash?)"
            )
        # Starlette's names the methods of the first route on the path only.
        headers["allow"] = ", ".join(allowed)
    if exc.status_code in (404, 405) and not path.startswith("/_emulator/"):
        # The service's own paths answer in its error shape: a request that names no
        # operation is one the SDKs and boto3 report by this code.
        return service_error_response(
            UnknownOperationException(message), status=exc.status_code, headers=headers
        )
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path, in a fixed order."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    return sorted(methods, key=lambda name: (order.index(name) if name in order else 99, name))


def _routed(request: Request, path: str, method: str | None = None) -> bool:
    """Whether some route of the app serves ``path`` (with ``method``, or any)."""
    scope = {**request.scope, "path": path}
    wanted: tuple[Match, ...]
    if method is not None:
        scope["method"] = method
        wanted = (Match.FULL,)
    else:
        wanted = (Match.FULL, Match.PARTIAL)
    return any(route.matches(scope)[0] in wanted for route in request.app.router.routes)


def _headless(send: Send) -> Send:
    """``send`` for a HEAD request: the GET's status and headers, its body dropped."""

    async def headless(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return headless


async def _not_allowed(send: Send, scope: Scope, allowed: str, operation: str) -> None:
    """A 405 for a method other than ``allowed`` on ``operation``'s path (one the
    app answers itself, not a Starlette route)."""
    message = (
        f"{scope['method']} is not allowed on {scope['path']}; it takes {allowed} ({operation})"
    )
    # Both request-id headers, as the session path's GET and HEAD answers carry (details.py).
    extra = [(b"allow", allowed.encode()), *request_id_headers(new_request_id())]
    status, headers, body = http_error(
        UnknownOperationException(message), status=405, headers=extra
    )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


#: Admin paths open without the token: the container healthcheck and the CA
#: certificate, which is public by nature.
_OPEN_PATHS = frozenset({"/_emulator/health", "/_emulator/ca.pem"})


def _needs_token(scope: Scope) -> bool:
    path = scope.get("path", "")
    return scope["type"] == "http" and path.startswith("/_emulator/") and path not in _OPEN_PATHS


def _token_problem(scope: Scope, expected: bytes) -> str | None:
    """Why the request's ``Authorization`` does not carry the admin token, or None.

    The scheme name is case-insensitive (RFC 9110 §11.1), the token compared in
    constant time.
    """
    import hmac

    given = dict(scope["headers"]).get(b"authorization")
    if given is None:
        return "the admin API needs 'Authorization: Bearer <token>' (--admin-token)"
    scheme, _, token = given.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return (
            "the admin API takes 'Authorization: Bearer <token>' (--admin-token), not that scheme"
        )
    if not hmac.compare_digest(token.strip(), expected):
        return "the admin token given is not the one the emulator was started with (--admin-token)"
    return None


async def _unauthorized(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    response = JSONResponse(
        {"message": message},
        status_code=401,
        headers={"www-authenticate": "Bearer"},
    )
    await response(scope, receive, send)


#: Methods a web page can send another site without a CORS preflight's consent
#: being needed for the request to take effect.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _foreign_origin(scope: Scope) -> str | None:
    """The ``Origin`` of a browser request from another site, or None.

    A page a developer visits can POST to ``http://127.0.0.1:8080`` with a form's or
    text's content type, which needs no preflight: without this check it could
    add rules or reset the emulator. No AWS SDK or test client sends ``Origin``
    outside a browser, and a page of the emulator's own host and port has the same
    origin (this emulator serves no pages, so none needs more).
    """
    headers = dict(scope["headers"])
    origin = headers.get(b"origin")
    if origin is None:
        return None
    host = headers.get(b"host") or headers.get(b":authority") or b""
    authority = origin.partition(b"://")[2]
    if authority and authority.lower() == host.lower():
        return None
    return origin.decode("latin-1")


async def _cross_site(scope: Scope, receive: Receive, send: Send, origin: str) -> None:
    message = (
        f"a request from a web page of another origin ({origin[:100]}) is refused: "
        f"{scope['method']} {scope['path']} changes the emulator's state, and a page any "
        "site serves could send it (send it without an Origin header)"
    )
    if scope["path"].startswith("/_emulator/"):
        await JSONResponse({"message": message}, status_code=403)(scope, receive, send)
    else:
        await error_response(send, AccessDeniedException(message), request_id=new_request_id())


async def _signed(
    scope: Scope, receive: Receive, send: Send, credentials: CredentialStore
) -> Receive | None:
    """Check the SigV4 signature of a request to the service's other operations
    (the control plane): its whole body is read first, since the signature
    covers its hash. Returns a ``receive`` that gives the body again, or None
    when the request was refused (a 401 ``AccessDeniedException``, or a 400 for
    a body too large to read) or its client went away.
    """
    declared = declared_size(dict(scope["headers"]).get(b"content-length", b"").decode("latin-1"))
    if declared is not None and declared > MAX_REQUEST_BODY:
        # Refused before a byte is read: a client sending `Expect: 100-continue`
        # (curl, past 1 MiB) is answered without uploading the body.
        await error_response(send, body_too_large(), request_id=new_request_id())
        return None
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Answered, in case the client is there to read it (a dropped answer else).
            error = ValidationException(unfinished_body(scope))
            await error_response(send, error, request_id=new_request_id())
            return None
        body += message.get("body", b"")
        if len(body) > MAX_REQUEST_BODY:
            await error_response(send, body_too_large(), request_id=new_request_id())
            return None
        if not message.get("more_body", False):
            break
    try:
        verify_request(
            method=scope["method"],
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            query=scope["query_string"].decode("latin-1"),
            headers=scope["headers"],
            store=credentials,
            now=datetime.now(UTC),
            body=bytes(body),
        )
    except ServiceError as refused:
        request_id = new_request_id()
        log_refused_call(scope, refused, request_id=request_id)
        await error_response(send, refused, request_id=request_id)
        return None
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()  # the disconnect, when it comes
        replayed = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    return replay


def create_app(
    backend: Backend,
    *,
    ca_file: Path | None = None,
    endpoints: dict[str, str] | None = None,
    credentials: CredentialStore | None = None,
    idle_timeout: float = 0.0,
    admin_token: str | None = None,
    quotas: Quotas | None = None,
) -> Any:
    """Return the emulator's ASGI app bound to ``backend``.

    With ``credentials``, stream requests and their events, and requests to the
    service's other operations (the control plane), must be SigV4-signed by one
    of them; the admin API (``/_emulator/``) keeps its own token.
    """
    routes = admin_routes(backend, ca_file=ca_file, endpoints=endpoints or {}, quotas=quotas)
    if backend.resources is not None:
        routes += control_routes(backend.resources)
    admin = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    # A trailing slash answered with a 307 redirect and an empty body: a client
    # of an API wants the 404 saying what it got wrong (see _http_error).
    admin.router.redirect_slashes = False
    stream = StreamEndpoint(
        backend,
        credentials=credentials,
        idle_timeout=idle_timeout,
        quotas=quotas,
        https_url=(endpoints or {}).get("https"),
    )
    expected = None if admin_token is None else admin_token.encode()
    details = SessionDetailsEndpoint(backend, quotas=quotas)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == STREAM_PATH:
                await stream(scope, receive, send)
                return
            if method not in _SAFE_METHODS and (origin := _foreign_origin(scope)) is not None:
                await _cross_site(scope, receive, send, origin)
                return
            if idle_timeout > 0:
                receive = bounded_receive(scope, receive, idle_timeout)
            if credentials is not None and not path.startswith("/_emulator/"):
                verified = await _signed(scope, receive, send, credentials)
                if verified is None:
                    return
                receive = verified
            if (ids := match_session_path(scope)) is not None:
                if method == "GET":
                    await details(scope, receive, send, ids=ids)
                elif method == "HEAD":
                    await details(scope, receive, _headless(send), ids=ids)
                else:
                    await _not_allowed(send, scope, "GET, HEAD", "GetMedicalScribeListeningSession")
                return
            if path == STREAM_PATH:  # not a POST: that went to the stream above
                answer = _headless(send) if method == "HEAD" else send
                await _not_allowed(answer, scope, "POST", "StartMedicalScribeListeningSession")
                return
            if not path.startswith("/_emulator/"):
                scope = routing_scope(scope)
        if expected is not None and _needs_token(scope):
            problem = _token_problem(scope, expected)
            if problem is not None:
                await _unauthorized(scope, receive, send, problem)
                return
        try:
            await admin(scope, receive, send)
        except ClientDisconnect:
            # The client went while its body was read, or HTTP/1.1 refused its
            # body (a malformed chunked encoding: the 400 is sent already).
            # Nobody to answer; not an error of the server's.
            log.debug("%s %s: the client's body ended early", scope.get("method"), scope["path"])

    app.backend = backend  # type: ignore[attr-defined]
    return app
