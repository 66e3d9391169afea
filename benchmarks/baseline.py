"""The bare baseline: the cheapest app that still speaks the streaming route.

It splits the request body into frames by their 4-byte length prefix (no CRC,
no headers, no JSON, no base64) and answers one pre-encoded ``transcriptEvent``
per 10 frames, sending its response headers before the body ends, as the
emulator does. Anything else gets a tiny JSON answer (``/_emulator/health``
included, so start-up checks work on both servers).

It runs under the emulator's own start-up code, :func:`emulator.server.run`,
with only the app swapped (``emulator.server.create_app`` is looked up at call
time), so the hypercorn configuration (fd binds, TLS material,
``h2_max_concurrent_streams``, the patched HTTP/2 protocol of
:mod:`emulator.hypercorn_h2`, timeouts, logging) is the emulator's by
construction, including any later change to it.

Usage: ``python -m benchmarks.baseline`` with the emulator's options.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["FRAMES_PER_EVENT", "canned_event", "baseline_app", "main"]

#: The baseline answers one transcript event per this many request frames.
FRAMES_PER_EVENT = 10

_STREAM_PATH = "/medical-scribe-stream/"
_EVENTSTREAM = b"application/vnd.amazon.eventstream"
_HEALTH = b'{"status":"ready","server":"baseline"}'

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def canned_event() -> bytes:
    """The one final ``transcriptEvent`` the baseline repeats, in the emulator's encoding."""
    from emulator.events import TranscriptResult, encode_output

    return encode_output(
        TranscriptResult(
            segment_id="00000000-0000-4000-8000-000000000000",
            begin=0.1,
            end=0.9,
            is_partial=False,
            content="Segment 0: the patient reports a mild cough for about ten days.",
        )
    )


def baseline_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Return the baseline ASGI app."""
    event = canned_event()
    # The server's collector runs its full collections when no stream is open
    # (emulator.collector); it reads this count as it reads the emulator's.
    streams = _OpenStreams()

    async def stream(receive: Receive, send: Send) -> None:
        streams.active += 1
        try:
            await _stream(receive, send)
        finally:
            streams.active -= 1

    async def _stream(receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", _EVENTSTREAM)],
            }
        )
        buffer = bytearray()
        frames = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            buffer += message.get("body", b"")
            pos, size, answers = 0, len(buffer), 0
            while size - pos >= 4:
                total = int.from_bytes(buffer[pos : pos + 4], "big")
                if total < 16 or size - pos < total:
                    break
                pos += total
                frames += 1
                if frames % FRAMES_PER_EVENT == 0:
                    answers += 1
            if pos:
                del buffer[:pos]
            if answers:
                await send(
                    {"type": "http.response.body", "body": event * answers, "more_body": True}
                )
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] == "POST" and scope["path"] == _STREAM_PATH:
            await stream(receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_HEALTH)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _HEALTH})

    app.backend = streams  # type: ignore[attr-defined]
    return app


class _OpenStreams:
    """The baseline's count of open streams, as ``Backend.active`` is the emulator's."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0


def main(argv: list[str] | None = None) -> int:
    """Serve the baseline with the emulator's options and start-up; return the exit code."""
    from emulator import server
    from emulator.cli import parse_settings

    _command, _args, settings = parse_settings(sys.argv[1:] if argv is None else argv)
    app = baseline_app()
    # serve() calls create_app(backend, ...) through its module globals.
    server.create_app = lambda *args, **kwargs: app  # type: ignore[assignment]
    return server.run(settings)


if __name__ == "__main__":
    sys.exit(main())
