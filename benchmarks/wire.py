"""Pre-encoded request material: headers, signed input events and whole session bodies.

Everything the load generators send is encoded once, before the clock starts,
so that a measured run costs the client only framing and socket writes. The
bytes are what the AWS SDK puts on the wire (see /work/shared/WIRE.md): every
inner event wrapped in an envelope with ``:date`` and ``:chunk-signature``,
then one more signed envelope with an empty payload.

The signatures are stand-ins (SHA-256 of a counter): the emulator does not
verify event signatures.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import struct
import uuid
from dataclasses import dataclass

from emulator.eventstream import Message, encode_message

__all__ = [
    "STREAM_PATH",
    "DOMAIN_ID",
    "SUBSCRIPTION_ID",
    "SAMPLE_RATE",
    "CHUNK_SECONDS",
    "CHUNK_BYTES",
    "request_headers",
    "new_session_id",
    "signed",
    "inner_event",
    "configuration_frame",
    "audio_frame",
    "end_of_session_frame",
    "end_of_stream_frame",
    "audio_frames",
    "SessionBody",
    "session_body",
    "FrameSplitter",
    "is_final",
    "is_exception",
]

STREAM_PATH = "/medical-scribe-stream/"
DOMAIN_ID = "dom-abcdefghij0123456789"
SUBSCRIPTION_ID = "sub-ABCDEFGHIJ0123456789x"
S3_URI = "s3://emulator-bucket/benchmarks"
SAMPLE_RATE = 16000
#: One audio event per 100 ms, as the issue prescribes.
CHUNK_SECONDS = 0.1
#: 100 ms of 16-bit mono pcm at 16 kHz.
CHUNK_BYTES = int(SAMPLE_RATE * CHUNK_SECONDS) * 2

_DATE = datetime.datetime(2026, 11, 21, 12, 0, tzinfo=datetime.UTC)
_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/us-east-1/health-agent/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;"
    "x-amzn-medscribe-domain-id;x-amzn-medscribe-language-code;"
    "x-amzn-medscribe-media-encoding;x-amzn-medscribe-sample-rate;"
    "x-amzn-medscribe-session-id;x-amzn-medscribe-subscription-id, "
    "Signature=" + "0" * 64
)


def request_headers(session_id: str, *, scheme: str, authority: str) -> list[tuple[bytes, bytes]]:
    """Return the HTTP/2 request headers the SDK sends for one session."""
    pairs = [
        (":method", "POST"),
        (":scheme", scheme),
        (":authority", authority),
        (":path", STREAM_PATH),
        ("x-amzn-medscribe-session-id", session_id),
        ("x-amzn-medscribe-domain-id", DOMAIN_ID),
        ("x-amzn-medscribe-subscription-id", SUBSCRIPTION_ID),
        ("x-amzn-medscribe-language-code", "en-US"),
        ("x-amzn-medscribe-sample-rate", str(SAMPLE_RATE)),
        ("x-amzn-medscribe-media-encoding", "pcm"),
        ("content-type", "application/vnd.amazon.eventstream"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-EVENTS"),
        ("x-amz-date", "20261121T120000Z"),
        ("authorization", _AUTHORIZATION),
        ("user-agent", "medscribe-benchmarks/1.0"),
    ]
    return [(name.encode(), value.encode()) for name, value in pairs]


def new_session_id() -> str:
    """A fresh session id (the model wants a UUID)."""
    return str(uuid.uuid4())


def _signature(counter: int) -> bytes:
    return hashlib.sha256(counter.to_bytes(8, "big")).digest()


def signed(inner: bytes, *, counter: int) -> bytes:
    """Wrap encoded ``inner`` in the SDK's signed envelope (``:date``, ``:chunk-signature``)."""
    return encode_message(
        Message(headers={":date": _DATE, ":chunk-signature": _signature(counter)}, payload=inner)
    )


def inner_event(event_type: str, payload: bytes, content_type: str = "application/json") -> bytes:
    """Return one encoded inner input event."""
    return encode_message(
        Message(
            headers={
                ":message-type": "event",
                ":event-type": event_type,
                ":content-type": content_type,
            },
            payload=payload,
        )
    )


