"""HPACK for the HTTP/2 server: cheaper coders, and a guard against costly blocks.

hpack (which h2 uses for every header block, one per stream each way) does all
of its work in Python: it cost over 1M instructions a stream. This module holds
the emulator's replacements, which :class:`emulator.hypercorn_h2.DuplexH2Protocol`
swaps into each connection (and :func:`emulator.hypercorn_h2.install` into hpack):

* :class:`LiteralEncoder` sends response headers without Huffman coding (valid
  HPACK, RFC 7541 §5.2), found in its :class:`_IndexedHeaderTable` through
  dicts; it is a :class:`CappedEncoder`, whose table holds 4 KiB at most
  whatever the client allows (hpack kept every response's unique ids for a
  connection's life under a client allowing 4 GiB).
* :class:`QuickDecoder` reads the indexed fields of a client's repeated request
  headers inline; it and :class:`GuardedDecoder` (hpack's own decoder) refuse
  before decoding a block whose decoding would stall the event loop
  (:func:`check_block`: hpack takes any number of table size updates).
* :func:`fast_decode_huffman` decodes Huffman strings on hpack's own state table in
  C (:mod:`emulator.speedups`), not a nibble at a time in Python.

Each gives hpack's bytes, headers, table state and errors: tests (hypothesis
among them) compare both on the same input, and
:func:`hpack_internals_present` checks at import that the installed hpack is
the one these were written against. No upstream issue is cited for them: hpack
is correct, only slow, or trusting of the client.
"""

from __future__ import annotations

import collections
from typing import Any

import hpack
import hpack.hpack
import hpack.huffman_table
import hpack.table

from . import speedups

# What emulator.hypercorn_h2, the emulator's HTTP/2 layer, and its tests use.
__all__ = [
    "CappedEncoder",
    "GuardedDecoder",
    "HUFFMAN_DECODE_TABLE",
    "LiteralEncoder",
    "QuickDecoder",
    "STOCK_DECODE_HUFFMAN",
    "check_block",
    "fast_decode_huffman",
    "hpack_internals_present",
]


