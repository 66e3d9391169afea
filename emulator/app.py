"""The ASGI application: the two scribe-stream routes in raw ASGI, the rest through Starlette.

Starlette serves the admin API (``/_emulator/``) and, when the backend has a
resource registry, the control plane of domains, subscriptions and tags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .admin import admin_routes
from .backend import Backend
from .control import control_routes
from .details import SessionDetailsEndpoint, match_session_path
from .sigv4 import CredentialStore
from .stream import Receive, Scope, Send, StreamEndpoint

__all__ = ["create_app", "STREAM_PATH"]

#: The model's HTTP binding of StartMedicalScribeListeningSession.
STREAM_PATH = "/medical-scribe-stream/"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)


def create_app(
    backend: Backend,
    *,
    ca_file: Path | None = None,
    endpoints: dict[str, str] | None = None,
    credentials: CredentialStore | None = None,
) -> Any:
    """Return the emulator's ASGI app bound to ``backend``.

    With ``credentials``, stream requests and their events must be SigV4-signed
    by one of them.
    """
    routes = admin_routes(backend, ca_file=ca_file, endpoints=endpoints or {})
    if backend.resources is not None:
        routes += control_routes(backend.resources)
    admin = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    stream = StreamEndpoint(backend, credentials=credentials)
    details = SessionDetailsEndpoint(backend)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == STREAM_PATH:
                await stream(scope, receive, send)
                return
            if method == "GET" and (ids := match_session_path(scope)) is not None:
                await details(scope, receive, send, ids=ids)
                return
        await admin(scope, receive, send)

    app.backend = backend  # type: ignore[attr-defined]
    return app
