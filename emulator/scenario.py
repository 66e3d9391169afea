"""Scenario data: what a session will say, and when it will fail.

A scenario is pure data (moto's fixtures): a list of transcript segments placed
on the audio clock and a list of faults placed on the same clock. The session
state machine (:mod:`emulator.session`) replays it; this module only describes
and validates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Segment", "Fault", "Scenario", "FAULT_EXCEPTIONS"]

#: In-stream exceptions a fault may raise: the output-stream union members.
FAULT_EXCEPTIONS = ("validationException", "internalFailureException")


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    """One utterance: ``content`` spoken on ``channel`` from ``begin`` to ``end`` seconds.

    ``partials`` partial results precede the final one.
    """

    channel: int = 0
    begin: float
    end: float
    content: str
    partials: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Fault:
    """At audio time ``at``: raise ``exception`` in-stream, or reset the stream."""

    at: float
    exception: str | None = None
    message: str = ""
    disconnect: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Scenario:
    name: str
    segments: tuple[Segment, ...] = ()
    faults: tuple[Fault, ...] = field(default=())
