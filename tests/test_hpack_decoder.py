"""The server's HPACK decoder reads every header block exactly as hpack's own does.

``emulator.hypercorn_h2`` decodes request headers with ``_QuickDecoder``, which
reads one-byte indexed fields inline and hands everything else to hpack. Fed
the same blocks (from hpack's encoder, with and without Huffman coding, never
indexed fields and table size updates, or plain garbage), both must return
the same headers or raise the same error, and end with the same dynamic table.
"""

from __future__ import annotations

from typing import Any

import hpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator.hypercorn_h2 import DuplexH2Protocol, _QuickDecoder

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


def test_each_server_connection_decodes_with_it_under_h2s_limits() -> None:
    """DuplexH2Protocol swaps h2's decoder for this one, carrying h2's limits over;
    its encoder sends header strings without Huffman coding."""
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.config import Config
    from hypercorn.typing import ConnectionState

    async def send(event: Any) -> None:
        raise AssertionError("not called")

    unused: Any = None  # The constructor stores the app and task group only.
    protocol = DuplexH2Protocol(
        unused,
        Config(),
        WorkerContext(None),
        unused,
        ConnectionState({}),
        False,
        ("127.0.0.1", 50000),
        ("127.0.0.1", 80),
        send,
    )
    stock = hpack.Decoder()
    decoder = protocol.connection.decoder
    assert type(decoder) is _QuickDecoder
    assert decoder.max_header_list_size == protocol.connection.DEFAULT_MAX_HEADER_LIST_SIZE
    assert decoder.max_allowed_table_size == stock.max_allowed_table_size
    literal = protocol.connection.encoder.encode([(b"x-amzn-a", b"ValidationException")])
    assert b"ValidationException" in literal