class _IndexedHeaderTable(hpack.table.HeaderTable):
    """hpack's encoder table, searched through dicts instead of entry by entry.

    hpack's :meth:`search` walks the dynamic table for every header it encodes
    (about sixty entries once a connection's table is full). The newest entry
    of each ``(name, value)`` and of each name is kept here by its serial
    number, from which its index follows; a test encodes the same headers with
    both tables and demands the same bytes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._added = 0  # serial number of the next entry
        self._exact: dict[tuple[bytes, bytes], int] = {}
        self._named: dict[bytes, int] = {}
        # (serial, name, value) of each dynamic entry, newest first, as in the table.
        self._entries: collections.deque[tuple[int, bytes, bytes]] = collections.deque()

    def add(self, name: bytes, value: bytes) -> None:
        if 32 + len(name) + len(value) > self._maxsize:
            self._forget_all()
        else:
            serial = self._added
            self._added += 1
            self._entries.appendleft((serial, name, value))
            self._exact[name, value] = serial
            self._named[name] = serial
        super().add(name, value)  # the same entry, sizes and evictions (_shrink)

    def _shrink(self) -> None:
        entries = self.dynamic_entries
        kept = len(entries)
        super()._shrink()
        for _ in range(kept - len(entries)):  # evicted from the right, oldest first
            serial, name, value = self._entries.pop()
            if self._exact.get((name, value)) == serial:
                del self._exact[name, value]
            if self._named.get(name) == serial:
                del self._named[name]

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        hpack.table.HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]
        if not self.dynamic_entries:
            self._forget_all()

    def _forget_all(self) -> None:
        self._exact.clear()
        self._named.clear()
        self._entries.clear()

    def search(self, name: bytes, value: bytes) -> tuple[int, bytes, bytes | None] | None:
        partial = None
        static = self.STATIC_TABLE_MAPPING.get(name)
        if static:
            index = static[1].get(value)
            if index is not None:
                return index, name, value
            partial = (static[0], name, None)
        newest = self._added - 1 + self.STATIC_TABLE_LENGTH + 1
        serial = self._exact.get((name, value))
        if serial is not None:
            return newest - serial, name, value
        if partial is None:
            serial = self._named.get(name)
            if serial is not None:
                partial = (newest - serial, name, None)
        return partial


#: The most a response encoder's dynamic table holds, whatever the client allows.
_MAX_ENCODER_TABLE = 4096


class CappedEncoder(hpack.Encoder):
    """hpack's encoder, its dynamic table held to :data:`_MAX_ENCODER_TABLE`.

    A client's SETTINGS_HEADER_TABLE_SIZE is the most the server's encoder may
    use (RFC 7541 §4.2), not what it must: hpack took whatever it was given, and
    a client allowing 4 GiB had every response's request id and session id kept
    in the connection's table for its life, about half a kilobyte a stream. A
    larger setting than the cap changes nothing; a smaller one is followed.
    """

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        hpack.Encoder.header_table_size.fset(self, min(value, _MAX_ENCODER_TABLE))  # type: ignore[attr-defined]


class LiteralEncoder(CappedEncoder):
    """HPACK that sends header strings as they are, not Huffman-coded.

    Both are valid HPACK (RFC 7541 section 5.2) and every decoder reads both. In
    Python, Huffman coding was 37% of encoding a stream's response headers
    (560k -> 355k instructions for the emulator's eleven): a tenth of what a
    session costs to open. On the wire they grow by about a quarter, some tens
    of bytes a response, and only until the dynamic table holds them. Its table
    is an :class:`_IndexedHeaderTable`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _IndexedHeaderTable()

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        """hpack's ``encode(headers, huffman=False)``, byte for byte and table for
        table, in one loop: hpack spends three calls, two debug log calls and a
        bytearray per header on it (about 50 us for a response's eleven). h2
        calls ``encode(headers)``: this default is what it gets."""
        if huffman or isinstance(headers, dict):
            return super().encode(headers, huffman=huffman)
        table = self.header_table
        block: list[bytes] = []
        if table.resized:
            block.append(self._encode_table_size_change())
            table.resized = False
        for header in headers:
            kind = type(header)
            if not (kind is tuple and len(header) == 2 or kind is hpack.HeaderTuple):
                # Never-indexed or (name, value, sensitive): hpack's own way.
                sensitive = (
                    not header.indexable
                    if isinstance(header, hpack.HeaderTuple)
                    else len(header) > 2 and header[2]
                )
                pair = (hpack.hpack._to_bytes(header[0]), hpack.hpack._to_bytes(header[1]))
                block.append(self.add(pair, sensitive, False))
                continue
            name, value = header
            if type(name) is not bytes:
                name = hpack.hpack._to_bytes(name)
            if type(value) is not bytes:
                value = hpack.hpack._to_bytes(value)
            match = table.search(name, value)
            if match is None:  # a literal name and value, then indexed
                block.append(
                    b"\x40"
                    + _hpack_integer(len(name), 7, 0)
                    + name
                    + _hpack_integer(len(value), 7, 0)
                    + value
                )
                table.add(name, value)
            elif match[2] is not None:  # the whole header is in the table
                block.append(_hpack_integer(match[0], 7, 0x80))
            else:  # an indexed name, a literal value, then indexed
                block.append(
                    _hpack_integer(match[0], 6, 0x40) + _hpack_integer(len(value), 7, 0) + value
                )
                table.add(match[1], value)
        return b"".join(block)


def _hpack_integer(integer: int, prefix_bits: int, flags: int) -> bytes:
    """``hpack.hpack.encode_integer(integer, prefix_bits)`` with ``flags`` ORed into
    its first byte, as bytes: a one-byte integer (nearly all of them) from a
    table, any other from hpack."""
    if integer < (1 << prefix_bits) - 1:
        return _ONE_BYTE[integer | flags]
    field = hpack.hpack.encode_integer(integer, prefix_bits)
    field[0] |= flags
    return bytes(field)


_ONE_BYTE = tuple(bytes((n,)) for n in range(256))


#: Bytes a header block may exceed the header list limit by. A block is at most
#: the size of the list it decodes to plus a few bytes (each field costs 32 in
#: the list and at most a few bytes of its own in the block; two size updates
#: at the start come on top), so a larger one is refused before decoding.
_BLOCK_SLACK = 64


def check_block(decoder: hpack.Decoder, data: bytes) -> None:
    """Refuse, before decoding, a header block whose decoding would cost the
    event loop out of proportion to the headers it can give.

    Each byte of a block of dynamic table size updates (``0x20``: allowed only
    at its start, but hpack takes any number) is an instruction of its own,
    decoded in Python and yielding no header, so no list limit stops it: a
    client sending 1 MiB blocks of them stalled every connection for a second
    each. RFC 7541 §4.2 allows at most two at the start of a block (the
    smallest size, then the final one); more is a decoding error, which h2
    answers with GOAWAY ``PROTOCOL_ERROR``. A block longer than the header
    list limit allows is refused as an oversized list (h2: GOAWAY
    ``ENHANCE_YOUR_CALM``).
    """
    if len(data) > decoder.max_header_list_size + _BLOCK_SLACK:
        raise hpack.OversizedHeaderListError(
            f"A header block of {len(data)} bytes, larger than the header list limit "
            f"({decoder.max_header_list_size}) allows, has been received"
        )
    index, end, updates = 0, len(data), 0
    while index < end and data[index] & 0xE0 == 0x20:
        updates += 1
        if updates > 2:
            raise hpack.HPACKDecodingError(
                "More than two dynamic table size updates at the start of a header block "
                "(RFC 7541 §4.2 allows two)"
            )
        taken = _hpack_integer_at(data, index, 5)
        if taken is None:
            return  # cut off: hpack's own reading says so
        index = taken[1]


class GuardedDecoder(hpack.Decoder):
    """hpack's decoder behind :func:`check_block` (where :class:`QuickDecoder`
    cannot be used)."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        check_block(self, data)
        return super().decode(data, raw)


class QuickDecoder(GuardedDecoder):
    """hpack's decoder, with indexed header fields read inline.

    A client's later requests are mostly indexed fields, one byte each: a
    dynamic table hit for every header its previous requests had the same.
    hpack reads each through three calls, two debug log calls and two tuple
    constructions; a request's header block cost ~500k instructions. Here a
    field whose index fits its first byte is looked up directly, and a literal
    value under an indexed name (a request's session id, date and signature)
    is read inline when it lies whole in the block (34 -> 30 us an SDK
    request); every other representation goes through hpack's own methods,
    and the checks (list size, table size, a size update only at the start)
    are hpack's, in its order. A hypothesis test feeds both decoders the same
    blocks and demands identical headers, errors and table state. Only
    ``raw=True`` (what h2 asks for) takes this path.
    """

    def decode(self, data: bytes, raw: bool = False) -> Any:
        if not raw:
            return super().decode(data, raw)
        check_block(self, data)
        view = memoryview(data)
        plain = type(data) is bytes
        get_by_index = self.header_table.get_by_index
        headers: list[hpack.HeaderTuple] = []
        inflated_size = 0
        index = 0
        end = len(data)
        while index < end:
            first = data[index]
            header: hpack.HeaderTuple | None
            if first & 0x80 and first != 0xFF:
                # Indexed, the index within the first byte's 7-bit prefix.
                header = hpack.HeaderTuple(*get_by_index(first & 0x7F))
                consumed = 1
            elif first & 0x80:
                header, consumed = self._decode_indexed(view[index:])
            elif first & 0x40:
                # A literal value, then indexed: the request's own values (its
                # session id, date, signature) come so, the name from the table.
                taken = _indexed_name_literal(self, data, index, end) if plain else None
                if taken is None:
                    header, consumed = self._decode_literal_index(view[index:])
                else:
                    header, consumed = taken
            elif first & 0x20:
                if headers:
                    raise hpack.HPACKDecodingError(
                        "Table size update not at the start of the block"
                    )
                consumed = self._update_encoding_context(view[index:])
                header = None
            else:
                header, consumed = self._decode_literal_no_index(view[index:])
            if header is not None:
                headers.append(header)
                inflated_size += 32 + len(header[0]) + len(header[1])
                if inflated_size > self.max_header_list_size:
                    raise hpack.OversizedHeaderListError(
                        f"A header list larger than {self.max_header_list_size} has been received"
                    )
            index += consumed
        self._assert_valid_table_size()
        # hpack copies each header once more to make its parts bytes; they are.
        return headers


def _hpack_integer_at(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int] | None:
    """``hpack.hpack.decode_integer`` of the integer at ``pos``: ``(value, position
    after it)``, a one-byte integer read here and any other by hpack; None when
    it is cut off (hpack's own reading of the field then says so)."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    if value < mask:
        return value, pos + 1
    try:
        value, used = hpack.hpack.decode_integer(memoryview(data)[pos:], prefix_bits)
    except hpack.HPACKDecodingError:
        return None
    return value, pos + used


def _indexed_name_literal(
    decoder: hpack.Decoder, data: bytes, index: int, end: int
) -> tuple[hpack.HeaderTuple, int] | None:
    """hpack's ``_decode_literal_index`` of the field at ``index`` when its name is
    indexed and the field lies whole within ``data``: the same header, the same
    entry added to the table, the same errors (from the same table look-up and
    Huffman decoder). None for anything else: hpack reads it."""
    if not data[index] & 0x3F:
        return None  # a literal name
    found = _hpack_integer_at(data, index, 6)
    if found is None or found[1] >= end:
        return None
    name_index, at = found
    huffman = data[at] & 0x80
    found = _hpack_integer_at(data, at, 7)
    if found is None:
        return None
    length, at = found
    if at + length > end:
        return None  # truncated: hpack says so
    name = decoder.header_table.get_by_index(name_index)[0]
    value = data[at : at + length]
    if huffman:
        value = hpack.hpack.decode_huffman(value)
    decoder.header_table.add(name, value)
    return hpack.HeaderTuple(name, value), at + length - index


def hpack_internals_present() -> bool:
    """Whether the installed hpack keeps the private parts the two coders above
    use and answers as hpack 4.1: a few blocks, one of them evicting, must encode
    to the bytes hpack's encoder gives and decode to what its decoder gives."""
    try:
        stock_encoder, encoder = hpack.Encoder(), LiteralEncoder()
        stock_decoder, decoder = hpack.Decoder(), QuickDecoder()
        headers = [(b":status", b"200"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"v" * 40)]
        for size in (4096, 100, 4096):
            stock_encoder.header_table_size = encoder.header_table_size = size
            block = encoder.encode(headers)
            if block != stock_encoder.encode(headers, huffman=False):
                return False
            if decoder.decode(block, raw=True) != stock_decoder.decode(block, raw=True):
                return False
        return True
    except Exception:  # anything unexpected: hpack's own coders serve
        return False


def _huffman_table() -> bytes | None:
    """hpack's Huffman state machine as the C decoder reads it, if hpack still
    keeps it as 4,096 ``(next state, flags, byte)`` entries with these flags."""
    table = getattr(hpack.huffman_table, "HUFFMAN_TABLE", None)
    flags = (
        getattr(hpack.huffman_table, "HUFFMAN_COMPLETE", None),
        getattr(hpack.huffman_table, "HUFFMAN_EMIT_SYMBOL", None),
        getattr(hpack.huffman_table, "HUFFMAN_FAIL", None),
    )
    if flags != (1, 2, 4) or not isinstance(table, list) or len(table) != 4096:
        return None
    try:
        return bytes(field for entry in table for field in entry)
    except (TypeError, ValueError):
        return None


HUFFMAN_DECODE_TABLE = _huffman_table()
#: hpack's own, which ``hpack.hpack`` imports by name.
STOCK_DECODE_HUFFMAN: Any = getattr(hpack.huffman_table, "decode_huffman", None)
_HUFFMAN_ERRORS = {1: "Invalid Huffman string", 2: "Incomplete Huffman string"}


def fast_decode_huffman(huffman_string: bytes | bytearray | memoryview | None) -> bytes:
    """hpack's ``decode_huffman``, on the same state table, in C.

    hpack walks the table a nibble at a time in Python: 75 us for the SDK's
    ``authorization`` value, which is Huffman-coded and never indexed, so every
    stream pays it. The same walk in C takes about 1 us, with hpack's results
    and errors (a test compares both on any bytes).
    """
    if not huffman_string:
        return b""
    assert speedups.huffman_decode is not None and HUFFMAN_DECODE_TABLE is not None
    decoded = speedups.huffman_decode(huffman_string, HUFFMAN_DECODE_TABLE)
    if type(decoded) is bytes:
        return decoded
    raise hpack.HPACKDecodingError(_HUFFMAN_ERRORS[decoded])  # type: ignore[index]
