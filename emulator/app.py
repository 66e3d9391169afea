"""The ASGI application: the streaming route in raw ASGI, everything else through Starlette."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .admin import admin_routes
from .backend import Backend
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
    backend: Backend, *, ca_file: Path | None = None, endpoints: dict[str, str] | None = None
) -> Any:
    """Return the emulator's ASGI app bound to ``backend``."""
    routes = admin_routes(backend, ca_file=ca_file, endpoints=endpoints or {})
    admin = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    stream = StreamEndpoint(backend)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == STREAM_PATH:
            await stream(scope, receive, send)
            return
        await admin(scope, receive, send)

    app.backend = backend  # type: ignore[attr-defined]
    return app
