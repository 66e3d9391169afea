"""Chaos from rules at the wire: delays, dribbled output, and trouble at an audio time.

The stream adapter owns one :class:`ChaosRunner` per stream; without a chaos rule
the runner does nothing beyond one plain write per batch. Random jitter comes
from a generator seeded by (``--seed``, sessionId) (:func:`emulator.ids.session_rng`),
so a run repeats exactly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from .eventstream import Message, encode_message
from .extensions import CONNECTION_EXTENSION, ConnectionControlLike, Scope, Send
from .ids import session_rng
from .rules import Chaos

__all__ = ["ChaosRunner", "malformed_frame", "paced"]


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


def paced(chaos: Chaos | None) -> bool:
    """Whether ``chaos`` sends output events one at a time, with pauses."""
    return chaos is not None and bool(chaos.slow or chaos.delay or chaos.jitter)


class ChaosRunner:
    """Applies one rule's :class:`~emulator.rules.Chaos` (or none) to one stream."""

    def __init__(
        self,
        chaos: Chaos | None,
        *,
        seed: int,
        session_id: str,
        scope: Scope,
        on_sent: list[Callable[[], object]] | None = None,
        resumed_at: float | None = None,
    ) -> None:
        self.chaos = chaos
        self._scope = scope
        #: For paced output: one callable per chunk queued, in step with the
        #: chunks given to :meth:`write`, called once its chunk is sent.
        self.on_sent = on_sent
        #: The :attr:`on_sent` callables of the chunks dropped unsent (see :meth:`write`).
        self.unsent: list[Callable[[], object]] = []
        # Seeded only for a rule with jitter: seeding from a string hashes it,
        # which a burst of streams opening at once paid for nothing.
        self._random = (
            session_rng(seed, session_id, "chaos") if chaos is not None and chaos.jitter else None
        )
        # A stream resuming the session at ``resumed_at`` seconds of audio does
        # not replay what an earlier stream reached.
        self._pending = chaos.ahead(resumed_at) if chaos is not None else []
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

    @property
    def paced(self) -> bool:
        """Whether :meth:`write` sends events one at a time, with pauses."""
        return paced(self.chaos)

    def _control(self) -> ConnectionControlLike | None:
        """The stream's HTTP/2 connection control; None over HTTP/1.1 or another server."""
        control: ConnectionControlLike | None = self._scope.get("extensions", {}).get(
            CONNECTION_EXTENSION
        )
        return control

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds, or until the stream closes if that comes first:
        a delay of an hour must not hold a session open after its client has gone.
        False when the stream closed."""
        control = self._control()
        if control is None:  # HTTP/1.1, or another server
            await asyncio.sleep(delay)
            return True
        try:
            async with asyncio.timeout(delay):
                await control.wait_closed()
        except TimeoutError:
            return True
        return False

    async def write(self, send: Send, chunks: list[bytes]) -> None:
        """Send ``chunks`` (encoded output events) with the rule's pacing, then clear them.

        Paced, each chunk's :attr:`on_sent` callable runs once the chunk is sent;
        the chunks left when the stream closes during a pause, or when a send is
        cut off (the client took no output for ``--idle-timeout``, or the task
        was cancelled), are dropped unsent, their callables not run but kept in
        :attr:`unsent`: they never reached the client, and a resumed stream may
        send them again.
        """
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
        hooks: list[Callable[[], object]] = []
        if self.on_sent is not None:
            hooks = list(self.on_sent)
            self.on_sent.clear()
        sent = 0
        try:
            for index, chunk in enumerate(pending):
                # Every event waits its turn, so none rides in another's DATA frame.
                delay = (self._delay() if index == 0 else 0.0) + chaos.slow
                if delay and not await self._sleep(delay):
                    return  # the stream closed: nothing more reaches the client
                # A send cut off midway (by a time-out's cancellation) counts as
                # not sent: a client that takes no output has not taken it.
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent = index + 1
                if index < len(hooks):
                    hooks[index]()
        finally:
            self.unsent += hooks[sent:]

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
        control = self._control()
        if control is None:
            return False
        await control.goaway()
        return True

    async def close_connection(self) -> bool:
        """Close the TCP connection; False when the transport cannot."""
        control = self._control()
        if control is None:
            return False
        await control.close()
        return True
