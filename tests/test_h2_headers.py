"""The server reads request headers exactly as h2 and hpack do, only faster.

``emulator.hypercorn_h2`` decodes request headers with ``_QuickDecoder``, which
reads one-byte indexed fields inline and hands everything else to hpack. Fed
the same blocks (from hpack's encoder, with and without Huffman coding, never
indexed fields and table size updates, or plain garbage), both must return
the same headers or raise the same error, and end with the same dynamic table.

It also replaces h2's per-byte check of header names and values for illegal
characters; the replacement must pass and reject exactly what h2's does, with
h2's words, at the same header.
"""

from __future__ import annotations

from typing import Any

import h2.exceptions
import h2.utilities
import hpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator.hypercorn_h2 import (
    _STOCK_REJECT_ILLEGAL_CHARACTERS,
    _QuickDecoder,
    _reject_illegal_characters,
)

_NAMES = [b":method", b":path", b":authority", b"content-type", b"authorization", b"x-amzn-a"]
_VALUES = [b"", b"POST", b"/medical-scribe-stream/", b"x" * 40, b"\xff\x00 bytes", b"v" * 300]

_header = st.builds(
    lambda cls, name, value: cls(name, value),
    st.sampled_from([hpack.HeaderTuple, hpack.NeverIndexedHeaderTuple]),
    st.one_of(st.sampled_from(_NAMES), st.binary(min_size=1, max_size=12)),
    st.one_of(st.sampled_from(_VALUES), st.binary(max_size=60)),
)
# One block: its headers, Huffman or not, and a new encoder table size first (or none).
_block = st.tuples(
    st.lists(_header, max_size=12),
    st.booleans(),
    st.one_of(st.none(), st.sampled_from([0, 64, 256, 4096, 8192])),
)


def _outcome(decoder: hpack.Decoder, block: bytes) -> tuple[Any, ...]:
    try:
        headers = decoder.decode(block, raw=True)
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(error), str(error))
    return ("ok", [(type(h), h[0], h[1]) for h in headers])


def _same_state(stock: hpack.Decoder, quick: hpack.Decoder) -> None:
    assert list(quick.header_table.dynamic_entries) == list(stock.header_table.dynamic_entries)
    assert quick.header_table_size == stock.header_table_size


def _decoders(max_list: int, max_table: int) -> tuple[hpack.Decoder, hpack.Decoder]:
    stock, quick = hpack.Decoder(), _QuickDecoder()
    for decoder in (stock, quick):
        decoder.max_header_list_size = max_list
        decoder.max_allowed_table_size = max_table
    return stock, quick


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(_block, min_size=1, max_size=8),
    max_list=st.sampled_from([2**16, 400, 90]),
    max_table=st.sampled_from([4096, 8192, 256]),
)
def test_encoded_blocks_decode_as_hpack_decodes_them(
    blocks: list[tuple[list[hpack.HeaderTuple], bool, int | None]], max_list: int, max_table: int
) -> None:
    encoder = hpack.Encoder()
    stock, quick = _decoders(max_list, max_table)
    for headers, huffman, resize in blocks:
        if resize is not None:
            encoder.header_table_size = resize
        block = encoder.encode(headers, huffman=huffman)
        expected = _outcome(stock, block)
        assert _outcome(quick, block) == expected
        _same_state(stock, quick)
        if expected[0] == "error":  # h2 ends the connection: the decoders' context is spent
            break


@given(
    headers=st.lists(_header, min_size=1, max_size=8),
    delta=st.integers(-2, 2),
    huffman=st.booleans(),
)
def test_the_header_list_limit_is_hpacks_to_the_byte(
    headers: list[hpack.HeaderTuple], delta: int, huffman: bool
) -> None:
    size = sum(32 + len(name) + len(value) for name, value in headers)
    stock, quick = _decoders(size + delta, 4096)
    block = hpack.Encoder().encode(headers, huffman=huffman)
    expected = _outcome(stock, block)
    assert (expected[0] == "ok") is (delta >= 0)
    assert _outcome(quick, block) == expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.lists(st.lists(_header, max_size=6), max_size=3),
    garbage=st.lists(st.binary(max_size=40), min_size=1, max_size=3),
)
@example(prefix=[], garbage=[b"\x80"])  # index 0
@example(prefix=[], garbage=[b"\xff"])  # an index cut off after its first byte
@example(prefix=[], garbage=[b"\xff\x80\x01"])  # an index past both tables
@example(prefix=[], garbage=[b"\x82\x3f\xe1\x1f"])  # a size update after a header
@example(prefix=[], garbage=[b"\x3f\xe1\xff\x03"])  # a size update above the maximum
def test_any_bytes_decode_or_fail_as_hpack_does(
    prefix: list[list[hpack.HeaderTuple]], garbage: list[bytes]
) -> None:
    encoder = hpack.Encoder()
    stock, quick = _decoders(2**16, 4096)
    for headers in prefix:
        block = encoder.encode(headers)
        assert _outcome(quick, block) == _outcome(stock, block)
    for block in garbage:
        expected = _outcome(stock, block)
        assert _outcome(quick, block) == expected
        _same_state(stock, quick)
        if expected[0] == "error":
            break


