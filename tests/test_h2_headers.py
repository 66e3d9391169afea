"""The server reads request headers exactly as h2 and hpack do, only faster.

``emulator.hypercorn_h2`` decodes request headers with ``QuickDecoder``
(``emulator.hpack_codec``), which reads one-byte indexed fields inline and
hands everything else to hpack. Fed the same blocks (from hpack's encoder, with
and without Huffman coding, never indexed fields and table size updates, or
plain garbage), both must return the same headers or raise the same error, and
end with the same dynamic table. Both stand behind the same guard
(``check_block``: at most two table size updates, a block no longer than the
header list limit allows), tested against hpack itself below.

It also replaces h2's per-byte check of header names and values for illegal
characters (``emulator.header_checks``); the replacement must pass and reject
exactly what h2's does, with h2's words, at the same header.

The Huffman strings in those blocks are decoded in C, on hpack's own state
table, with hpack's results and errors for any bytes.

And h2's four header pipelines (normalizing and checking each block received
and sent) take a one-pass path for the plain requests and responses a server
sees; for every block and every kind of block, each must give what h2's gives:
the same headers of the same types, or the same error.
"""

from __future__ import annotations

import re
from typing import Any

import h2.exceptions
import h2.stream
import h2.utilities
import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator import speedups
from emulator.header_checks import (
    FAST_PIPELINES,
    STOCK_PIPELINES,
    STOCK_REJECT_ILLEGAL_CHARACTERS,
    plain_request,
    plain_response,
    reject_illegal_characters,
)
from emulator.hpack_codec import (
    STOCK_DECODE_HUFFMAN,
    GuardedDecoder,
    QuickDecoder,
    check_block,
    fast_decode_huffman,
)

#: What the SDK sends (its signature and user agent aside).
_SDK_REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":path", b"/medical-scribe-stream"),
    (b":authority", b"127.0.0.1:8443"),
    (b"content-type", b"application/vnd.amazon.eventstream"),
    (b"x-amzn-medscribe-session-id", b"6b299e86-0ff6-4120-9e12-1d4801dbbb54"),
    (b"x-amz-date", b"20261204T220900Z"),
]

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
        # hpack quotes the memoryview it failed on, by address: compare the words.
        return ("error", type(error), re.sub(r"<memory at 0x[0-9a-f]+>", "<memory>", str(error)))
    return ("ok", [(type(h), h[0], h[1]) for h in headers])


def _same_state(stock: hpack.Decoder, quick: hpack.Decoder) -> None:
    assert list(quick.header_table.dynamic_entries) == list(stock.header_table.dynamic_entries)
    assert quick.header_table_size == stock.header_table_size


def _decoders(max_list: int, max_table: int) -> tuple[hpack.Decoder, hpack.Decoder]:
    stock, quick = GuardedDecoder(), QuickDecoder()
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
@example(prefix=[], garbage=[b"\x41\x05abcd"])  # a value one byte short
@example(prefix=[], garbage=[b"\x41\x85abcd"])  # the same, Huffman-coded
@example(prefix=[], garbage=[b"\x7f\x80"])  # a name index cut off
@example(prefix=[], garbage=[b"\x7f\x01\x7f"])  # a value length cut off
@example(prefix=[], garbage=[b"?"])  # a size update cut off (its error quotes an address)
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


# --- the guard in front of both decoders ---------------------------------------------
@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x20" * 3, "More than two dynamic table size updates"),
        (b"\x3f\xe1\x1f" * 3 + b"\x82", "More than two dynamic table size updates"),
        (b"\x20" * 1_000_000, r"A header block of 1000000 bytes, larger than the header list"),
        (b"\x82" * (2**16 + 65), r"larger than the header list limit \(65536\) allows"),
    ],
    ids=["three-updates", "three-long-updates", "a-megabyte-of-updates", "oversized-block"],
)
def test_the_guard_refuses_what_would_cost_the_loop_before_decoding(block, error):
    """hpack decodes every update, a Python call each: a megabyte of them took a
    second of the event loop, yielding no header for any list limit to stop."""
    for decoder in (GuardedDecoder(), QuickDecoder()):
        decoder.max_header_list_size = 2**16
        with pytest.raises(hpack.HPACKError, match=error):
            decoder.decode(block, raw=True)
    stock = hpack.Decoder()
    stock.max_header_list_size = 2**16
    if block.startswith(b"\x20"):
        assert stock.decode(block, raw=True) == []  # hpack itself takes them all