def _json(document: object) -> bytes:
    """``document`` as the SDK's JSON codec writes it: compact, no spaces."""
    return json.dumps(document, separators=(",", ":")).encode()


def configuration_frame(*, counter: int = 0) -> bytes:
    """The signed ``configurationEvent`` of a one-channel session."""
    config = {
        "postStreamActionSettings": {
            "outputS3Uri": S3_URI,
            "clinicalNoteGenerationSettings": {
                "noteTemplateSettings": {
                    "managedTemplate": {"templateType": "HISTORY_AND_PHYSICAL"}
                }
            },
        }
    }
    return signed(inner_event("configurationEvent", _json(config)), counter=counter)


def _pcm(seconds: float, *, offset: int = 0) -> bytes:
    """16-bit little-endian mono pcm of a quiet tone (its content does not matter)."""
    frames = int(round(seconds * SAMPLE_RATE))
    samples = (
        int(1000 * math.sin(2 * math.pi * 440 * (offset + n) / SAMPLE_RATE)) for n in range(frames)
    )
    return struct.pack(f"<{frames}h", *samples)


def audio_frame(chunk: bytes, *, counter: int, binary: bool = False) -> bytes:
    """A signed ``audioEvent`` (base64 JSON) carrying ``chunk``, or with ``binary``
    a signed ``binaryAudioEvent`` (the raw bytes)."""
    if binary:
        inner = inner_event("binaryAudioEvent", chunk, "application/octet-stream")
    else:
        inner = inner_event("audioEvent", _json({"audioChunk": base64.b64encode(chunk).decode()}))
    return signed(inner, counter=counter)


def audio_frames(count: int, *, first_counter: int = 1, binary: bool = False) -> list[bytes]:
    """``count`` signed 100 ms audio events, each with its own signature."""
    chunk = _pcm(CHUNK_SECONDS)
    return [audio_frame(chunk, counter=first_counter + i, binary=binary) for i in range(count)]


def end_of_session_frame(*, counter: int) -> bytes:
    """The signed ``sessionControlEvent`` ``END_OF_SESSION``."""
    return signed(inner_event("sessionControlEvent", b'{"type":"END_OF_SESSION"}'), counter=counter)


def end_of_stream_frame(*, counter: int) -> bytes:
    """The signed envelope with an empty payload that closes the SDK's input stream."""
    return signed(b"", counter=counter)


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionBody:
    """A whole session's request body and what it holds.

    ``messages`` are its signed messages one by one: the SDK writes each in a
    DATA frame of its own; ``data`` is all of them back to back.
    """

    data: bytes
    messages: tuple[bytes, ...]
    audio_seconds: float


def session_body(audio_seconds: float = 10.0, *, binary: bool = False) -> SessionBody:
    """Configuration, ``audio_seconds`` of pcm as 100 ms audio events (``binary``:
    binaryAudioEvents), END_OF_SESSION, end."""
    chunks = int(round(audio_seconds / CHUNK_SECONDS))
    frames = [
        configuration_frame(counter=0),
        *audio_frames(chunks, first_counter=1, binary=binary),
    ]
    frames.append(end_of_session_frame(counter=chunks + 1))
    frames.append(end_of_stream_frame(counter=chunks + 2))
    return SessionBody(
        data=b"".join(frames),
        messages=tuple(frames),
        audio_seconds=audio_seconds,
    )


_FINAL = b'"isPartial":false'
_EXCEPTION = b":message-type\x07\x00\x09exception"


def is_final(message: bytes | bytearray | memoryview) -> bool:
    """Whether an output message is a final transcript result."""
    return _FINAL in message


def is_exception(message: bytes | bytearray | memoryview) -> bool:
    """Whether an output message is an in-stream exception."""
    return _EXCEPTION in message


class FrameSplitter:
    """Split a response body into event-stream messages by their length prefix only.

    No CRC or header checks: the load generator must stay cheap.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the messages it completed."""
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        pos = 0
        size = len(buffer)
        while size - pos >= 4:
            total = int.from_bytes(buffer[pos : pos + 4], "big")
            if total < 16 or size - pos < total:
                break
            out.append(bytes(buffer[pos : pos + total]))
            pos += total
        if pos:
            del buffer[:pos]
        return out
