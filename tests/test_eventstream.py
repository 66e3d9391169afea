"""Rules of the event-stream codec, checked against golden bytes written out by hand."""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from awscrt.checksums import crc32
from botocore.eventstream import EventStreamBuffer
from smithy_aws_event_stream.events import Byte, Event, EventMessage, Long, Short

from emulator.errors import (
    EmulatorError,
    FrameTooLargeError,
    InvalidHeaderError,
    InvalidLengthError,
    MessageCRCError,
    PreludeCRCError,
    TruncatedMessageError,
)
from emulator.events import (
    TranscriptResult,
    encode_output,
    transcript_message,
    transcript_payload,
)
from emulator.eventstream import (
    MAX_HEADERS_LENGTH,
    MAX_PAYLOAD_LENGTH,
    Envelope,
    EventStreamDecoder,
    Int8,
    Int16,
    Int64,
    Message,
    encode_headers,
    encode_message,
    encode_with_headers,
    open_envelope,
)

# --------------------------------------------------------------------------- golden bytes

EMPTY = (
    b"\x00\x00\x00\x10"  # total length 16: 12-byte prelude + 4-byte message CRC
    b"\x00\x00\x00\x00"  # headers length 0
    b"\x05\xc2\x48\xeb"  # prelude CRC32 of the 8 bytes above
    b"\x7d\x98\xc8\xff"  # message CRC32 of the 12 bytes above
)
EMPTY_MESSAGE = Message()

TIMESTAMP = datetime(2025, 1, 29, 12, 0, 0, 123000, tzinfo=UTC)  # 1738152000123 ms
SAMPLE_UUID = UUID("00112233-4455-6677-8899-aabbccddeeff")

# Each header is: name length (u8), name, type (u8), value.
ALL_TYPES = (
    b"\x00\x00\x00\x64"  # total length 100 = 12 prelude + 82 headers + 2 payload + 4 CRC
    b"\x00\x00\x00\x52"  # headers length 82
    b"\x8c\xf5\x3e\x3c"  # prelude CRC32
    b"\x01t"  # name "t"
    b"\x00"  # type 0, bool true: no value bytes
    b"\x01f"  # name "f"
    b"\x01"  # type 1, bool false: no value bytes
    b"\x01b"  # name "b"
    b"\x02"  # type 2, byte
    b"\xfe"  # -2
    b"\x01s"  # name "s"
    b"\x03"  # type 3, short
    b"\xfe\xd4"  # -300
    b"\x01i"  # name "i"
    b"\x04"  # type 4, integer
    b"\x12\x34\x56\x78"  # 0x12345678
    b"\x01l"  # name "l"
    b"\x05"  # type 5, long
    b"\xff\xff\xff\xff\xff\xff\xff\xfe"  # -2
    b"\x01y"  # name "y"
    b"\x06"  # type 6, byte array
    b"\x00\x02"  # value length 2
    b"\x00\xff"  # value
    b"\x03str"  # name "str"
    b"\x07"  # type 7, string
    b"\x00\x03"  # value length 3
    b"h\xc3\xa9"  # "hé" in utf-8
    b"\x02ts"  # name "ts"
    b"\x08"  # type 8, timestamp
    b"\x00\x00\x01\x94\xb1\xee\xba\x7b"  # 1738152000123 ms = 2025-01-29T12:00:00.123Z
    b"\x02id"  # name "id"
    b"\x09"  # type 9, uuid
    b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff"  # its 16 bytes
    b"hi"  # payload
    b"\xe2\x6d\xed\x21"  # message CRC32
)
ALL_TYPES_MESSAGE = Message(
    headers={
        "t": True,
        "f": False,
        "b": Int8(-2),
        "s": Int16(-300),
        "i": 0x12345678,
        "l": Int64(-2),
        "y": b"\x00\xff",
        "str": "hé",
        "ts": TIMESTAMP,
        "id": SAMPLE_UUID,
    },
    payload=b"hi",
)

CONFIGURATION_JSON = b'{"channelDefinitions":[{"channelId":0,"participantRole":"CLINICIAN"}]}'
CONFIGURATION_EVENT = (
    b"\x00\x00\x00\xae"  # total length 174 = 12 + 88 headers + 70 payload + 4
    b"\x00\x00\x00\x58"  # headers length 88
    b"\xcf\x85\x27\x58"  # prelude CRC32
    b"\x0d:message-type"  # 13-byte name
    b"\x07"  # type 7, string
    b"\x00\x05event"  # 5-byte value
    b"\x0b:event-type"  # 11-byte name
    b"\x07"  # type 7, string
    b"\x00\x12configurationEvent"  # 18-byte value
    b"\x0d:content-type"  # 13-byte name
    b"\x07"  # type 7, string
    b"\x00\x10application/json"  # 16-byte value
    + CONFIGURATION_JSON  # payload, 70 bytes
    + b"\xb0\xf5\x77\x9a"  # message CRC32
)
CONFIGURATION_MESSAGE = Message(
    headers={
        ":message-type": "event",
        ":event-type": "configurationEvent",
        ":content-type": "application/json",
    },
    payload=CONFIGURATION_JSON,
)