@pytest.mark.parametrize(
    "block",
    [b"\x20\x82", b"\x20\x3f\xe1\x1f\x82", b"\x82" * (2**16 + 64), b"\x3f"],
    ids=["one-update", "two-updates", "a-block-at-the-limit", "an-update-cut-off"],
)
def test_the_guard_lets_through_what_hpack_allows(block):
    """Anything else reaches hpack, which decides as it always has."""
    stock, guarded = hpack.Decoder(), GuardedDecoder()
    stock.max_header_list_size = guarded.max_header_list_size = 2**16
    check_block(guarded, block)  # no error of its own
    assert _outcome(guarded, block) == _outcome(stock, block)


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
    assert _checked(reject_illegal_characters, headers) == _checked(
        STOCK_REJECT_ILLEGAL_CHARACTERS, headers
    )


def test_install_puts_the_quick_check_into_h2s_pipeline() -> None:
    from emulator.hypercorn_h2 import install

    install()
    assert h2.utilities._reject_illegal_characters is reject_illegal_characters
    # Through h2's whole pipeline, as a server receives it.
    flags = h2.utilities.HeaderValidationFlags(
        is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
    )
    good = _SDK_REQUEST
    assert list(h2.utilities.validate_headers(good, flags)) == good
    with pytest.raises(h2.exceptions.ProtocolError, match="uppercase header name"):
        list(h2.utilities.validate_headers([*good, (b"X-A", b"1")], flags))


# --- the encoder's indexed table ------------------------------------------------------
_response_header = st.builds(
    lambda make, name, value: make(name, value),
    st.sampled_from(
        [
            hpack.HeaderTuple,
            hpack.NeverIndexedHeaderTuple,
            lambda name, value: (name, value),  # what h2 hands on for a plain response
            lambda name, value: (name.decode("latin-1"), value.decode("latin-1")),
            lambda name, value: (name, value, False),
            lambda name, value: (name, value, True),
        ]
    ),
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
@example(blocks=[([(b"x-b", bytes([n])) for n in range(70)], None)] * 2)  # indexes past 63, 127
def test_the_indexed_table_encodes_the_same_bytes_as_hpacks(
    blocks: list[tuple[list[hpack.HeaderTuple], int | None]],
) -> None:
    from emulator.hpack_codec import LiteralEncoder

    stock, quick = hpack.Encoder(), LiteralEncoder()
    for headers, resize in blocks:
        if resize is not None:
            stock.header_table_size = resize
            quick.header_table_size = resize
        assert quick.encode(headers) == stock.encode(headers, huffman=False)
        assert quick.header_table.dynamic_entries == stock.header_table.dynamic_entries


# --- h2's header pipelines --------------------------------------------------------------
_PIPELINE_NAMES = [
    b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b":custom",
    b"te", b"host", b"cookie", b"connection", b"keep-alive", b"transfer-encoding",
    b"authorization", b"proxy-authorization", b"content-type", b"x-amzn-a", b"X-Upper",
    b" x-space", b"x-tab\t", b"x:colon", b"",
]  # fmt: skip
_PIPELINE_VALUES = [
    b"POST", b"CONNECT", b"https", b"/", b"", b"trailers", b"gzip", b"localhost", b"200",
    b" lead", b"trail ", b"tab\t", b"a\nb", b"nul\x00", b"x" * 30, b"c=1",
]  # fmt: skip
_pipeline_header = st.builds(
    lambda cls, name, value: cls(name, value),
    st.sampled_from([lambda *h: h, hpack.HeaderTuple, hpack.NeverIndexedHeaderTuple]),
    st.one_of(st.sampled_from(_PIPELINE_NAMES), st.binary(max_size=8)),
    st.one_of(st.sampled_from(_PIPELINE_VALUES), st.binary(max_size=12)),
)
_RESPONSE = [
    (b":status", b"200"),
    (b"x-amzn-request-id", b"6b299e86-0ff6-4120-9e12-1d4801dbbb54"),
    (b"content-type", b"application/vnd.amazon.eventstream"),
    (b"date", b"Fri, 04 Dec 2026 22:09:00 GMT"),
    (b"server", b"hypercorn-h2"),
]
# A plain block, then maybe some of it replaced, so that most examples come
# close to the common case and many just miss it.
_near_plain = st.builds(
    lambda base, edits, order: [edits.get(i, header) for i, header in enumerate(order(base))],
    st.sampled_from([_SDK_REQUEST, _RESPONSE]),
    st.dictionaries(st.integers(0, 6), _pipeline_header, max_size=2),
    st.sampled_from([list, lambda b: b[::-1], lambda b: b[1:] + b[:1]]),
)
_flags = st.builds(
    h2.utilities.HeaderValidationFlags,
    is_client=st.booleans(),
    is_trailer=st.booleans(),
    is_response_header=st.booleans(),
    is_push_promise=st.booleans(),
)


_SERVER_REQUEST = h2.utilities.HeaderValidationFlags(False, False, False, False)
_SERVER_RESPONSE = h2.utilities.HeaderValidationFlags(False, False, True, False)


def _through(pipeline: Any, headers: list[Any], *args: Any) -> tuple[Any, ...]:
    """What ``pipeline`` gives for ``headers``, read whole as h2 reads it, or its error."""
    try:
        out = list(pipeline(iter(headers), *args))
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(error), str(error))
    return ("ok", [(type(h), h[0], h[1]) for h in out])


