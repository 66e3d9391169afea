"""What the ASGI adapter and the server agree on: ASGI types and scope extensions.

The stream adapter (:mod:`emulator.stream`, :mod:`emulator.chaos`) and the raw
ASGI routes use these names; the HTTP/2 server (:mod:`emulator.hypercorn_h2`)
provides the concrete classes behind the two extensions. Both import from here,
so the adapter does not import the server layer (hypercorn, h2 and their
patches). A server without the extensions (HTTP/1.1, another ASGI server) puts
neither in ``scope["extensions"]``, and the adapter does without.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

__all__ = [
    "Scope",
    "Receive",
    "Send",
    "Message",
    "CONNECTION_EXTENSION",
    "INLINE_BODY_EXTENSION",
    "MORE_BODIES",
    "InlineBodyLike",
    "ConnectionControlLike",
]

#: An ASGI message, received or sent.
Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The scope extension that carries a :class:`ConnectionControlLike`
#: (:class:`emulator.hypercorn_h2.ConnectionControl`).
CONNECTION_EXTENSION = "medscribe.connection"
#: The scope extension that carries a stream's :class:`InlineBodyLike`
#: (:class:`emulator.hypercorn_h2.InlineBody`).
INLINE_BODY_EXTENSION = "medscribe.inline_body"
#: The key of the list of further bodies in an ``http.request`` message
#: (:attr:`InlineBodyLike.merge`).
MORE_BODIES = "medscribe.more_bodies"


class InlineBodyLike(Protocol):
    """What an app uses of the :data:`INLINE_BODY_EXTENSION`
    (:class:`emulator.hypercorn_h2.InlineBody` documents the contract)."""

    #: Set before awaiting ``receive()``, cleared after: called with each DATA
    #: payload in the connection's task; answers None (not taken), False (taken)
    #: or True (taken, and the app is to be woken).
    handler: Callable[[bytes], bool | None] | None
    #: Whether DATA queued while the app is busy may join the waiting message
    #: (under :data:`MORE_BODIES`).
    merge: bool
    #: Frames output on the stream there and then: True, or False having done nothing.
    send: Callable[[bytes], bool]


class ConnectionControlLike(Protocol):
    """What an app uses of the :data:`CONNECTION_EXTENSION`
    (:class:`emulator.hypercorn_h2.ConnectionControl` documents each method)."""

    async def wait_closed(self) -> None:
        """Return once the stream is closed."""

    async def abort(self) -> None:
        """Reset the stream now, dropping the response bytes not yet sent."""

    def watch_output(self, watch: Any) -> None:
        """Have output the client takes restart ``watch.since`` while ``watch.sending``."""

    async def goaway(self) -> None:
        """Send GOAWAY (NO_ERROR) on the connection."""

    async def close(self) -> None:
        """Close the TCP connection once this stream's output is written."""
