"""Properties of the event-stream codec, checked by hypothesis over generated input."""

from __future__ import annotations

import datetime
import struct
import uuid
import zlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator.errors import FramingError
from emulator.eventstream import (
    EventStreamDecoder,
    Int8,
    Int16,
    Int64,
    Message,
    encode_message,
    open_envelope,
    sdk_audio_event,
)

names = st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.encode()) <= 255)
timestamps = st.integers(min_value=-(2**40), max_value=2**40).map(
    lambda ms: (
        datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(milliseconds=ms)
    )
)
values = st.one_of(
    st.booleans(),
    st.integers(-(2**7), 2**7 - 1).map(Int8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.binary(max_size=300),
    st.text(max_size=100),
    timestamps,
    st.uuids().map(lambda u: uuid.UUID(int=u.int)),
)
messages = st.builds(
    lambda headers, payload: Message(headers=headers, payload=payload),
    st.dictionaries(names, values, max_size=8),
    st.binary(max_size=2000),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(messages, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), max_size=6))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_encode_then_decode_round_trips_every_header_type_in_any_split(batch, cuts):
    wire = b"".join(encode_message(m) for m in batch)
    decoder = EventStreamDecoder()
    out: list[Message] = []
    for chunk in split(wire, cuts):
        out += decoder.receive_data(chunk)
    decoder.end_of_data()
    assert [(dict(m.headers), m.payload) for m in out] == [
        (dict(m.headers), m.payload) for m in batch
    ]
    for got, sent in zip(out, batch, strict=True):
        for name, value in sent.headers.items():
            assert type(got.headers[name]) is type(value)


@given(st.binary(max_size=4000), st.lists(st.integers(0, 10**6), max_size=6))
@settings(max_examples=300)
def test_arbitrary_bytes_raise_only_codec_errors_and_stay_bounded(data, cuts):
    """Any byte string, split anywhere: only FramingError, and never more buffered than
    one message at the limits can hold."""
    payload_limit, headers_limit = 1024, 256
    decoder = EventStreamDecoder(max_payload_length=payload_limit, max_headers_length=headers_limit)
    try:
        for chunk in split(data, cuts):
            decoder.receive_data(chunk)
            assert decoder.buffered <= 16 + payload_limit + headers_limit
        decoder.end_of_data()
    except FramingError:
        pass


@given(messages, st.integers(0, 10**6), st.integers(0, 7))
@settings(max_examples=200)
def test_any_corrupted_byte_is_caught(message, position, bit):
    """Flipping one bit anywhere in a message is always detected by a CRC or a check."""
    wire = bytearray(encode_message(message))
    wire[position % len(wire)] ^= 1 << bit
    decoder = EventStreamDecoder()
    try:
        decoded = decoder.receive_data(bytes(wire))
        decoder.end_of_data()
    except FramingError:
        return
    raise AssertionError(f"corruption went unnoticed: {decoded!r}")


# --- sdk_audio_event: the SDK's audio frame in one step --------------------------

SDK_AUDIO_HEADERS = {
    ":message-type": "event",
    ":event-type": "audioEvent",
    ":content-type": "application/json",
}


SDK_HEADERS_LENGTH = struct.unpack_from(
    ">I", encode_message(Message(headers=SDK_AUDIO_HEADERS, payload=b"")), 4
)[0]


def _general_audio_event(data: bytes) -> tuple[str, bytes] | None:
    """What the general path makes of ``data`` as one DATA frame: an audio event's
    type and payload, or None for anything else (another event, an error, an
    incomplete frame)."""
    decoder = EventStreamDecoder()
    try:
        received = decoder.receive_data(data)
        if len(received) != 1 or decoder.buffered or decoder.error_pending:
            return None
        envelope = open_envelope(received[0])
    except FramingError:
        return None
    inner = envelope.inner
    if envelope.signature is None or inner is None:
        return None
    if inner.headers.get(":message-type") != "event":
        return None
    event_type = inner.headers.get(":event-type")
    if event_type in ("audioEvent", "binaryAudioEvent"):
        return event_type, inner.payload
    return None