@settings(max_examples=1000)
@given(
    headers=st.one_of(_near_plain, st.lists(_pipeline_header, max_size=8)),
    flags=_flags,
    split_cookies=st.booleans(),
    name=st.sampled_from(sorted(FAST_PIPELINES)),
)
@example(headers=_SDK_REQUEST, flags=_SERVER_REQUEST, split_cookies=False, name="validate_headers")
@example(
    headers=_RESPONSE, flags=_SERVER_RESPONSE, split_cookies=False, name="validate_outbound_headers"
)
@example(
    headers=_RESPONSE, flags=_SERVER_RESPONSE, split_cookies=True, name="normalize_outbound_headers"
)
@example(
    headers=[*_SDK_REQUEST, (b"cookie", b"a=1"), (b"cookie", b"b=2")],
    flags=_SERVER_REQUEST,
    split_cookies=False,
    name="normalize_inbound_headers",
)
# Each of these is one thing the one-pass path must leave to h2.
@example(
    headers=[*_RESPONSE, (b"authorization", b"secret")],  # sent never-indexed
    flags=_SERVER_RESPONSE,
    split_cookies=False,
    name="normalize_outbound_headers",
)
@example(
    headers=[*_RESPONSE, (b"connection", b"close")],  # dropped
    flags=_SERVER_RESPONSE,
    split_cookies=False,
    name="normalize_outbound_headers",
)
@example(
    headers=[*_RESPONSE, (b"cookie", b"a=1; b=2")],  # split
    flags=_SERVER_RESPONSE,
    split_cookies=True,
    name="normalize_outbound_headers",
)
@example(
    headers=[(b":method", b"CONNECT"), *_SDK_REQUEST[1:]],  # CONNECT with :scheme and :path
    flags=_SERVER_REQUEST,
    split_cookies=False,
    name="validate_headers",
)
@example(
    headers=[*_SDK_REQUEST[:2], (b":scheme", b"http"), *_SDK_REQUEST[2:]],  # twice
    flags=_SERVER_REQUEST,
    split_cookies=False,
    name="validate_headers",
)
@example(
    headers=[*_SDK_REQUEST[:2], (b":path", b""), *_SDK_REQUEST[3:]],  # empty
    flags=_SERVER_REQUEST,
    split_cookies=False,
    name="validate_headers",
)
@example(
    headers=[*_RESPONSE[:1], (b":path", b"/"), *_RESPONSE[1:]],  # a request's pseudo-header
    flags=_SERVER_RESPONSE,
    split_cookies=False,
    name="validate_outbound_headers",
)
def test_each_header_pipeline_gives_what_h2s_gives(
    headers: list[Any], flags: Any, split_cookies: bool, name: str
) -> None:
    args = (flags, split_cookies) if name == "normalize_outbound_headers" else (flags,)
    assert _through(FAST_PIPELINES[name], headers, *args) == _through(
        STOCK_PIPELINES[name], headers, *args
    )


