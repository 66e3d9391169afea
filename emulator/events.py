"""What a session says back: the output events, as small frozen dataclasses.

The session state machine (:mod:`emulator.session`) emits these through its one
injected ``send``; the ASGI adapter (:mod:`emulator.stream`) turns them into
event-stream bytes with :func:`encode_output`, the single place where output
events become wire messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .eventstream import Message, encode_headers, encode_message, encode_with_headers
from .jsontext import compact_json

__all__ = [
    "TranscriptResult",
    "StreamException",
    "StreamReset",
    "OutputEvent",
    "OUTPUT_EXCEPTIONS",
    "encode_output",
    "transcript_payload",
    "transcript_message",
    "exception_message",
]


#: The output stream's exception members (MedicalScribeOutputStream in the model):
#: what a :class:`StreamException` may carry and a scripted fault may raise
#: (:data:`emulator.scenario.FAULT_EXCEPTIONS` is this tuple).
OUTPUT_EXCEPTIONS = ("validationException", "internalFailureException")


@dataclass(frozen=True, kw_only=True, slots=True)
class TranscriptResult:
    """One ``transcriptEvent``: a partial or final result for a segment."""

    segment_id: str
    begin: float
    end: float
    is_partial: bool
    content: str
    channel_id: str | None = None

    def __post_init__(self) -> None:
        if self.end < self.begin:
            raise ValueError(f"segment {self.segment_id}: end {self.end} before begin {self.begin}")

    def to_json(self) -> dict[str, object]:
        segment: dict[str, object] = {
            "segmentId": self.segment_id,
            "audioBeginOffset": self.begin,
            "audioEndOffset": self.end,
            "isPartial": self.is_partial,
        }
        # The service omits channelId when no channelDefinitions were given.
        if self.channel_id is not None:
            segment["channelId"] = self.channel_id
        segment["content"] = self.content
        return {"transcriptSegment": segment}


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamException:
    """An in-stream exception (``validationException`` or ``internalFailureException``).

    The response ends right after it. Raises :class:`ValueError` for a
    ``member`` not in :data:`OUTPUT_EXCEPTIONS`.
    """

    member: str
    message: str

    def __post_init__(self) -> None:
        if self.member not in OUTPUT_EXCEPTIONS:
            raise ValueError(f"{self.member!r} is not an output-stream exception member")


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamReset:
    """Abandon the HTTP/2 stream without ending it (a scripted disconnect)."""

    reason: str = "scripted disconnect"


OutputEvent = TranscriptResult | StreamException | StreamReset

_TRANSCRIPT_HEADERS = {
    ":message-type": "event",
    ":event-type": "transcriptEvent",
    ":content-type": "application/json",
}
_TRANSCRIPT_BLOCK = encode_headers(_TRANSCRIPT_HEADERS)


def transcript_payload(event: TranscriptResult) -> str:
    """The payload of ``event``'s ``transcriptEvent``: its :meth:`~TranscriptResult.to_json`
    as compact JSON, ``{"transcriptSegment":{...}}``."""
    return compact_json(event.to_json())


def transcript_message(payload: str) -> bytes:
    """The wire bytes of a ``transcriptEvent`` carrying ``payload``
    (:func:`transcript_payload`)."""
    return encode_with_headers(_TRANSCRIPT_BLOCK, payload.encode())


def exception_message(member: str, message: str) -> bytes:
    """Return the wire bytes of an in-stream exception ``member`` carrying ``message``."""
    headers = {
        ":message-type": "exception",
        ":exception-type": member,
        ":content-type": "application/json",
    }
    return encode_message(
        Message(headers=headers, payload=json.dumps({"message": message}).encode())
    )


def encode_output(event: TranscriptResult | StreamException) -> bytes:
    """Return the event-stream bytes of one output event.

    Event names are the output union's camelCase member names: the SDK treats
    ``TranscriptEvent`` (capitalised) as an unknown event.
    """
    if isinstance(event, TranscriptResult):
        return transcript_message(transcript_payload(event))
    return exception_message(event.member, event.message)
