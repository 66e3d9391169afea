"""A listening session's life over its streams: statuses, transitions and limits.

Sans-IO. One session, keyed by (domainId, subscriptionId, sessionId), lives
through one or more streams::

    (new) --open--> IN_PROGRESS --complete--> COMPLETED   (END_OF_SESSION)
                        |   ^ --fail--------> FAILED      (an in-stream exception)
                  pause |   | open
                        v   |
                       PAUSED                  (input ended without END_OF_SESSION)

Opening a stream on a session in any other state is refused with a
:class:`~emulator.errors.ValidationException` naming the rule, as are streams
that would break the service's limits (:class:`SessionLimits`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ValidationException
from .scenario import MAX_AUDIO_SECONDS
from .session import SessionState, describe_duration

__all__ = [
    "RESUME_WINDOW",
    "StreamStatus",
    "LIFECYCLE",
    "SessionLimits",
    "transition",
    "stream_outcome",
    "check_resume",
]


class StreamStatus(enum.StrEnum):
    """The model's MedicalScribeStreamStatus."""

    IN_PROGRESS = "IN_PROGRESS"
    PAUSED = "PAUSED"
    FAILED = "FAILED"
    COMPLETED = "COMPLETED"


_T = StreamStatus
#: (status, or None for a session not seen before; what happens) -> next status.
LIFECYCLE: dict[tuple[StreamStatus | None, str], StreamStatus] = {
    (None, "open"): _T.IN_PROGRESS,
    (_T.PAUSED, "open"): _T.IN_PROGRESS,
    (_T.IN_PROGRESS, "pause"): _T.PAUSED,
    (_T.IN_PROGRESS, "complete"): _T.COMPLETED,
    (_T.IN_PROGRESS, "fail"): _T.FAILED,
}

_REFUSALS: dict[tuple[StreamStatus, str], str] = {
    (_T.IN_PROGRESS, "open"): (
        "session {session_id} already has a stream in progress: a listening session "
        "takes one stream at a time. That stream ends when its input is closed, when its "
        "connection closes or resets it, or after the emulator's --idle-timeout without "
        "input (when one is set); a session it leaves PAUSED then resumes with a new stream"
    ),
    (_T.COMPLETED, "open"): (
        "session {session_id} is COMPLETED: a session that ended with END_OF_SESSION "
        "cannot be resumed"
    ),
    (_T.FAILED, "open"): "session {session_id} is FAILED: a failed session cannot be resumed",
}


#: The service's window for resuming a paused session: 5 hours after its creation.
RESUME_WINDOW = 5 * 3600.0


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionLimits:
    """The service's limits on resuming: seconds after creation, and total audio seconds."""

    resume_window: float = RESUME_WINDOW
    max_audio_seconds: float = MAX_AUDIO_SECONDS


def transition(status: StreamStatus | None, event: str, *, session_id: str) -> StreamStatus:
    """Return the status after ``event`` ("open", "pause", "complete" or "fail").

    Raises :class:`ValidationException` when a stream may not open on a session
    in ``status``, and :class:`ValueError` for any other pair not in
    :data:`LIFECYCLE` (a bug of the caller).
    """
    next_status = LIFECYCLE.get((status, event))
    if next_status is not None:
        return next_status
    if status is not None and (status, event) in _REFUSALS:
        raise ValidationException(_REFUSALS[(status, event)].format(session_id=session_id))
    raise ValueError(f"no lifecycle transition from {status} on {event!r}")


def stream_outcome(state: SessionState) -> str:
    """Return the lifecycle event a stream that ended in ``state`` is."""
    if state is SessionState.COMPLETED:
        return "complete"
    if state is SessionState.FAILED:
        return "fail"
    # PAUSED, or a stream cut before it could say more: the client may come back.
    return "pause"


def check_resume(
    *,
    session_id: str,
    created_at: float,
    audio_seconds: float,
    now: float,
    limits: SessionLimits,
) -> None:
    """Check the limits a stream resuming a paused session must respect.

    Returns nothing; raises :class:`ValidationException` when the session was
    created more than ``limits.resume_window`` seconds ago or already carries
    more than ``limits.max_audio_seconds`` of audio. A session at exactly the
    limit may still be resumed, to end it (END_OF_SESSION) and get its note.
    """
    age = now - created_at
    if age > limits.resume_window:
        raise ValidationException(
            f"session {session_id} was created {_hours(age)} ago "
            f"({_past_window(age - limits.resume_window)} past the window): a paused session "
            f"can be resumed only within {_hours(limits.resume_window)} of its creation"
            + ("" if limits.resume_window == RESUME_WINDOW else " (the emulator's --resume-window)")
        )
    if audio_seconds > limits.max_audio_seconds:
        raise ValidationException(
            f"session {session_id} already has {audio_seconds:.3f} s of audio: a listening "
            f"session may carry at most {describe_duration(limits.max_audio_seconds)} of audio "
            "over all its streams"
        )


def _past_window(seconds: float) -> str:
    """How far past the window: whole seconds, or milliseconds under a second (a
    window of 1 s, passed by 0.2 s, read "0 s past the window")."""
    return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _hours(seconds: float) -> str:
    """``18000`` -> ``"5 hours"``; ``21630`` -> ``"6.01 hours"``; under an hour in seconds."""
    if seconds < 3600:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{round(seconds, 3):g} s"
    hours = seconds / 3600
    return f"{hours:.0f} hours" if hours == int(hours) else f"{hours:.2f} hours"