SIGNATURE = bytes(range(32))
ENVELOPE_HEADERS = (
    b"\x05:date"  # 5-byte name
    b"\x08"  # type 8, timestamp
    b"\x00\x00\x01\x94\xb1\xee\xba\x7b"  # 1738152000123 ms
    b"\x10:chunk-signature"  # 16-byte name
    b"\x06"  # type 6, byte array
    b"\x00\x20"  # value length 32
    b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"  # signature...
    b"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"  # ...32 bytes
)
SIGNED_CONFIGURATION_EVENT = (
    b"\x00\x00\x01\x01"  # total length 257 = 12 + 67 headers + 174 payload + 4
    b"\x00\x00\x00\x43"  # headers length 67
    b"\x7c\xcb\x35\x56"  # prelude CRC32
    + ENVELOPE_HEADERS  # :date and :chunk-signature, 67 bytes
    + CONFIGURATION_EVENT  # payload: the whole inner message, 174 bytes
    + b"\x2f\xf8\xd4\xd5"  # message CRC32
)
SIGNED_CONFIGURATION_MESSAGE = Message(
    headers={":date": TIMESTAMP, ":chunk-signature": SIGNATURE},
    payload=CONFIGURATION_EVENT,
)

SIGNED_END_OF_STREAM = (
    b"\x00\x00\x00\x53"  # total length 83 = 12 + 67 headers + 0 payload + 4
    b"\x00\x00\x00\x43"  # headers length 67
    b"\xf5\x44\x7a\x58"  # prelude CRC32
    + ENVELOPE_HEADERS  # :date and :chunk-signature, 67 bytes
    + b"\xe2\xd5\x6b\x7c"  # message CRC32; no payload: this envelope ends the input
)
SIGNED_END_OF_STREAM_MESSAGE = Message(
    headers={":date": TIMESTAMP, ":chunk-signature": SIGNATURE},
)

GOLDEN: dict[str, tuple[bytes, Message]] = {
    "no headers, no payload": (EMPTY, EMPTY_MESSAGE),
    "every header type": (ALL_TYPES, ALL_TYPES_MESSAGE),
    "configurationEvent": (CONFIGURATION_EVENT, CONFIGURATION_MESSAGE),
    "signed envelope of a configurationEvent": (
        SIGNED_CONFIGURATION_EVENT,
        SIGNED_CONFIGURATION_MESSAGE,
    ),
    "signed end-of-stream envelope": (SIGNED_END_OF_STREAM, SIGNED_END_OF_STREAM_MESSAGE),
}


def assert_same_message(got: Message, expected: Message) -> None:
    """Equal, with headers in the same order and each value of the same Python type."""
    assert got == expected
    assert list(got.headers) == list(expected.headers)
    for name, value in expected.headers.items():
        assert type(got.headers[name]) is type(value), name
    assert type(got.payload) is bytes


# --------------------------------------------------------------------------- helpers


def prelude(total_length: int, headers_length: int) -> bytes:
    """A prelude with a correct CRC, whatever its lengths say."""
    lengths = struct.pack(">II", total_length, headers_length)
    return lengths + struct.pack(">I", crc32(lengths))


def frame(headers_block: bytes, payload: bytes = b"") -> bytes:
    """A message with correct lengths and CRCs around a raw, possibly bad, headers block."""
    head = prelude(16 + len(headers_block) + len(payload), len(headers_block))
    body = head + headers_block + payload
    return body + struct.pack(">I", crc32(body))


def envelope(payload: bytes, replacing: dict[str, Any] | None = None) -> bytes:
    """A signed envelope around ``payload`` (the signature itself is not checked here)."""
    outer: dict[str, Any] = {":date": TIMESTAMP, ":chunk-signature": SIGNATURE}
    outer.update(replacing or {})
    return encode_message(Message(headers=outer, payload=payload))


def flip_last_bit(data: bytes, index: int) -> bytes:
    return data[:index] + bytes((data[index] ^ 1,)) + data[index + 1 :]


WITH_TRAILING_BYTES = "with trailing bytes"
HOWS = ("whole", "one byte at a time", WITH_TRAILING_BYTES)


def feed(decoder: EventStreamDecoder, data: bytes, how: str) -> list[Message]:
    """Feed ``data`` whole, one byte at a time, or whole with a complete message
    (``EMPTY``) after it in the same chunk; return every message decoded."""
    if how == "whole":
        return decoder.receive_data(data)
    if how == WITH_TRAILING_BYTES:
        return decoder.receive_data(data + EMPTY)
    messages: list[Message] = []
    for index in range(len(data)):
        messages += decoder.receive_data(data[index : index + 1])
    return messages


# --------------------------------------------------------------------------- golden cases


@pytest.mark.parametrize("name", GOLDEN)
def test_encode_produces_the_golden_bytes(name: str) -> None:
    data, message = GOLDEN[name]
    assert encode_message(message) == data
    assert message.encode() == data


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_bytes_fed_whole_decode_to_one_message(name: str) -> None:
    data, message = GOLDEN[name]
    decoder = EventStreamDecoder()
    [got] = decoder.receive_data(data)
    assert_same_message(got, message)
    assert decoder.buffered == 0
    decoder.end_of_data()


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_bytes_fed_one_byte_at_a_time_decode_on_the_last_byte(name: str) -> None:
    data, message = GOLDEN[name]
    decoder = EventStreamDecoder()
    for index in range(len(data) - 1):
        assert decoder.receive_data(data[index : index + 1]) == []
        assert decoder.buffered == index + 1
    [got] = decoder.receive_data(data[-1:])
    assert_same_message(got, message)
    assert decoder.buffered == 0
    decoder.end_of_data()