# --- h2's check of header characters -------------------------------------------------
_header_bytes = st.one_of(
    st.sampled_from([b"", b"a", b":path", b"x-amzn-a", b"content-type", b"Upper", b"a:b"]),
    st.binary(max_size=12),
    st.text(alphabet="ab:- \t\r\n\x00\x7fAZ\xe9", max_size=8).map(
        lambda text: text.encode("utf-8")
    ),
)


def _checked(check: Any, headers: list[tuple[bytes, bytes]]) -> tuple[Any, ...]:
    """What ``check`` yields, one header at a time, and how it ends."""
    flags = h2.utilities.HeaderValidationFlags(
        is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
    )
    passed: list[tuple[bytes, bytes]] = []
    try:
        for header in check(iter(headers), flags):
            passed.append(header)
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return (passed, type(error), str(error))
    return (passed, None, None)


@settings(max_examples=500)
@given(headers=st.lists(st.tuples(_header_bytes, _header_bytes), max_size=6))
@example(headers=[(b"x-a", b" leading space")])
@example(headers=[(b"x-a", b"trailing tab\t")])
@example(headers=[(b"x-a", b"ok"), (b"X-B", b"upper name")])
@example(headers=[(b"x-z", b"ok"), (b"x-Z", b"the last uppercase letter")])
@example(headers=[(b"x-@[", b"either side of the uppercase letters")])
@example(headers=[(b"x-a", b"line\nfeed")])
@example(headers=[(b"x\x7f", b"del in name")])
@example(headers=[(b"x:a", b"colon in name")])
@example(headers=[(b":path", b"/a pseudo-header keeps its colon")])
def test_header_characters_are_judged_as_h2_judges_them(
    headers: list[tuple[bytes, bytes]],
) -> None:
    assert _checked(_reject_illegal_characters, headers) == _checked(
        _STOCK_REJECT_ILLEGAL_CHARACTERS, headers
    )


def test_install_puts_the_quick_check_into_h2s_pipeline() -> None:
    from emulator.hypercorn_h2 import install

    install()
    assert h2.utilities._reject_illegal_characters is _reject_illegal_characters
    # Through h2's whole pipeline, as a server receives it.
    flags = h2.utilities.HeaderValidationFlags(
        is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
    )
    good = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", b"/"),
        (b"x-a", b"1"),
    ]
    assert list(h2.utilities.validate_headers(good, flags)) == good
    with pytest.raises(h2.exceptions.ProtocolError, match="uppercase header name"):
        list(h2.utilities.validate_headers([*good, (b"X-A", b"1")], flags))


# --- the encoder's indexed table ------------------------------------------------------
_response_header = st.builds(
    lambda cls, name, value: cls(name, value),
    st.sampled_from([hpack.HeaderTuple, hpack.HeaderTuple, hpack.NeverIndexedHeaderTuple]),
    st.sampled_from([b":status", b"content-type", b"x-amzn-requestid", b"date", b"x-b", b"x-c"]),
    st.one_of(st.sampled_from([b"200", b"400", b"a", b"b" * 100, b""]), st.binary(max_size=300)),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(
        st.tuples(
            st.lists(_response_header, max_size=10),
            st.one_of(st.none(), st.sampled_from([0, 40, 100, 256, 4096])),
        ),
        min_size=1,
        max_size=10,
    )
)
@example(blocks=[([hpack.HeaderTuple(b"x-b", b"1")], None)] * 3)
@example(blocks=[([hpack.HeaderTuple(b"x-b", b"v" * 5000)], None)])  # larger than the table
def test_the_indexed_table_encodes_the_same_bytes_as_hpacks(
    blocks: list[tuple[list[hpack.HeaderTuple], int | None]],
) -> None:
    from emulator.hypercorn_h2 import _LiteralEncoder

    stock, quick = hpack.Encoder(), _LiteralEncoder()
    for headers, resize in blocks:
        if resize is not None:
            stock.header_table_size = resize
            quick.header_table_size = resize
        assert quick.encode(headers) == stock.encode(headers, huffman=False)
        assert quick.header_table.dynamic_entries == stock.header_table.dynamic_entries
