"""A request body that stops arriving, or ends early, outside the scribe stream.

The admin API and the control plane read a whole body before they answer. A
client that sends a head and part of a body, then nothing, held its connection
(and a task) for the life of the server; one that closed its side early got a
bare 500 or an empty 400. :func:`bounded_receive` stops waiting after
``--idle-timeout`` seconds without a byte of the body, or once the body has taken
twice that plus a second for each 64 KiB of it (a byte every few seconds kept a
request open for hours), and :func:`unfinished_body` says, for the error
the handler then sends, which of these happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .extensions import Message, Receive, Scope
from .logs import get_logger

__all__ = [
    "BODY_BYTES_A_SECOND",
    "body_timed_out",
    "bounded_receive",
    "declared_size",
    "read_limited",
    "unfinished_body",
]

#: The scope key of what :func:`bounded_receive` notes when it gives up waiting: a
#: dict, shared by the copies of the scope made for routing.
_NOTE = "medscribe.request_body"

log = get_logger("medscribe.server")

#: The slowest a body may come once its ``seconds`` are spent: each of these many
#: bytes received earns it one second more (a 4 MiB admin body, the largest taken,
#: has 64 s more).
BODY_BYTES_A_SECOND = 64 * 1024


def bounded_receive(scope: Scope, receive: Receive, seconds: float) -> Receive:
    """``receive``, giving ``http.disconnect`` when the body's next part has not come
    within ``seconds``, or the body as a whole has taken longer than twice
    ``seconds`` plus one for each :data:`BODY_BYTES_A_SECOND` of it (noted in
    ``scope`` for :func:`unfinished_body`). Twice: a body that stops after a
    part is told it stopped (the wait for its next part ends first), one still
    coming after the idle timeout's length is told it is too slow.

    Only the body is bounded: once its last part came, ``receive`` waits as long as
    it must (a streamed response listens for the client's disconnect through it).
    """
    if seconds <= 0:
        return receive
    whole = False
    note: dict[str, float] = scope.setdefault(_NOTE, {})
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = 0

    async def bounded() -> Message:
        nonlocal whole, received
        if whole:
            return await receive()
        now = loop.time()
        left = started + 2 * seconds + received / BODY_BYTES_A_SECOND - now
        try:
            message = await asyncio.wait_for(receive(), min(seconds, max(left, 0.0)))
        except TimeoutError:
            whole = True
            note["timed_out_after"] = seconds
            if left < seconds:  # the whole body's time ran out, not one wait's
                note["slow_after"] = loop.time() - started
                note["received"] = received
            # The client (a shared emulator's other team, say) is told; so is
            # whoever runs the emulator, who sees its connection held up.
            client = scope.get("client") or ("?", 0)
            log.info(
                "%s %s from %s:%s: %s",
                scope.get("method"),
                scope.get("path"),
                client[0],
                client[1],
                unfinished_body(scope),
            )
            return {"type": "http.disconnect"}
        if message["type"] != "http.request" or not message.get("more_body", False):
            whole = True
        else:
            received += len(message.get("body", b""))
        return message

    return bounded


async def read_limited(request: Any, limit: int) -> tuple[bytes, int]:
    """Read a starlette ``request``'s body up to ``limit`` bytes: its first ``limit``
    bytes and how many came, which is over ``limit`` (the caller refuses the body)
    once one byte more has, or once the ``Content-Length`` says it will, before a
    byte is read. Nothing past the limit is held. Raises what ``request.stream()``
    raises (``ClientDisconnect``).

    The refusal is sent while the client may still be sending: over HTTP/1.1 the
    server reads the rest and drops it before it goes on (see
    :mod:`emulator.hypercorn_h11`), so that the client reads the answer, over
    HTTP/2 the stream's rest is drained (:mod:`emulator.hypercorn_h2`).
    """
    size = declared_size(request.headers.get("content-length", ""))
    if size is not None and size > limit:
        return b"", size
    kept = bytearray()
    async for chunk in request.stream():
        kept += chunk
        if len(kept) > limit:
            return bytes(kept[:limit]), len(kept)
    return bytes(kept), len(kept)


def declared_size(content_length: str) -> int | None:
    """The body size a ``Content-Length`` value declares, or None for none given (or
    one that is not a number, which the HTTP layer refuses before the app sees it)."""
    if content_length.isascii() and content_length.isdigit():
        # More digits than int() converts (4,300) is over any limit all the same.
        return int(content_length) if len(content_length) < 19 else 2**63
    return None


def body_timed_out(scope: Mapping[str, Any]) -> bool:
    """Whether :func:`bounded_receive` gave up waiting for the body of ``scope``'s
    request (its client stopped sending)."""
    return scope.get(_NOTE, {}).get("timed_out_after") is not None


def unfinished_body(scope: Mapping[str, Any]) -> str:
    """What was wrong with a request body its handler could not read to its end."""
    note = scope.get(_NOTE, {})
    seconds = note.get("timed_out_after")
    if note.get("slow_after") is not None:
        return (
            f"the request body came too slowly: {int(note['received'])} bytes in "
            f"{note['slow_after']:.0f} s; a body has twice --idle-timeout ({2 * seconds:g} s) "
            f"plus a second for each {BODY_BYTES_A_SECOND // 1024} KiB of it; send the whole "
            "body"
        )
    if seconds is not None:
        return (
            f"the request body stopped arriving: nothing of it came for {seconds:g} s "
            "(--idle-timeout); send the whole body"
        )
    return (
        "the request body ended before it was complete: the client closed its side of "
        "the connection (or reset its stream) before the end of its content-length or "
        "chunked encoding"
    )