def test_the_blocks_a_server_sees_most_take_the_one_pass_path() -> None:
    """Without this the pipelines above could pass by always deferring to h2."""
    server_request, server_response = _SERVER_REQUEST, _SERVER_RESPONSE
    assert plain_request(_SDK_REQUEST)
    assert plain_response(_RESPONSE)
    validated = FAST_PIPELINES["validate_headers"](iter(_SDK_REQUEST), server_request)
    assert type(validated) is list and validated == _SDK_REQUEST
    normalized = FAST_PIPELINES["normalize_outbound_headers"](iter(_RESPONSE), server_response)
    assert list(normalized) == _RESPONSE
    checked = FAST_PIPELINES["validate_outbound_headers"](normalized, server_response)
    assert type(checked) is list and checked == _RESPONSE
    # And what they must not pass: h2 answers for these.
    assert not plain_request([*_SDK_REQUEST, (b"te", b"gzip")])
    assert not plain_request(_SDK_REQUEST[1:])  # no :method
    assert not plain_response([(b"content-type", b"x"), (b":status", b"200")])
    assert not plain_response([*_RESPONSE, (b"X-Upper", b"1")])


def test_install_puts_the_one_pass_pipelines_where_h2_stream_calls_them() -> None:
    from emulator.hypercorn_h2 import install

    install()
    for name, fast in FAST_PIPELINES.items():
        assert getattr(h2.stream, name) is fast
        assert getattr(h2.utilities, name) is STOCK_PIPELINES[name]  # h2's own, kept
    install()  # again: still the same, no wrapping of a wrapper
    assert all(getattr(h2.stream, name) is fast for name, fast in FAST_PIPELINES.items())


# --- Huffman strings ---------------------------------------------------------------------
_needs_c = pytest.mark.skipif(
    speedups.huffman_decode is None, reason="emulator._speedups is not in use"
)
_huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def _decoded(decode: Any, data: bytes) -> tuple[Any, ...]:
    try:
        return ("ok", decode(data))
    except Exception as error:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(error), str(error))


@_needs_c
@settings(max_examples=1000)
@given(
    data=st.one_of(
        st.binary(max_size=40),
        st.binary(max_size=300).map(_huffman.encode),
        # An encoded string cut short, or with bytes after it (bad padding, EOS).
        st.tuples(st.binary(min_size=1, max_size=60).map(_huffman.encode), st.integers(-3, -1)).map(
            lambda t: t[0][: t[1]]
        ),
        st.tuples(
            st.binary(max_size=60).map(_huffman.encode), st.binary(min_size=1, max_size=4)
        ).map(lambda t: t[0] + t[1]),
    )
)
@example(data=b"")
@example(data=b"\xff\xff\xff\xff")  # EOS, 30 ones
@example(data=b"\x00")  # '0' then three bits of padding that are not all ones
@example(data=_huffman.encode(b"AWS4-HMAC-SHA256 Credential=AKIA/20261204/us-east-1/x"))
def test_huffman_strings_decode_as_hpack_decodes_them(data: bytes) -> None:
    assert _decoded(fast_decode_huffman, data) == _decoded(STOCK_DECODE_HUFFMAN, data)
    assert _decoded(fast_decode_huffman, memoryview(data)) == _decoded(STOCK_DECODE_HUFFMAN, data)


@_needs_c
def test_install_gives_hpack_the_c_huffman_decoder() -> None:
    import hpack.hpack

    from emulator.hypercorn_h2 import install

    install()
    assert hpack.hpack.decode_huffman is fast_decode_huffman
    # Through hpack's decoder, as the server reads a never-indexed authorization.
    block = hpack.Encoder().encode(
        [hpack.NeverIndexedHeaderTuple(b"authorization", b"AWS4-HMAC-SHA256 Signature=ab12")],
        huffman=True,
    )
    assert QuickDecoder().decode(block, raw=True) == [
        (b"authorization", b"AWS4-HMAC-SHA256 Signature=ab12")
    ]
