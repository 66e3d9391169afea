"""Properties of the event-stream codec, checked by hypothesis over generated input."""

from __future__ import annotations

import datetime
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.errors import FramingError
from emulator.eventstream import (
    EventStreamDecoder,
    Int8,
    Int16,
    Int64,
    Message,
    encode_message,
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