@pytest.mark.parametrize("name", GOLDEN)
def test_trailing_bytes_of_the_next_message_stay_buffered(name: str) -> None:
    data, message = GOLDEN[name]
    decoder = EventStreamDecoder()
    cut = 13  # the next message's prelude and one byte of its body
    [got] = decoder.receive_data(data + ALL_TYPES[:cut])
    assert_same_message(got, message)
    assert decoder.buffered == cut
    [following] = decoder.receive_data(ALL_TYPES[cut:])
    assert_same_message(following, ALL_TYPES_MESSAGE)
    assert decoder.buffered == 0
    decoder.end_of_data()


def test_golden_bytes_decode_with_botocore() -> None:
    """The golden bytes are valid event-stream by an independent decoder, not only ours."""
    buffer = EventStreamBuffer()
    buffer.add_data(EMPTY + ALL_TYPES + SIGNED_CONFIGURATION_EVENT + SIGNED_END_OF_STREAM)
    empty, all_types, signed, end = list(buffer)
    assert (empty.headers, empty.payload) == ({}, b"")
    assert all_types.headers == {
        "t": True,
        "f": False,
        "b": -2,
        "s": -300,
        "i": 0x12345678,
        "l": -2,
        "y": b"\x00\xff",
        "str": "hé",
        "ts": 1738152000123,  # botocore keeps timestamps as epoch milliseconds
        "id": SAMPLE_UUID.bytes,  # and UUIDs as their 16 bytes
    }
    assert signed.payload == CONFIGURATION_EVENT
    assert end.payload == b""


# --------------------------------------------------------------------------- decoder rules


def test_several_messages_in_one_chunk_come_back_in_order() -> None:
    decoder = EventStreamDecoder()
    got = decoder.receive_data(ALL_TYPES + EMPTY + CONFIGURATION_EVENT)
    assert got == [ALL_TYPES_MESSAGE, EMPTY_MESSAGE, CONFIGURATION_MESSAGE]


def test_empty_input_decodes_nothing_and_changes_nothing() -> None:
    decoder = EventStreamDecoder()
    assert decoder.receive_data(b"") == []
    assert decoder.receive_data(ALL_TYPES[:5]) == []
    assert decoder.receive_data(b"") == []
    assert decoder.buffered == 5


def test_messages_do_not_alias_the_callers_buffer() -> None:
    """The caller may reuse its receive buffer: messages own copies of their bytes."""
    chunk = bytearray(ALL_TYPES + EMPTY[:4])
    decoder = EventStreamDecoder()
    [got] = decoder.receive_data(memoryview(chunk))
    chunk[:] = bytes(len(chunk))
    assert got == ALL_TYPES_MESSAGE
    assert decoder.receive_data(EMPTY[4:]) == [EMPTY_MESSAGE]


def test_end_of_data_between_messages_is_clean() -> None:
    decoder = EventStreamDecoder()
    assert decoder.receive_data(EMPTY + EMPTY) == [EMPTY_MESSAGE, EMPTY_MESSAGE]
    decoder.end_of_data()  # raises if anything were left


def test_oversized_payload_is_refused_from_the_prelude_before_its_body_is_buffered() -> None:
    decoder = EventStreamDecoder(max_payload_length=1024)
    head = prelude(16 + 1025, 0)
    for byte in head[:-1]:
        decoder.receive_data(bytes((byte,)))
    with pytest.raises(FrameTooLargeError, match="payload length 1025 .* the 1024-byte limit"):
        decoder.receive_data(head[-1:])
    assert decoder.buffered <= len(head)


def _at_the_limit(which: str) -> Message:
    if which == "payload":
        return Message(headers={":message-type": "event"}, payload=bytes(MAX_PAYLOAD_LENGTH))
    # Two string headers: 5 + 65535 and 5 + 65527 bytes (name length, name, type, length).
    return Message(headers={"a": "x" * 65535, "b": "x" * 65527}, payload=b"{}")


@pytest.mark.parametrize("which", ["payload", "headers"])
def test_a_message_exactly_at_a_limit_encodes_and_decodes(which: str) -> None:
    """The limits are inclusive: a payload of exactly 24 MiB and a headers block of
    exactly 128 KiB are encoded and decoded; only a byte more is refused (below)."""
    message = _at_the_limit(which)
    if which == "headers":
        assert len(encode_headers(message.headers)) == MAX_HEADERS_LENGTH == 128 * 1024
    else:
        assert MAX_PAYLOAD_LENGTH == 24 * 1024 * 1024
    [got] = EventStreamDecoder().receive_data(encode_message(message))
    assert_same_message(got, message)