SDK_BINARY_AUDIO_HEADERS = {
    ":message-type": "event",
    ":event-type": "binaryAudioEvent",
    ":content-type": "application/octet-stream",
}

inner_headers = st.one_of(
    st.sampled_from([SDK_AUDIO_HEADERS, SDK_BINARY_AUDIO_HEADERS]),
    st.builds(
        lambda event_type, message_type, extra: {
            ":message-type": message_type,
            ":event-type": event_type,
            **extra,
        },
        st.sampled_from(["audioEvent", "binaryAudioEvent", "configurationEvent", "x"]),
        st.sampled_from(["event", "exception", ""]),
        st.dictionaries(names, values, max_size=2),
    ),
    st.dictionaries(names, values, max_size=3),
)


def _envelope(
    inner: bytes,
    millis: int,
    signature: bytes,
    *,
    date_name: bytes = b":date",
    date_type: int = 8,
    signature_name: bytes = b":chunk-signature",
) -> bytes:
    """A signed envelope around ``inner``, encoded here, independently of the codec
    (zlib's CRC32), so that any header bytes and any ``:date`` value can be written."""
    block = b"".join(
        (
            bytes([len(date_name)]),
            date_name,
            bytes([date_type]),
            struct.pack(">q", millis),
            bytes([len(signature_name)]),
            signature_name,
            b"\x06",
            struct.pack(">H", len(signature)),
            signature,
        )
    )
    lengths = struct.pack(">II", 16 + len(block) + len(inner), len(block))
    body = lengths + struct.pack(">I", zlib.crc32(lengths)) + block + inner
    return body + struct.pack(">I", zlib.crc32(body))


def _damaged(data: bytes, damage: object) -> bytes:
    frame = bytearray(data)
    if isinstance(damage, tuple):  # xor one byte
        frame[damage[0] % len(frame)] ^= damage[1]
    elif isinstance(damage, int):  # cut short
        del frame[len(frame) - 1 - damage % len(frame) :]
    elif isinstance(damage, bytes):  # bytes after it
        frame += damage
    return bytes(frame)


damages = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
    st.integers(0, 10**6),
    st.binary(min_size=1, max_size=20),
)
envelope_millis = st.one_of(
    st.just(1_795_000_000_000),
    st.integers(-(2**40), 2**40),
    st.integers(-(2**63), 2**63 - 1),
)


def sdk_frame(
    inner: bytes,
    inner_damage: object,
    millis: int,
    signature: bytes,
    names_and_type: tuple[bytes, int, bytes],
    damage: object,
) -> bytes:
    """An SDK-layout frame around ``inner`` damaged by ``inner_damage`` (before it
    is wrapped: only the inner message's own checks can catch it), with these
    envelope header names and :date type, then damaged by ``damage``."""
    date_name, date_type, signature_name = names_and_type
    return _damaged(
        _envelope(
            _damaged(inner, inner_damage),
            millis,
            signature,
            date_name=date_name,
            date_type=date_type,
            signature_name=signature_name,
        ),
        damage,
    )


def _perfect_frame_at(millis: int):
    """An example: the SDK's own audio frame, its :date ``millis``."""
    return example(
        SDK_AUDIO_HEADERS, b"{}", None, millis, bytes(32), (b":date", 8, b":chunk-signature"), None
    )


