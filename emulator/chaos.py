"""Chaos from rules at the wire: delays, dribbled output, and trouble at an audio time.

The stream adapter owns one :class:`ChaosRunner` per stream; without a chaos rule
the runner does nothing beyond one plain write per batch. Random jitter comes
from a generator seeded by (``--seed``, sessionId), so a run repeats exactly.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .eventstream import Message, encode_message
from .hypercorn_h2 import CONNECTION_EXTENSION
from .rules import Chaos

__all__ = ["ChaosRunner", "malformed_frame"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def malformed_frame() -> bytes:
    """A transcript event whose message CRC is wrong: for testing a client's decoder."""
    frame = bytearray(
        encode_message(
            Message(
                headers={
                    ":message-type": "event",
                    ":event-type": "transcriptEvent",
                    ":content-type": "application/json",
                },
                payload=json.dumps({"transcriptSegment": {"content": "corrupt"}}).encode(),
            )
        )
    )
    frame[-1] ^= 0xFF
    return bytes(frame)


class ChaosRunner:
    """Applies one rule's :class:`~emulator.rules.Chaos` (or none) to one stream."""

    def __init__(
        self, chaos: Chaos | None, *, seed: int, session_id: str, scope: MutableMapping[str, Any]
    ) -> None:
        self.chaos = chaos
        self._scope = scope
        # Seeded only for a rule with jitter: seeding from a string hashes it,
        # which a burst of streams opening at once paid for nothing.
        self._random = (
            random.Random(f"{seed}:{session_id}") if chaos is not None and chaos.jitter else None
        )
        self._pending: list[tuple[float, str]] = []
        if chaos is not None:
            for at, kind in (
                (chaos.disconnect_at, f"disconnect-{chaos.disconnect_mode}"),
                (chaos.goaway_at, "goaway"),
                (chaos.malformed_at, "malformed"),
            ):
                if at is not None:
                    self._pending.append((at, kind))
            self._pending.sort()
        #: Whether a disconnect, GOAWAY or malformed frame still waits for the clock
        #: (see :meth:`due`): a cheap test for the per-event path.
        self.pending = bool(self._pending)

    def _delay(self) -> float:
        chaos = self.chaos
        if chaos is None or not (chaos.delay or chaos.jitter):
            return 0.0
        if self._random is None:  # no jitter
            return chaos.delay
        return chaos.delay + self._random.uniform(0, chaos.jitter)

    async def before_response(self) -> None:
        delay = self._delay()
        if delay:
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until the stream closes if that comes first:
        a delay of an hour must not hold a session open after its client has gone."""
        control = self._scope.get("extensions", {}).get(CONNECTION_EXTENSION)
        if control is None:  # HTTP/1.1, or another server
            await asyncio.sleep(delay)
            return
        try:
            async with asyncio.timeout(delay):
                await control.wait_closed()
        except TimeoutError:
            pass

    async def write(self, send: Send, chunks: list[bytes]) -> None:
        """Send ``chunks`` (encoded output events) with the rule's pacing, then clear them."""
        if not chunks:
            return
        chaos = self.chaos
        if chaos is None or not (chaos.slow or chaos.delay or chaos.jitter):
            body = b"".join(chunks)
            chunks.clear()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            return
        pending = list(chunks)
        chunks.clear()
        for index, chunk in enumerate(pending):
            # Every event waits its turn, so none rides in another's DATA frame.
            delay = (self._delay() if index == 0 else 0.0) + chaos.slow
            if delay:
                await self._sleep(delay)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    def due(self, audio_seconds: float) -> str | None:
        """The next trouble the audio clock has reached, once: ``disconnect-reset``,
        ``disconnect-close``, ``goaway`` or ``malformed``."""
        if self._pending and self._pending[0][0] <= audio_seconds:
            kind = self._pending.pop(0)[1]
            self.pending = bool(self._pending)
            return kind
        return None

    async def goaway(self) -> bool:
        """Send GOAWAY on the connection; False when the transport cannot (HTTP/1.1)."""
        control = self._scope.get("extensions", {}).get(CONNECTION_EXTENSION)
        if control is None:
            return False
        await control.goaway()
        return True

    async def close_connection(self) -> bool:
        """Close the TCP connection; False when the transport cannot."""
        control = self._scope.get("extensions", {}).get(CONNECTION_EXTENSION)
        if control is None:
            return False
        await control.close()
        return True