def test_a_failed_decoder_keeps_failing_with_the_same_error_class() -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(MessageCRCError):
        decoder.receive_data(flip_last_bit(EMPTY, 15))
    with pytest.raises(MessageCRCError, match="decoder failed earlier: message CRC32 mismatch"):
        decoder.receive_data(EMPTY)
    with pytest.raises(MessageCRCError, match="decoder failed earlier"):
        decoder.end_of_data()


def test_errors_name_the_stream_offset_of_the_bad_message() -> None:
    decoder = EventStreamDecoder()
    decoder.receive_data(EMPTY + ALL_TYPES)
    with pytest.raises(PreludeCRCError, match=r"\(message at stream offset 116\)"):
        decoder.receive_data(flip_last_bit(EMPTY, 11))


def test_good_messages_before_a_bad_one_are_returned_and_the_error_comes_next() -> None:
    """Nothing the client got through is lost: the messages decoded before a malformed
    one in the same chunk are returned; the error is raised by the next call."""
    decoder = EventStreamDecoder()
    messages = decoder.receive_data(EMPTY + ALL_TYPES + flip_last_bit(EMPTY, 11))
    assert len(messages) == 2
    assert decoder.error_pending
    with pytest.raises(PreludeCRCError, match=r"\(message at stream offset 116\)"):
        decoder.receive_data(b"")
    assert not decoder.error_pending
    with pytest.raises(PreludeCRCError, match="decoder failed earlier"):
        decoder.end_of_data()


def test_a_pending_error_is_raised_by_end_of_data() -> None:
    decoder = EventStreamDecoder()
    assert len(decoder.receive_data(EMPTY + flip_last_bit(EMPTY, 15))) == 1
    with pytest.raises(MessageCRCError, match="message CRC32 mismatch"):
        decoder.end_of_data()


# --------------------------------------------------------------------------- the SDK's audio frame


def sdk_audio_frame(payload: bytes = b'{"audioChunk":"AAAA"}') -> bytes:
    """One audio event in the SDK's signed envelope, as it sends each in a DATA frame."""
    inner = encode_message(
        Message(
            headers={
                ":message-type": "event",
                ":event-type": "audioEvent",
                ":content-type": "application/json",
            },
            payload=payload,
        )
    )
    return encode_message(
        Message(headers={":date": TIMESTAMP, ":chunk-signature": bytes(32)}, payload=inner)
    )


def test_receive_sdk_audio_takes_the_sdk_frame_and_keeps_the_stream_offsets() -> None:
    """The decoder's one-step read of the SDK's audio frame gives its event type and
    payload, and counts the frame, so a later error names its true stream offset."""
    frame = sdk_audio_frame()
    decoder = EventStreamDecoder()
    assert decoder.receive_sdk_audio(frame) == ("audioEvent", b'{"audioChunk":"AAAA"}')
    assert decoder.receive_data(EMPTY) == [EMPTY_MESSAGE]
    assert decoder.receive_sdk_audio(frame) is not None
    offset = 2 * len(frame) + len(EMPTY)
    with pytest.raises(PreludeCRCError, match=rf"\(message at stream offset {offset}\)"):
        decoder.receive_data(flip_last_bit(EMPTY, 11))


def test_receive_sdk_audio_leaves_to_receive_data_what_it_does_not_take() -> None:
    """None, having done nothing, for another message, for bytes not of type bytes, and
    while part of a message is buffered: the frame then completes that one in order."""
    frame = sdk_audio_frame()
    decoder = EventStreamDecoder()
    assert decoder.receive_sdk_audio(EMPTY) is None
    assert decoder.receive_sdk_audio(bytearray(frame)) is None
    assert decoder.receive_sdk_audio(memoryview(frame)) is None
    assert decoder.receive_data(frame[:20]) == []
    assert decoder.receive_sdk_audio(frame) is None
    assert decoder.buffered == 20  # not taken, not counted
    [message] = decoder.receive_data(frame[20:])
    assert open_envelope(message).inner is not None
    with pytest.raises(PreludeCRCError, match=rf"\(message at stream offset {len(frame)}\)"):
        decoder.receive_data(flip_last_bit(EMPTY, 11))


def test_receive_sdk_audio_takes_nothing_from_a_failed_decoder() -> None:
    """After an error, deferred or raised, the frame goes to receive_data, which
    raises the error: the one-step read does not step past it."""
    frame = sdk_audio_frame()
    pending = EventStreamDecoder()
    pending.receive_data(EMPTY + flip_last_bit(EMPTY, 15))
    assert pending.receive_sdk_audio(frame) is None
    with pytest.raises(MessageCRCError, match="message CRC32 mismatch"):
        pending.receive_data(frame)
    assert pending.receive_sdk_audio(frame) is None
    failed = EventStreamDecoder()
    with pytest.raises(MessageCRCError):
        failed.receive_data(flip_last_bit(EMPTY, 15))
    assert failed.receive_sdk_audio(frame) is None


def test_receive_sdk_audio_keeps_the_decoders_own_lower_limits() -> None:
    """A decoder with limits below the defaults refuses a frame over them, so its
    one-step read (which checks the default limits) leaves every frame to it."""
    frame = sdk_audio_frame(b"x" * 100)
    decoder = EventStreamDecoder(max_payload_length=100)
    assert decoder.receive_sdk_audio(frame) is None
    with pytest.raises(FrameTooLargeError):
        decoder.receive_data(frame)
    assert EventStreamDecoder(max_headers_length=4096).receive_sdk_audio(frame) is None