@given(
    inner_headers,
    st.binary(max_size=600),
    damages,
    envelope_millis,
    st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    st.sampled_from(
        [
            (b":date", 8, b":chunk-signature"),
            (b":date", 4, b":chunk-signature"),
            (b":datf", 8, b":chunk-signature"),
            (b":date", 8, b":chunk-signaturf"),
        ]
    ),
    damages,
)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
# Each check of sdk_audio_event, on an otherwise perfect SDK frame:
@example(  # :chunk-signature renamed: a bare event to the general path
    SDK_AUDIO_HEADERS, b"{}", None, 1, bytes(32), (b":date", 8, b":chunk-signaturf"), None
)
@example(  # :date renamed
    SDK_AUDIO_HEADERS, b"{}", None, 1, bytes(32), (b":datf", 8, b":chunk-signature"), None
)
@example(  # :date an int64, not a timestamp
    SDK_AUDIO_HEADERS, b"{}", None, 1, bytes(32), (b":date", 4, b":chunk-signature"), None
)
@example(  # a :date past year 9999
    SDK_AUDIO_HEADERS, b"{}", None, 2**62, bytes(32), (b":date", 8, b":chunk-signature"), None
)
# the first and last millisecond a datetime holds, and one past each
@_perfect_frame_at(253402300799999)
@_perfect_frame_at(253402300800000)
@_perfect_frame_at(-62135596800000)
@_perfect_frame_at(-62135596800001)
@example(  # the inner headers length grown by 3 (prelude CRC now wrong): the first
    # payload bytes would decode as one more header, x = true
    SDK_AUDIO_HEADERS,
    b"\x01x\x00rest",
    (7, SDK_HEADERS_LENGTH ^ (SDK_HEADERS_LENGTH + 3)),
    1,
    bytes(32),
    (b":date", 8, b":chunk-signature"),
    None,
)
def test_sdk_audio_event_agrees_with_the_general_path(
    headers, payload, inner_damage, millis, signature, names_and_type, damage
):
    """sdk_audio_event gives an event only where the decoder and open_envelope give
    that audio event with that payload; never something the general path would refuse.
    Damage inside the inner message is done before it is wrapped, so only the inner
    message's own checks can catch it."""
    inner = encode_message(Message(headers=headers, payload=payload))
    data = sdk_frame(inner, inner_damage, millis, signature, names_and_type, damage)
    expected = _general_audio_event(data)
    got = sdk_audio_event(data)
    assert got is None or got == expected
    # A fresh decoder's one-step read is the same read.
    assert EventStreamDecoder().receive_sdk_audio(data) == got
    if (
        damage is None
        and inner_damage is None
        and headers in (SDK_AUDIO_HEADERS, SDK_BINARY_AUDIO_HEADERS)
        and len(signature) == 32
        and names_and_type == (b":date", 8, b":chunk-signature")
    ):
        # The SDK's frames take the shortcut, whatever their :date, up to the
        # last one a datetime holds.
        assert got == expected
        if abs(millis) < 2**40:
            assert got == (headers[":event-type"], payload)


def _opened(message: Message) -> object:
    """open_envelope's result, or its error as (class, text)."""
    try:
        return open_envelope(message)
    except FramingError as error:
        return type(error), str(error)


@given(
    inner_headers,
    st.binary(max_size=600),
    damages,
    st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@example(  # the inner message's own CRC wrong, the envelope's right
    SDK_AUDIO_HEADERS, b"{}", (-1, 1), bytes(32)
)
@example(  # the inner prelude CRC wrong
    SDK_AUDIO_HEADERS, b"{}", (9, 1), bytes(32)
)
def test_an_envelope_decoded_from_the_wire_opens_as_one_built_by_hand(
    headers, payload, inner_damage, signature
):
    """The decoder hashes a signed envelope's inner message once and hands its CRC to
    open_envelope: the outcome, event or error word for word, is what the same
    envelope built by hand (no such hint) gives, and the hint is no part of the
    message's value."""
    inner = _damaged(encode_message(Message(headers=headers, payload=payload)), inner_damage)
    [decoded] = EventStreamDecoder().receive_data(_envelope(inner, 1_795_000_000_000, signature))
    by_hand = Message(headers=decoded.headers, payload=decoded.payload)
    assert decoded == by_hand
    assert repr(decoded) == repr(by_hand)
    assert _opened(decoded) == _opened(by_hand)
