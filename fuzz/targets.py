"""The fuzz targets: each takes bytes and may raise only the emulator's own errors.

Anything else escaping (IndexError, struct.error, UnicodeDecodeError, a hang) is
a bug: the server must answer bad input with a specific validationException.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import hpack

from emulator import eventstream, hypercorn_h2, speedups
from emulator.errors import FramingError, ValidationException
from emulator.eventstream import EventStreamDecoder, open_envelope, sdk_audio_event
from emulator.validation import (
    _python_audio_event_size,
    parse_audio_event,
    parse_configuration_event,
    parse_session_control_event,
    validate_stream_headers,
)

__all__ = ["TARGETS", "decoder", "configuration", "headers", "speedups_agree"]

#: Small limits so the fuzzer reaches the size checks with short inputs.
_PAYLOAD_LIMIT = 4096
_HEADERS_LIMIT = 1024


def decoder(data: bytes) -> None:
    """Feed ``data`` in two splits chosen by its first byte; open every envelope."""
    if not data:
        return
    split = data[0] % (len(data) or 1)
    body = data[1:]
    decoder = EventStreamDecoder(
        max_payload_length=_PAYLOAD_LIMIT, max_headers_length=_HEADERS_LIMIT
    )
    try:
        for chunk in (body[:split], body[split:]):
            for message in decoder.receive_data(chunk):
                open_envelope(message)
            # Bounded buffering: never more than one maximal message is held.
            assert decoder.buffered <= 16 + _PAYLOAD_LIMIT + _HEADERS_LIMIT, decoder.buffered
        decoder.end_of_data()
    except FramingError:
        pass


def configuration(data: bytes) -> None:
    """Validate ``data`` as each JSON input event's payload."""
    for parse in (parse_configuration_event, parse_audio_event, parse_session_control_event):
        try:
            parse(data)
        except ValidationException:
            pass


def headers(data: bytes) -> None:
    """Validate header values cut from ``data`` (one per NUL-separated field)."""
    fields = data.split(b"\0")
    names = [
        b"x-amzn-medscribe-session-id",
        b"x-amzn-medscribe-domain-id",
        b"x-amzn-medscribe-subscription-id",
        b"x-amzn-medscribe-language-code",
        b"x-amzn-medscribe-sample-rate",
        b"x-amzn-medscribe-media-encoding",
    ]
    try:
        validate_stream_headers(list(zip(names, fields, strict=False)))
    except ValidationException:
        pass


def speedups_agree(data: bytes) -> None:
    """The C loops (emulator._speedups) answer as their Python twins on ``data``:
    CRC-32, the SDK frame's layout check, the base64 check, the audio event's
    size and HPACK's Huffman decoding. Without the extension, only the Python
    side runs."""
    if speedups.crc32 is not None:
        assert speedups.crc32(data, 0) == zlib.crc32(data), "crc32"
        assert speedups.crc32(data, 0xFFFFFFFF) == zlib.crc32(data, 0xFFFFFFFF), "crc32"
    python = eventstream._python_sdk_audio_frame(data)
    if speedups.sdk_audio_frame is not None:
        assert speedups.sdk_audio_frame(data) == python, "sdk_audio_frame"
    assert speedups.base64_size(data) == speedups.python_base64_size(data), "base64_size"
    if speedups.audio_event_size is not None:
        # As a whole payload, and inside the one shape that gets past the prefix.
        for payload in (data, b'{"audioChunk":"' + data + b'"}'):
            assert speedups.audio_event_size(payload) == _python_audio_event_size(payload), (
                "audio_event_size"
            )
    if speedups.huffman_decode is not None:
        assert _huffman_outcome(hypercorn_h2.fast_decode_huffman, data) == _huffman_outcome(
            hypercorn_h2.STOCK_DECODE_HUFFMAN, data
        ), "huffman_decode"
    sdk_audio_event(data)  # and the lookup of the inner headers raises nothing


def _huffman_outcome(decode: Callable[[bytes], bytes], data: bytes) -> object:
    try:
        return decode(data)
    except hpack.HPACKDecodingError as error:
        return str(error)


TARGETS = {
    "decoder": decoder,
    "configuration": configuration,
    "headers": headers,
    "speedups": speedups_agree,
}


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from, so the fuzzer gets past the CRCs and JSON at once."""
    import datetime
    import json

    from emulator.eventstream import Message, encode_message

    config = {
        "postStreamActionSettings": {
            "outputS3Uri": "s3://bucket/prefix",
            "clinicalNoteGenerationSettings": {
                "noteTemplateSettings": {
                    "managedTemplate": {"templateType": "HISTORY_AND_PHYSICAL"}
                }
            },
        },
        "channelDefinitions": [
            {"channelId": 0, "participantRole": "CLINICIAN"},
            {"channelId": 1, "participantRole": "PATIENT"},
        ],
        "encounterContext": {"unstructuredContext": "Follow-up visit."},
    }
    if target == "configuration":
        return [
            json.dumps(config).encode(),
            b'{"audioChunk": "AAAA"}',
            b'{"type": "END_OF_SESSION"}',
        ]
    if target == "headers":
        return [
            b"\0".join(
                [
                    b"11111111-2222-3333-4444-555555555555",
                    b"dom-abcdefghij0123456789",
                    b"sub-ABCDEFGHIJ0123456789x",
                    b"en-US",
                    b"16000",
                    b"pcm",
                ]
            )
        ]
    if target == "speedups":
        from benchmarks.wire import audio_frames

        frame = audio_frames(1)[0]
        _, payload = sdk_audio_event(frame)
        base64_text = payload[len(b'{"audioChunk":"') : -len(b'"}')]
        return [frame, base64_text, bytes(range(256)), b"QUJD" * 30 + b"QQ=="]
    inner = encode_message(
        Message(
            headers={
                ":message-type": "event",
                ":event-type": "configurationEvent",
                ":content-type": "application/json",
            },
            payload=json.dumps(config).encode(),
        )
    )
    date = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)
    signed = encode_message(
        Message(headers={":date": date, ":chunk-signature": b"\x01" * 32}, payload=inner)
    )
    end = encode_message(Message(headers={":date": date, ":chunk-signature": b"\x02" * 32}))
    return [b"\x10" + inner, b"\x40" + signed + end, b"\x00" + signed[:50]]