# --------------------------------------------------------------------------- failure cases


@dataclass(frozen=True, kw_only=True)
class Failure:
    data: bytes
    error: type[EmulatorError]
    match: str
    limits: dict[str, int] = field(default_factory=dict)
    #: Why the case is not fed with trailing bytes too; None when it is.
    no_trailing_bytes: str | None = None


_ENDS_INSIDE_A_MESSAGE = (
    "the input ends inside a message: bytes appended would be read as more of it"
)

FAILURES: dict[str, Failure] = {
    "bad prelude CRC": Failure(
        data=flip_last_bit(EMPTY, 11),
        error=PreludeCRCError,
        match="prelude CRC32 mismatch: computed 0x05c248eb, frame says 0x05c248ea",
    ),
    "bad message CRC": Failure(
        data=flip_last_bit(EMPTY, 15),
        error=MessageCRCError,
        match="message CRC32 mismatch: computed 0x7d98c8ff, frame says 0x7d98c8fe",
    ),
    "payload byte changed under a good CRC": Failure(
        data=flip_last_bit(ALL_TYPES, 95),
        error=MessageCRCError,
        match="message CRC32 mismatch: computed 0x[0-9a-f]{8}, frame says 0xe26ded21",
    ),
    "total length below the minimum": Failure(
        data=prelude(12, 0) + b"\x00" * 4,
        error=InvalidLengthError,
        match="message total length 12 is below the 16-byte minimum",
    ),
    "headers length larger than the total allows": Failure(
        data=prelude(20, 5) + b"\x00" * 8,
        error=InvalidLengthError,
        match="headers length 5 does not fit in message total length 20 "
        r"\(at most 4 bytes besides",
    ),
    "payload over the limit, from the prelude alone": Failure(
        data=prelude(16 + MAX_PAYLOAD_LENGTH + 1, 0),
        error=FrameTooLargeError,
        match=f"payload length {MAX_PAYLOAD_LENGTH + 1} .* the {MAX_PAYLOAD_LENGTH}-byte limit",
    ),
    "payload over a configured limit": Failure(
        data=frame(b"", b"x" * 11),
        error=FrameTooLargeError,
        match="payload length 11 .* exceeds the 10-byte limit",
        limits={"max_payload_length": 10},
    ),
    "headers over the limit, from the prelude alone": Failure(
        data=prelude(16 + MAX_HEADERS_LENGTH + 1, MAX_HEADERS_LENGTH + 1),
        error=FrameTooLargeError,
        match=f"headers length {MAX_HEADERS_LENGTH + 1} exceeds the "
        f"{MAX_HEADERS_LENGTH}-byte limit",
    ),
    "unknown header type": Failure(
        data=frame(b"\x01x\x0a"),
        error=InvalidHeaderError,
        match=r"header 'x' at offset 0 has unknown value type 10 \(valid types are 0-9\)",
    ),
    "truncated header value": Failure(
        data=frame(b"\x01x\x07\x00\x05abc"),
        error=InvalidHeaderError,
        match="header 'x' at offset 0 is truncated: its string value needs 5 bytes "
        "but the 8-byte headers block has 3 left",
    ),
    "truncated fixed-size header value": Failure(
        data=frame(b"\x01x\x05\x00\x00"),
        error=InvalidHeaderError,
        match="header 'x' at offset 0 is truncated: its long value needs 8 bytes "
        "but the 5-byte headers block has 2 left",
    ),
    "truncated header name": Failure(
        data=frame(b"\x05ab"),
        error=InvalidHeaderError,
        match="header at offset 0 is truncated: its 5-byte name and type byte need 7 bytes "
        "but the 3-byte headers block has 3 left",
    ),
    "empty header name": Failure(
        data=frame(b"\x00\x00"),
        error=InvalidHeaderError,
        match="header at offset 0 has an empty name",
    ),
    "header name not utf-8": Failure(
        data=frame(b"\x01\xff\x00"),
        error=InvalidHeaderError,
        match=r"header at offset 0: name b'\\xff' is not valid utf-8",
    ),
    "string value not utf-8": Failure(
        data=frame(b"\x01x\x07\x00\x01\xff"),
        error=InvalidHeaderError,
        match="header 'x' at offset 0: string value is not valid utf-8",
    ),
    "duplicate header name": Failure(
        data=frame(b"\x01x\x00\x01x\x01"),  # "x" true, then "x" false
        error=InvalidHeaderError,
        match="header 'x' at offset 3 repeats an earlier header name",
    ),
    "timestamp beyond datetime": Failure(
        data=frame(b"\x01x\x08" + struct.pack(">q", 2**63 - 1)),
        error=InvalidHeaderError,
        match=f"header 'x' at offset 0: timestamp {2**63 - 1} ms since the epoch is outside",
    ),
    "envelope date beyond datetime": Failure(
        data=frame(
            b"\x05:date\x08"
            + struct.pack(">q", -(2**63))
            + b"\x10:chunk-signature\x06\x00\x20"
            + SIGNATURE
        ),
        error=InvalidHeaderError,
        match=f"header ':date' at offset 0: timestamp {-(2**63)} ms since the epoch is outside",
    ),
    "input ends inside a prelude": Failure(
        data=EMPTY[:10],
        error=TruncatedMessageError,
        match=r"truncated message: input ended after 10 bytes of its 12-byte prelude "
        r"\(message at stream offset 0\)",
        no_trailing_bytes=_ENDS_INSIDE_A_MESSAGE,
    ),
    "input ends inside a body": Failure(
        data=EMPTY + ALL_TYPES[:50],
        error=TruncatedMessageError,
        match=r"truncated message: input ended after 50 of its 100 bytes "
        r"\(message at stream offset 16\)",
        no_trailing_bytes=_ENDS_INSIDE_A_MESSAGE,
    ),
    "envelope payload with trailing bytes": Failure(
        data=envelope(EMPTY + b"\x00"),
        error=InvalidLengthError,
        match="envelope payload: has 1 trailing bytes after a message of total length 16",
    ),
    "envelope payload truncated": Failure(
        data=envelope(ALL_TYPES[:50]),
        error=TruncatedMessageError,
        match="envelope payload: truncated message: 50 of its 100 bytes",
    ),
    "envelope payload shorter than a prelude": Failure(
        data=envelope(EMPTY[:5]),
        error=TruncatedMessageError,
        match="envelope payload: truncated message: 5 bytes, fewer than the 12-byte prelude",
    ),
    "envelope payload with a bad CRC": Failure(
        data=envelope(flip_last_bit(EMPTY, 15)),
        error=MessageCRCError,
        match="envelope payload: message CRC32 mismatch",
    ),
    "envelope signature that is not a byte array": Failure(
        data=envelope(EMPTY, {":chunk-signature": "abc"}),
        error=InvalidHeaderError,
        match=(
            r"envelope header ':chunk-signature' must be a byte array \(type 6\), got a "
            r"string header \(type 7\) holding 'abc'"
        ),
    ),
    "envelope date that is not a timestamp": Failure(
        data=envelope(EMPTY, {":date": 1}),
        error=InvalidHeaderError,
        match=(
            r"envelope header ':date' must be a timestamp \(type 8\), got an integer "
            r"header \(type 4\) holding 1"
        ),
    ),
}


@pytest.mark.parametrize(
    ("name", "how"),
    [
        (name, how)
        for name, case in FAILURES.items()
        for how in HOWS
        if how != WITH_TRAILING_BYTES or case.no_trailing_bytes is None
    ],
)
def test_malformed_input_raises_its_own_error(name: str, how: str) -> None:
    """Each malformed input raises its own error class and message, whether fed whole,
    one byte at a time, or with a good message after it in the same chunk."""
    case = FAILURES[name]
    decoder = EventStreamDecoder(**case.limits)
    with pytest.raises(case.error, match=case.match):
        for message in feed(decoder, case.data, how):
            open_envelope(message)
        decoder.end_of_data()


# --------------------------------------------------------------------------- envelopes


def test_signed_envelope_opens_to_its_inner_message() -> None:
    [outer] = EventStreamDecoder().receive_data(SIGNED_CONFIGURATION_EVENT)
    opened = open_envelope(outer)
    assert opened.inner is not None
    assert_same_message(opened.inner, CONFIGURATION_MESSAGE)
    assert opened.signature == SIGNATURE
    assert opened.date == TIMESTAMP
    assert opened.raw_inner == CONFIGURATION_EVENT
    assert not opened.ends_stream


def test_signed_envelope_with_empty_payload_ends_the_stream() -> None:
    [outer] = EventStreamDecoder().receive_data(SIGNED_END_OF_STREAM)
    assert open_envelope(outer) == Envelope(
        inner=None, signature=SIGNATURE, date=TIMESTAMP, raw_inner=b""
    )
    assert open_envelope(outer).ends_stream


def test_message_without_chunk_signature_is_a_bare_event() -> None:
    assert open_envelope(CONFIGURATION_MESSAGE) == Envelope(
        inner=CONFIGURATION_MESSAGE, signature=None, date=None, raw_inner=b""
    )


def test_envelope_without_date_has_no_date() -> None:
    message = Message(headers={":chunk-signature": SIGNATURE}, payload=EMPTY)
    assert open_envelope(message).date is None


# --------------------------------------------------------------------------- round trips

ROUND_TRIPS: dict[str, object] = {
    "bool true": True,
    "bool false": False,
    "Int8 minimum": Int8(-128),
    "Int8 maximum": Int8(127),
    "Int16 minimum": Int16(-(2**15)),
    "Int16 maximum": Int16(2**15 - 1),
    "int (i32) minimum": -(2**31),
    "int (i32) maximum": 2**31 - 1,
    "Int64 minimum": Int64(-(2**63)),
    "Int64 maximum": Int64(2**63 - 1),
    "empty bytes": b"",
    "65535 bytes": bytes(range(256)) * 255 + bytes(range(255)),
    "empty str": "",
    "65535-byte str": "x" * 65535,
    "multi-byte str": "é€😀",
    "epoch": datetime(1970, 1, 1, tzinfo=UTC),
    "one ms before the epoch": datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    "year 1": datetime(1, 1, 1, tzinfo=UTC),
    "year 9999": datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    "uuid": SAMPLE_UUID,
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_every_header_type_round_trips_with_its_type(name: str) -> None:
    value = ROUND_TRIPS[name]
    message = Message(headers={"v": value}, payload=b"p")  # type: ignore[dict-item]
    [got] = EventStreamDecoder().receive_data(encode_message(message))
    assert_same_message(got, message)


@pytest.mark.parametrize(
    "headers",
    [
        {":chunk-signature": SIGNATURE, ":date": TIMESTAMP},
        {":date": TIMESTAMP, ":chunk-signature": SIGNATURE[:31]},
        {":date": TIMESTAMP, ":chunk-signature": SIGNATURE, ":extra": True},
        {":date": TIMESTAMP, ":chunk-signatur3": SIGNATURE},
        {":dat3": TIMESTAMP, ":chunk-signature": SIGNATURE},
    ],
    ids=["reversed", "short signature", "extra header", "other name", "other date name"],
)
def test_envelope_like_headers_off_the_sdk_layout_decode_in_wire_order(
    headers: dict[str, Any],
) -> None:
    message = Message(headers=headers, payload=EMPTY)
    [got] = EventStreamDecoder().receive_data(encode_message(message))
    assert_same_message(got, message)


def test_timestamps_in_other_zones_decode_as_the_same_instant_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    sent = datetime(2025, 1, 29, 14, 0, 0, 123000, tzinfo=plus_two)
    [got] = EventStreamDecoder().receive_data(encode_message(Message(headers={"t": sent})))
    assert got.headers["t"] == sent
    assert got.headers["t"].tzinfo is UTC  # type: ignore[union-attr]


def test_timestamps_are_floored_to_whole_milliseconds() -> None:
    sent = {
        "after": datetime(2025, 1, 1, 0, 0, 0, 999, tzinfo=UTC),
        "before": datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    }
    [got] = EventStreamDecoder().receive_data(encode_message(Message(headers=sent)))
    assert got.headers["after"] == datetime(2025, 1, 1, tzinfo=UTC)
    assert got.headers["before"] == datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def test_bytearray_payload_is_stored_as_bytes() -> None:
    assert type(Message(payload=bytearray(b"ab")).payload) is bytes  # type: ignore[arg-type]


def test_non_bytes_payload_is_refused() -> None:
    with pytest.raises(TypeError, match="Message.payload must be bytes, got str"):
        Message(payload="ab")  # type: ignore[arg-type]


ENCODE_FAILURES: dict[str, tuple[Message, type[EmulatorError], str]] = {
    "Int8 over 127": (
        Message(headers={"v": Int8(128)}),
        InvalidHeaderError,
        "header 'v': Int8 value 128 is outside -128..127",
    ),
    "Int16 under -32768": (
        Message(headers={"v": Int16(-32769)}),
        InvalidHeaderError,
        "header 'v': Int16 value -32769 is outside -32768..32767",
    ),
    "int over i32": (
        Message(headers={"v": 2**31}),
        InvalidHeaderError,
        r"header 'v': int \(i32\) value 2147483648 is outside -2147483648..2147483647",
    ),
    "Int64 over i64": (
        Message(headers={"v": Int64(2**63)}),
        InvalidHeaderError,
        "header 'v': Int64 value 9223372036854775808 is outside",
    ),
    "string over 65535 utf-8 bytes": (
        Message(headers={"v": "é" * 32768}),
        InvalidHeaderError,
        "header 'v': string value is 65536 bytes of utf-8, over the 65535-byte limit",
    ),
    "bytes over 65535": (
        Message(headers={"v": bytes(65536)}),
        InvalidHeaderError,
        "header 'v': byte array value is 65536 bytes, over the 65535-byte limit",
    ),
    "name over 255 bytes": (
        Message(headers={"n" * 256: True}),
        InvalidHeaderError,
        "is 256 bytes of utf-8, over the 255-byte limit",
    ),
    "empty name": (Message(headers={"": True}), InvalidHeaderError, "header name is empty"),
    "float value": (
        Message(headers={"v": 1.5}),  # type: ignore[dict-item]
        InvalidHeaderError,
        "header 'v': a float value has no event-stream header type",
    ),
    "naive datetime": (
        Message(headers={"v": datetime(2025, 1, 1)}),
        InvalidHeaderError,
        "header 'v': timestamp 2025-01-01T00:00:00 is naive",
    ),
    "headers block over 128 KiB": (
        Message(headers={"a": "x" * 65535, "b": "x" * 65535}),
        FrameTooLargeError,
        "headers block is 131080 bytes, over the 131072-byte limit",
    ),
    # A byte past the headers at the limit (see _at_the_limit): the encoder must not
    # make a frame its own decoder refuses.
    "headers block one byte over 128 KiB": (
        Message(headers={"a": "x" * 65535, "b": "x" * 65528}, payload=b"{}"),
        FrameTooLargeError,
        "headers block is 131073 bytes, over the 131072-byte limit",
    ),
    "payload over 24 MiB": (
        Message(payload=bytes(MAX_PAYLOAD_LENGTH + 1)),
        FrameTooLargeError,
        f"payload is {MAX_PAYLOAD_LENGTH + 1} bytes, over the {MAX_PAYLOAD_LENGTH}-byte limit",
    ),
}


@pytest.mark.parametrize("name", ENCODE_FAILURES)
def test_unencodable_messages_are_refused(name: str) -> None:
    message, error, match = ENCODE_FAILURES[name]
    with pytest.raises(error, match=match):
        encode_message(message)


# --------------------------------------------------------------------------- interop

SMITHY_HEADERS: dict[str, Any] = {
    "t": True,
    "f": False,
    "b": Byte(-128),
    "s": Short(32767),
    "i": -(2**31),
    "l": Long(2**63 - 1),
    "y": b"\x00\x01",
    "str": "héllo",
    # A half second is exact in binary, so smithy's float arithmetic keeps it.
    "ts": datetime(2025, 1, 29, 12, 0, 0, 500000, tzinfo=UTC),
    "id": SAMPLE_UUID,
}
SMITHY_AS_OURS: dict[str, Any] = {
    **SMITHY_HEADERS,
    "b": Int8(-128),
    "s": Int16(32767),
    "l": Int64(2**63 - 1),
}


def test_smithy_encoded_messages_decode_with_ours() -> None:
    data = EventMessage(headers=SMITHY_HEADERS, payload=b"payload").encode()
    [got] = EventStreamDecoder().receive_data(data)
    assert_same_message(got, Message(headers=SMITHY_AS_OURS, payload=b"payload"))


def test_our_messages_decode_with_smithy() -> None:
    data = encode_message(Message(headers=SMITHY_AS_OURS, payload=b"payload"))
    event = Event.decode(io.BytesIO(data))
    assert event is not None
    assert event.message.headers == SMITHY_HEADERS
    assert event.message.payload == b"payload"


def test_our_messages_decode_with_botocore() -> None:
    inner = encode_message(ALL_TYPES_MESSAGE)
    outer = encode_message(Message(headers={":date": TIMESTAMP, ":chunk-signature": SIGNATURE}))
    buffer = EventStreamBuffer()
    buffer.add_data(envelope(inner) + outer)
    signed, end = list(buffer)
    assert signed.headers == {":date": 1738152000123, ":chunk-signature": SIGNATURE}
    assert end.payload == b""
    inner_buffer = EventStreamBuffer()
    inner_buffer.add_data(signed.payload)
    [decoded] = list(inner_buffer)
    assert decoded.headers["b"] == -2
    assert decoded.headers["ts"] == 1738152000123
    assert decoded.headers["id"] == SAMPLE_UUID.bytes
    assert decoded.payload == b"hi"


# --------------------------------------------------------------------------- CRC functions


def test_the_codec_calls_awscrt_crc_functions_directly_when_they_check_out() -> None:
    import awscrt.checksums

    from emulator import eventstream

    assert eventstream.crc32 is not awscrt.checksums.crc32  # the C function, no wrapper
    data = bytes(range(256)) * 9
    assert eventstream.crc32(data, 0) == awscrt.checksums.crc32(data)
    assert eventstream.crc32(data[100:], eventstream.crc32(data[:100], 0)) == crc32(data)
    assert eventstream.combine_crc32(crc32(data[:100]), crc32(data[100:]), len(data) - 100) == (
        crc32(data)
    )


def test_the_codec_falls_back_to_awscrt_public_crc_functions(monkeypatch) -> None:
    """If awscrt's C functions moved or changed, the public wrappers are used."""
    import _awscrt
    import awscrt.checksums

    from emulator import eventstream

    monkeypatch.setattr(_awscrt, "checksums_crc32", lambda data, previous: 0)
    assert eventstream._native_crc_functions() == (
        awscrt.checksums.crc32,
        awscrt.checksums.combine_crc32,
    )
    monkeypatch.delattr(_awscrt, "checksums_crc32")
    assert eventstream._native_crc_functions()[0] is awscrt.checksums.crc32


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_a_headers_block_encoded_once_gives_the_same_bytes(name: str) -> None:
    """encode_with_headers(encode_headers(h), payload) is encode_message's output."""
    data, message = GOLDEN[name]
    assert encode_with_headers(encode_headers(message.headers), message.payload) == data


def test_transcript_messages_are_what_the_sdk_reads() -> None:
    """The transcriptEvent bytes: compact JSON (ensure_ascii, as json.dumps writes
    it) under the three event headers."""
    event = TranscriptResult(
        segment_id="s-1",
        begin=0.0,
        end=1.5,
        is_partial=False,
        content='Tá bien "ok"',
        channel_id="ch_0",
    )
    payload = json.dumps(event.to_json(), separators=(",", ":")).encode()
    expected = encode_message(
        Message(
            headers={
                ":message-type": "event",
                ":event-type": "transcriptEvent",
                ":content-type": "application/json",
            },
            payload=payload,
        )
    )
    assert transcript_payload(event).encode() == payload
    assert transcript_message(transcript_payload(event)) == expected
    assert encode_output(event) == expected
