"""Sans-IO codec for the AWS event-stream framing (``application/vnd.amazon.eventstream``).

A message on the wire::

    total_length    u32 BE   whole message, prelude and trailing CRC included
    headers_length  u32 BE   length of the headers block
    prelude_crc     u32 BE   CRC32 of the 8 bytes above
    headers         headers_length bytes, each: name_len u8, name utf-8, type u8, value
    payload         total_length - headers_length - 16 bytes
    message_crc     u32 BE   CRC32 of every byte before it

Header value types: 0 bool true and 1 bool false (no value bytes), 2 byte (i8),
3 short (i16), 4 integer (i32), 5 long (i64), 6 byte array (u16 length + bytes),
7 string (u16 length + utf-8), 8 timestamp (i64 milliseconds since the epoch),
9 uuid (16 bytes).  In Python: ``bool``, :class:`Int8`, :class:`Int16`, ``int``,
:class:`Int64`, ``bytes``, ``str``, ``datetime`` and ``UUID``.

:class:`EventStreamDecoder` is a push decoder in the style of h11 and botocore's
``EventStreamBuffer``: feed it bytes with :meth:`~EventStreamDecoder.receive_data`,
get back every complete :class:`Message`; :func:`encode_message` is the inverse.
:func:`open_envelope` unwraps the signed envelope the AWS SDK puts around every
input event.  Nothing here does I/O.

Decoding keeps three process-wide caches (header names, headers blocks, the SDK's
audio blocks), each bounded by a named limit and shared by every decoder and
thread; sharing is safe because an entry depends on its key's bytes alone and
holds immutable values, a cached headers dict being copied on the way in and out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NoReturn
from uuid import UUID

from awscrt import checksums as _checksums

from . import speedups
from .errors import (
    FrameTooLargeError,
    FramingError,
    InvalidHeaderError,
    InvalidLengthError,
    MessageCRCError,
    PreludeCRCError,
    TruncatedMessageError,
)


def _native_crc_functions() -> tuple[Callable[..., int], Callable[..., int]]:
    """awscrt's CRC32 and CRC32-combine, as the C functions behind
    ``awscrt.checksums.crc32`` and ``combine_crc32`` when they answer exactly as
    those do, else the public wrappers.

    The wrappers only add a Python call around the C function, and a signed
    audio frame takes six CRC calls. The check runs once, at import: if an
    awscrt release renames or changes the C functions, the public ones are used.
    """
    try:
        from _awscrt import checksums_crc32, checksums_crc32_combine

        sample = b"123456789"
        if (
            checksums_crc32(sample, 0) == _checksums.crc32(sample) == 0xCBF43926
            and checksums_crc32(sample[4:], checksums_crc32(sample[:4], 0)) == 0xCBF43926
            and checksums_crc32_combine(
                _checksums.crc32(sample[:4]), _checksums.crc32(sample[4:]), 5
            )
            == 0xCBF43926
        ):
            return checksums_crc32, checksums_crc32_combine
    except Exception:  # noqa: BLE001 - any surprise means: use the public API
        pass
    return _checksums.crc32, _checksums.combine_crc32


# Always called with the previous CRC given, which every form accepts. The CRC
# itself comes from emulator._speedups where that is in use (awscrt's software
# CRC is five times slower on CPUs without AVX-512); the combine stays awscrt's.
crc32, combine_crc32 = _native_crc_functions()
if speedups.crc32 is not None:
    crc32 = speedups.crc32


__all__ = [
    "PRELUDE_LENGTH",
    "MESSAGE_CRC_LENGTH",
    "MIN_MESSAGE_LENGTH",
    "MAX_PAYLOAD_LENGTH",
    "MAX_HEADERS_LENGTH",
    "MAX_HEADER_NAME_LENGTH",
    "MAX_HEADER_VALUE_LENGTH",
    "Int8",
    "Int16",
    "Int64",
    "HeaderValue",
    "Message",
    "encode_message",
    "encode_headers",
    "encode_with_headers",
    "EventStreamDecoder",
    "Envelope",
    "open_envelope",
    "sdk_audio_event",
    "ECHO_LIMIT",
    "quote_text",
    "describe_header_value",
]

#: total_length, headers_length and prelude_crc, three u32 fields.
PRELUDE_LENGTH = 12
#: The trailing CRC32 of everything before it.
MESSAGE_CRC_LENGTH = 4
#: A message with no headers and an empty payload is prelude plus trailing CRC.
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + MESSAGE_CRC_LENGTH
#: Event-stream service limit on one message's payload (Connect Health user guide).
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
#: Event-stream service limit on one message's headers block (Connect Health user guide).
MAX_HEADERS_LENGTH = 128 * 1024
#: A header name's length is a u8.
MAX_HEADER_NAME_LENGTH = 255
#: Byte-array and string header values carry a u16 length.
MAX_HEADER_VALUE_LENGTH = 65535


class Int8(int):
    """An ``int`` sent as header type 2 (byte, -128..127); decode returns it for type 2."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Int8({int(self)})"


class Int16(int):
    """An ``int`` sent as header type 3 (short, i16); decode returns it for type 3."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Int16({int(self)})"


class Int64(int):
    """An ``int`` sent as header type 5 (long, i64); decode returns it for type 5."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Int64({int(self)})"


type HeaderValue = bool | Int8 | Int16 | int | Int64 | bytes | str | datetime | UUID
"""A header value; its Python type picks the wire type (plain ``int`` is i32)."""

#: Past this many characters, a message quoting a client's header text cuts it,
#: as :func:`emulator.shapes.describe_value` cuts a JSON text.
ECHO_LIMIT = 2048
#: The wire names and type codes of the integer header types, by Python type.
_INT_TYPE_NAMES: dict[type, tuple[str, int]] = {
    Int8: ("a byte", 2),
    Int16: ("a short", 3),
    int: ("an integer", 4),
    Int64: ("a long", 5),
}


def quote_text(text: str) -> str:
    """``text`` quoted for a message (its repr), cut past :data:`ECHO_LIMIT`
    characters: ``'aaa...' (60000 characters)``."""
    if len(text) <= ECHO_LIMIT:
        return repr(text)
    return f"{text[:ECHO_LIMIT]!r}... ({len(text)} characters)"


def describe_header_value(value: object) -> str:
    """A received header value as a message names it: its event-stream type (name
    and code, as any client's codec knows them) and its value, e.g. ``a byte array
    header (type 6) of 10 bytes, 'audioEvent' in UTF-8``."""
    if isinstance(value, bool):
        return f"a boolean header (type {0 if value else 1}, {str(value).lower()})"
    if isinstance(value, int):
        label, code = _INT_TYPE_NAMES.get(type(value), _INT_TYPE_NAMES[int])
        return f"{label} header (type {code}) holding {int(value)}"
    if isinstance(value, bytes):
        size = f"a byte array header (type 6) of {len(value)} bytes"
        try:
            return f"{size}, {quote_text(value.decode('utf-8'))} in UTF-8"
        except UnicodeDecodeError:
            shown = value[:32].hex()
            return f"{size}, {shown}{'...' if len(value) > 32 else ''} in hex"
    if isinstance(value, str):
        return f"a string header (type 7) holding {quote_text(value)}"
    if isinstance(value, datetime):
        shown = value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"a timestamp header (type 8) holding {shown}"
    if isinstance(value, UUID):
        return f"a uuid header (type 9) holding {value}"
    return quote_text(repr(value))


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """One event-stream message: headers (in wire order) and payload bytes.

    Values are only checked when encoded, by :func:`encode_message`. A
    ``bytearray`` or ``memoryview`` payload is stored as ``bytes``; any other
    non-bytes payload raises :class:`TypeError`.
    """

    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""
    # Set by the decoder for a signed envelope: the CRC32 of ``payload`` less its
    # last 4 bytes, i.e. the message CRC the inner message must carry, which
    # open_envelope then need not hash again. Not part of the message's value.
    _payload_crc: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.payload) is not bytes:
            if not isinstance(self.payload, bytes | bytearray | memoryview):
                raise TypeError(f"Message.payload must be bytes, got {type(self.payload).__name__}")
            object.__setattr__(self, "payload", bytes(self.payload))

    def encode(self) -> bytes:
        """Return the wire bytes of this message; see :func:`encode_message`."""
        return encode_message(self)


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

_TYPE_NAMES = (
    "bool true",
    "bool false",
    "byte",
    "short",
    "integer",
    "long",
    "byte array",
    "string",
    "timestamp",
    "uuid",
)
# Bytes of value after the type byte, for the fixed-size types (6 and 7 are u16-prefixed).
_FIXED_SIZE = (0, 0, 1, 2, 4, 8, -1, -1, 8, 16)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


# --------------------------------------------------------------------------- encode


def _encode_name(name: object) -> bytes:
    if not isinstance(name, str):
        raise InvalidHeaderError(f"header name {name!r} is a {type(name).__name__}, not a str")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidHeaderError(f"header name {name!r} is not encodable as utf-8: {exc}") from None
    if not raw:
        raise InvalidHeaderError("header name is empty")
    if len(raw) > MAX_HEADER_NAME_LENGTH:
        raise InvalidHeaderError(
            f"header name {name[:40]!r}... is {len(raw)} bytes of utf-8, "
            f"over the {MAX_HEADER_NAME_LENGTH}-byte limit of its u8 length"
        )
    return bytes((len(raw),)) + raw


# The names every SDK message carries, with their length byte, so encode skips the checks.
_COMMON_NAMES = (
    ":message-type",
    ":event-type",
    ":exception-type",
    ":error-code",
    ":error-message",
    ":content-type",
    ":date",
    ":chunk-signature",
)
_NAME_BYTES = {name: _encode_name(name) for name in _COMMON_NAMES}

_INT_RANGES: dict[type, tuple[str, int, struct.Struct, int, int]] = {
    Int8: ("Int8", 2, _I8, -(2**7), 2**7 - 1),
    Int16: ("Int16", 3, _I16, -(2**15), 2**15 - 1),
    int: ("int (i32)", 4, _I32, -(2**31), 2**31 - 1),
    Int64: ("Int64", 5, _I64, -(2**63), 2**63 - 1),
}


def _encode_value(name: str, value: object) -> bytes:
    """Return type byte + value bytes for one header; raise InvalidHeaderError."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidHeaderError(
                f"header {name!r}: string value is not encodable as utf-8: {exc}"
            ) from None
        if len(raw) > MAX_HEADER_VALUE_LENGTH:
            raise InvalidHeaderError(
                f"header {name!r}: string value is {len(raw)} bytes of utf-8, "
                f"over the {MAX_HEADER_VALUE_LENGTH}-byte limit of its u16 length"
            )
        return b"\x07" + _U16.pack(len(raw)) + raw
    if isinstance(value, bool):
        return b"\x00" if value else b"\x01"
    if isinstance(value, int):
        kind = next(k for k in (Int8, Int16, Int64, int) if isinstance(value, k))
        label, type_code, packer, low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise InvalidHeaderError(
                f"header {name!r}: {label} value {int(value)} is outside {low}..{high}"
            )
        return bytes((type_code,)) + packer.pack(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if len(raw) > MAX_HEADER_VALUE_LENGTH:
            raise InvalidHeaderError(
                f"header {name!r}: byte array value is {len(raw)} bytes, "
                f"over the {MAX_HEADER_VALUE_LENGTH}-byte limit of its u16 length"
            )
        return b"\x06" + _U16.pack(len(raw)) + raw
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            # A naive datetime would silently mean the host's local time.
            raise InvalidHeaderError(
                f"header {name!r}: timestamp {value.isoformat()} is naive; "
                "give it a timezone (e.g. datetime.UTC)"
            )
        # Exact integer arithmetic: value.timestamp() * 1000 loses milliseconds to floats.
        millis = (value - _EPOCH) // _ONE_MS
        return b"\x08" + _I64.pack(millis)
    if isinstance(value, UUID):
        return b"\x09" + value.bytes
    raise InvalidHeaderError(
        f"header {name!r}: a {type(value).__name__} value has no event-stream header type "
        "(use bool, Int8, Int16, int, Int64, bytes, str, datetime or UUID)"
    )


def _encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    parts: list[bytes] = []
    for name, value in headers.items():
        name_bytes = _NAME_BYTES.get(name) if type(name) is str else None
        parts.append(name_bytes if name_bytes is not None else _encode_name(name))
        parts.append(_encode_value(name, value))
    return b"".join(parts)


def encode_message(message: Message) -> bytes:
    """Return the wire bytes of ``message``: prelude, headers in mapping order, payload, CRC.

    Raises :class:`InvalidHeaderError` for a header name or value that has no
    encoding (unsupported type, integer out of its type's range, naive datetime,
    name over 255 or value over 65535 bytes, empty name) and
    :class:`FrameTooLargeError` when the headers block exceeds
    :data:`MAX_HEADERS_LENGTH` or the payload :data:`MAX_PAYLOAD_LENGTH`.
    """
    return encode_with_headers(_encode_headers(message.headers), message.payload)


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """Return the headers block of ``headers``, in mapping order, for
    :func:`encode_with_headers`; raises as :func:`encode_message` does."""
    return _encode_headers(headers)


def encode_with_headers(headers_block: bytes, payload: bytes) -> bytes:
    """:func:`encode_message` for a headers block encoded once beforehand with
    :func:`encode_headers` (a stream sends many messages with the same headers).

    Raises :class:`FrameTooLargeError` when ``headers_block`` exceeds
    :data:`MAX_HEADERS_LENGTH` or ``payload`` :data:`MAX_PAYLOAD_LENGTH`.
    """
    headers_length = len(headers_block)
    if headers_length > MAX_HEADERS_LENGTH:
        raise FrameTooLargeError(
            f"headers block is {headers_length} bytes, over the {MAX_HEADERS_LENGTH}-byte limit"
        )
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise FrameTooLargeError(
            f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_LENGTH}-byte limit"
        )
    lengths = _LENGTHS.pack(MIN_MESSAGE_LENGTH + headers_length + len(payload), headers_length)
    prelude_crc = crc32(lengths, 0)
    prelude_crc_bytes = _U32.pack(prelude_crc)
    # The message CRC continues from the prelude CRC, which already covers the lengths.
    message_crc = crc32(payload, crc32(headers_block, crc32(prelude_crc_bytes, prelude_crc)))
    return b"".join((lengths, prelude_crc_bytes, headers_block, payload, _U32.pack(message_crc)))


# --------------------------------------------------------------------------- decode

# Interned names: decoded names share these str objects (and their cached hashes).
_NAME_CACHE: dict[bytes, str] = {name.encode(): name for name in _COMMON_NAMES}
#: Bounded so a client sending ever new names cannot grow it (256 names of at most
#: 255 bytes); the SDK's 5 names are among the 8 preloaded, which stay: names past
#: the limit are decoded each time instead of evicting them.
_NAME_CACHE_LIMIT = 256
# Whole headers blocks made only of bool/int/string headers (``:message-type: event``,
# ``:event-type: audioEvent``...) repeat verbatim in every event, so their decoded
# form is kept; blocks holding timestamps, byte arrays or UUIDs (the envelope's
# ``:date`` and ``:chunk-signature``) differ every time and are not.
_BLOCK_CACHE: dict[bytes, dict[str, HeaderValue]] = {}
#: Bounded so a client sending ever new blocks cannot grow it; the SDK sends 4,
#: one per input event type (configuration, audio, binary audio, session control),
#: and a full cache is cleared, which costs only decoding them again.
_BLOCK_CACHE_LIMIT = 128
#: The SDK's blocks are 80-94 bytes; larger ones are not kept, so the cache holds
#: at most 64 KiB of keys instead of 128 blocks of up to MAX_HEADERS_LENGTH (16 MiB).
_BLOCK_CACHE_MAX_BYTES = 512

# The SDK's envelope headers, always this layout: ``:date`` (type 8, i64 milliseconds)
# then ``:chunk-signature`` (type 6, u16 length 32, the 32-byte SHA-256 HMAC). One
# struct reads the lot, the fixed parts included, so a match costs a single unpack.
_ENVELOPE_DATE = b"\x05:date\x08"
_ENVELOPE_SIGNATURE = b"\x10:chunk-signature\x06\x00\x20"
_ENVELOPE_HEADERS = struct.Struct(f">{len(_ENVELOPE_DATE)}sq{len(_ENVELOPE_SIGNATURE)}s32s")


def _describe(name: str, offset: int) -> str:
    return f"header {name!r} at offset {offset}"


def _decode_headers(block: bytes) -> dict[str, HeaderValue]:
    """Decode a whole headers block; raise InvalidHeaderError naming the bad header."""
    cached = _BLOCK_CACHE.get(block)
    if cached is not None:
        return cached.copy()
    end = len(block)
    headers: dict[str, HeaderValue] = {}
    cacheable = end <= _BLOCK_CACHE_MAX_BYTES
    pos = 0
    while pos < end:
        start = pos
        name_length = block[pos]
        pos += 1
        if pos + name_length + 1 > end:
            raise InvalidHeaderError(
                f"header at offset {start} is truncated: its {name_length}-byte name and "
                f"type byte need {name_length + 2} bytes but the {end}-byte headers block "
                f"has {end - start} left"
            )
        if name_length == 0:
            raise InvalidHeaderError(f"header at offset {start} has an empty name")
        raw_name = block[pos : pos + name_length]
        name = _NAME_CACHE.get(raw_name)
        if name is None:
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidHeaderError(
                    f"header at offset {start}: name {raw_name!r} is not valid utf-8: {exc}"
                ) from None
            if len(_NAME_CACHE) < _NAME_CACHE_LIMIT:
                _NAME_CACHE[raw_name] = name
        pos += name_length
        type_code = block[pos]
        pos += 1
        if type_code == 7 or type_code == 6:
            if pos + 2 > end:
                raise InvalidHeaderError(
                    f"{_describe(name, start)} is truncated: its {_TYPE_NAMES[type_code]} "
                    f"length needs 2 bytes but the {end}-byte headers block has {end - pos} left"
                )
            (size,) = _U16.unpack_from(block, pos)
            pos += 2
            if pos + size > end:
                raise InvalidHeaderError(
                    f"{_describe(name, start)} is truncated: its {_TYPE_NAMES[type_code]} "
                    f"value needs {size} bytes but the {end}-byte headers block has "
                    f"{end - pos} left"
                )
            raw = block[pos : pos + size]
            pos += size
            if type_code == 7:
                try:
                    value: HeaderValue = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidHeaderError(
                        f"{_describe(name, start)}: string value is not valid utf-8: {exc}"
                    ) from None
            else:
                value = raw
                cacheable = False
        elif type_code > 9:
            raise InvalidHeaderError(
                f"{_describe(name, start)} has unknown value type {type_code} (valid types are 0-9)"
            )
        else:
            size = _FIXED_SIZE[type_code]
            if pos + size > end:
                raise InvalidHeaderError(
                    f"{_describe(name, start)} is truncated: its {_TYPE_NAMES[type_code]} "
                    f"value needs {size} bytes but the {end}-byte headers block has "
                    f"{end - pos} left"
                )
            if type_code == 8:
                (millis,) = _I64.unpack_from(block, pos)
                try:
                    # timedelta * int is exact, unlike datetime.fromtimestamp(millis / 1000).
                    value = _EPOCH + _ONE_MS * millis
                except OverflowError:
                    raise InvalidHeaderError(
                        f"{_describe(name, start)}: timestamp {millis} ms since the epoch "
                        "is outside the years 1 to 9999, the timestamps the emulator reads "
                        "(a signing time, as :date is, falls well within them)"
                    ) from None
                cacheable = False
            elif type_code == 4:
                (value,) = _I32.unpack_from(block, pos)
            elif type_code == 0:
                value = True
            elif type_code == 1:
                value = False
            elif type_code == 9:
                value = UUID(bytes=block[pos : pos + 16])
                cacheable = False
            elif type_code == 2:
                value = Int8(_I8.unpack_from(block, pos)[0])
            elif type_code == 3:
                value = Int16(_I16.unpack_from(block, pos)[0])
            else:
                value = Int64(_I64.unpack_from(block, pos)[0])
            pos += size
        if name in headers:
            raise InvalidHeaderError(f"{_describe(name, start)} repeats an earlier header name")
        headers[name] = value
    if cacheable:
        if len(_BLOCK_CACHE) >= _BLOCK_CACHE_LIMIT:
            _BLOCK_CACHE.clear()
        _BLOCK_CACHE[block] = headers.copy()
    return headers


type _Prelude = tuple[int, int, int]
"""``(total_length, headers_length, prelude_crc)`` of a prelude that passed the checks."""


def _read_prelude(
    view: memoryview, pos: int, max_payload_length: int, max_headers_length: int, /
) -> _Prelude:
    """Return the checked prelude at ``pos``; raise the error that describes a bad one.

    Everything here is decided from the 12 prelude bytes alone, so a message over
    the limits is refused before any of its body is buffered.
    """
    prelude: _Prelude = _PRELUDE.unpack_from(view, pos)
    total_length, headers_length, prelude_crc = prelude
    room = total_length - MIN_MESSAGE_LENGTH  # bytes left for headers and payload
    if (
        headers_length > room
        or headers_length > max_headers_length
        or room - headers_length > max_payload_length
        or crc32(view[pos : pos + 8], 0) != prelude_crc
    ):
        _raise_prelude_error(view, pos, max_payload_length, max_headers_length)
    return prelude


def _raise_prelude_error(
    view: memoryview, pos: int, max_payload_length: int, max_headers_length: int, /
) -> NoReturn:
    """Raise the precise error for a prelude that :func:`_read_prelude` rejected."""
    total_length, headers_length, prelude_crc = _PRELUDE.unpack_from(view, pos)
    computed = crc32(view[pos : pos + 8], 0)
    # The CRC first: when it is wrong the length fields are noise.
    if computed != prelude_crc:
        raise PreludeCRCError(
            f"prelude CRC32 mismatch: computed 0x{computed:08x}, frame says 0x{prelude_crc:08x}"
        )
    if total_length < MIN_MESSAGE_LENGTH:
        raise InvalidLengthError(
            f"message total length {total_length} is below the {MIN_MESSAGE_LENGTH}-byte minimum"
        )
    room = total_length - MIN_MESSAGE_LENGTH
    if headers_length > room:
        raise InvalidLengthError(
            f"headers length {headers_length} does not fit in message total length "
            f"{total_length} (at most {room} bytes besides the {MIN_MESSAGE_LENGTH} bytes "
            "of prelude and CRC)"
        )
    if headers_length > max_headers_length:
        raise FrameTooLargeError(
            f"headers length {headers_length} exceeds the {max_headers_length}-byte limit"
        )
    raise FrameTooLargeError(
        f"payload length {room - headers_length} (total {total_length} - headers "
        f"{headers_length} - {MIN_MESSAGE_LENGTH}) exceeds the {max_payload_length}-byte limit"
    )


# Decoded headers and payload are valid by construction, so decode fills the slots
# directly instead of going through the frozen __init__ (object.__setattr__ per
# field) and __post_init__: a sizeable share of the cost of a small message.
_new_object = object.__new__
_set_headers = vars(Message)["headers"].__set__
_set_payload = vars(Message)["payload"].__set__
_set_payload_crc = vars(Message)["_payload_crc"].__set__


def _decode_body(
    view: memoryview,
    pos: int,
    prelude: _Prelude,
    known_crc: int | None = None,
    data: bytes | None = None,
) -> Message:
    """Decode the complete message at ``pos``, whose prelude was checked already.

    ``data``, when given, is the ``bytes`` object ``view`` is a view of: its
    slices are the payload and headers block at once, a copy without the
    intermediate memoryview.

    ``known_crc``, when given, is the CRC32 of the message less its last 4
    bytes, already computed by whoever decoded the envelope around it.
    """
    total_length, headers_length, prelude_crc = prelude
    crc_at = pos + total_length - MESSAGE_CRC_LENGTH
    (message_crc,) = _U32.unpack_from(view, crc_at)
    headers_at = pos + PRELUDE_LENGTH
    payload_at = headers_at + headers_length
    envelope_headers = None
    payload_crc = None
    if headers_length == _ENVELOPE_HEADERS.size:
        envelope_headers = _ENVELOPE_HEADERS.unpack_from(view, headers_at)
        if envelope_headers[0] != _ENVELOPE_DATE or envelope_headers[2] != _ENVELOPE_SIGNATURE:
            envelope_headers = None
    if known_crc is not None:
        computed = known_crc
    elif envelope_headers is not None and crc_at - payload_at >= MIN_MESSAGE_LENGTH:
        # A signed envelope: its payload is the inner message, which open_envelope
        # checks too. Hash those bytes once: the inner message's CRC (over all but
        # its last 4 bytes), continued over the last 4, combined with the CRC of
        # the envelope's own first bytes gives the envelope's CRC.
        inner_crc_at = crc_at - MESSAGE_CRC_LENGTH
        payload_crc = crc32(view[payload_at:inner_crc_at], 0)
        computed = combine_crc32(
            crc32(view[pos + 8 : payload_at], prelude_crc),
            crc32(view[inner_crc_at:crc_at], payload_crc),
            crc_at - payload_at,
        )
    else:
        # Continue from the verified prelude CRC rather than re-hash the first 8 bytes.
        computed = crc32(view[pos + 8 : crc_at], prelude_crc)
    if computed != message_crc:
        raise MessageCRCError(
            f"message CRC32 mismatch: computed 0x{computed:08x}, frame says 0x{message_crc:08x}"
        )
    headers: dict[str, HeaderValue] | None = None
    if envelope_headers is not None:
        try:
            # timedelta * int is exact, unlike datetime.fromtimestamp(millis / 1000).
            headers = {
                ":date": _EPOCH + _ONE_MS * envelope_headers[1],
                ":chunk-signature": envelope_headers[3],
            }
        except OverflowError:
            pass  # _decode_headers reports it
    if headers is None:
        if not headers_length:
            headers = {}
        elif data is not None:
            headers = _decode_headers(data[headers_at:payload_at])
        else:
            headers = _decode_headers(view[headers_at:payload_at].tobytes())
    message = _new_object(Message)
    _set_headers(message, headers)
    _set_payload(
        message,
        data[payload_at:crc_at] if data is not None else view[payload_at:crc_at].tobytes(),
    )
    _set_payload_crc(message, payload_crc)
    return message


class EventStreamDecoder:
    """Push decoder: bytes in, complete :class:`Message` objects out.

    At most one incomplete message is buffered, and its size was checked against
    the limits from its prelude before any of its body was kept. After any
    :class:`~emulator.errors.FramingError` the decoder is unusable: every later
    call raises an error of the same class.
    """

    __slots__ = (
        "_buffer",
        "_prelude",
        "_consumed",
        "_error",
        "_pending",
        "_max_payload_length",
        "_max_headers_length",
        "_sdk_limits",
    )

    def __init__(
        self,
        *,
        max_payload_length: int = MAX_PAYLOAD_LENGTH,
        max_headers_length: int = MAX_HEADERS_LENGTH,
    ) -> None:
        self._max_payload_length = max_payload_length
        self._max_headers_length = max_headers_length
        # Whether this decoder takes all that sdk_audio_event does (it reads with
        # the default limits): otherwise receive_sdk_audio leaves every frame to
        # receive_data, which refuses what is over this decoder's limits.
        self._sdk_limits = (
            max_payload_length >= MAX_PAYLOAD_LENGTH and max_headers_length >= MAX_HEADERS_LENGTH
        )
        self._buffer = bytearray()
        # The checked prelude of the incomplete message at the start of the buffer.
        self._prelude: _Prelude | None = None
        # Stream offset of the buffer's first byte, for error messages.
        self._consumed = 0
        self._error: FramingError | None = None
        # An error met after good messages in the same call: those are returned
        # first (nothing the client got through is lost), the error on the next call.
        self._pending: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Number of bytes held that do not yet make a complete message."""
        return len(self._buffer)

    @property
    def declared(self) -> int | None:
        """The total length the incomplete message's prelude declares, once it came."""
        return None if self._prelude is None else self._prelude[0]

    @property
    def error_pending(self) -> bool:
        """True when the last call returned messages and deferred an error to the next."""
        return self._pending is not None

    def _raise_pending(self) -> NoReturn:
        assert self._pending is not None
        self._error, self._pending = self._pending, None
        raise self._error

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Add ``data``; return every message completed by it (possibly none), in order.

        Bytes past the last complete message stay buffered. Raises
        :class:`PreludeCRCError`, :class:`MessageCRCError`,
        :class:`InvalidLengthError`, :class:`FrameTooLargeError` or
        :class:`InvalidHeaderError` for the first malformed message (its stream
        offset in the error message), and again on every later call. When good
        messages precede the malformed one in ``data``, they are returned and
        the error is raised by the next call (see :attr:`error_pending`).
        """
        if self._pending is not None:
            self._raise_pending()
        if self._error is not None:
            self._raise_again(self._error)
        buffer = self._buffer
        prelude = self._prelude
        if prelude is not None and len(buffer) + len(data) < prelude[0]:
            buffer += data  # still inside the body of a message already checked
            return []
        if buffer:
            buffer += data
            source: bytes | bytearray | memoryview = buffer
        else:
            # Nothing held: parse the caller's bytes in place and copy only the leftover.
            source = data
        messages: list[Message] = []
        pos = 0
        whole = source if type(source) is bytes else None
        try:
            with memoryview(source) as view:
                size = len(view)
                while True:
                    if prelude is None:
                        if size - pos < PRELUDE_LENGTH:
                            break
                        prelude = _read_prelude(
                            view, pos, self._max_payload_length, self._max_headers_length
                        )
                    if size - pos < prelude[0]:
                        break
                    messages.append(_decode_body(view, pos, prelude, None, whole))
                    pos += prelude[0]
                    prelude = None
                if source is not buffer and pos < size:
                    buffer += view[pos:]
        except FramingError as exc:
            error = type(exc)(f"{exc} (message at stream offset {self._consumed + pos})")
            self._buffer.clear()
            self._prelude = None
            if messages:
                self._pending = error
                return messages
            self._error = error
            raise self._error from None
        self._prelude = prelude
        if source is buffer:
            # bytearray drops a prefix by moving its start, without copying the rest.
            del buffer[:pos]
        self._consumed += pos
        return messages

    def receive_sdk_audio(self, data: bytes) -> tuple[str, bytes] | None:
        """``(event type, payload)`` of the audio event ``data`` holds, taken in one
        step, when :func:`sdk_audio_event` reads one in it and the decoder holds
        nothing (no part of a message, no error; ``data`` is ``bytes``): ``data``
        then counts as decoded, as :meth:`receive_data` would count it, so later
        error messages give true stream offsets. Else ``None``, having done
        nothing: :meth:`receive_data` then gives the event or the error. Raises
        nothing.

        The SDK writes each audio event in a DATA frame of its own, so this is a
        receiver's usual step, without the messages :meth:`receive_data` and
        :func:`open_envelope` would build (the event is the same).
        """
        if (
            type(data) is not bytes
            or self._buffer
            or self._pending is not None
            or self._error is not None
            or not self._sdk_limits
        ):
            return None
        # sdk_audio_event, inlined: this runs for every audio event.
        frame = _sdk_audio_frame(data)
        if frame is None:
            return None
        block, payload = frame
        event_type = _AUDIO_BLOCKS.get(block)
        if event_type is None:
            event_type = _audio_block_type(block)
            if event_type is None:
                return None
        self._consumed += len(data)
        return event_type, payload

    def end_of_data(self) -> None:
        """Declare the input finished; return ``None`` if it ended between messages.

        Raises :class:`TruncatedMessageError` if part of a message is buffered, or
        the earlier error again if the decoder already failed.
        """
        if self._pending is not None:
            self._raise_pending()
        if self._error is not None:
            self._raise_again(self._error)
        held = len(self._buffer)
        if not held:
            return
        if self._prelude is not None:
            detail = f"{held} of its {self._prelude[0]} bytes"
        else:
            detail = f"{held} bytes of its {PRELUDE_LENGTH}-byte prelude"
        self._error = TruncatedMessageError(
            f"truncated message: input ended after {detail} "
            f"(message at stream offset {self._consumed})"
        )
        raise self._error

    @staticmethod
    def _raise_again(error: FramingError) -> NoReturn:
        # A fresh exception each time, so tracebacks do not pile up on the stored one.
        raise type(error)(f"decoder failed earlier: {error}")


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """An input event as the SDK sends it, wrapped or bare.

    ``signature`` is the raw ``:chunk-signature`` (``None`` for a bare event),
    ``date`` the ``:date`` header, ``raw_inner`` the exact inner message bytes
    that were signed (empty for a bare event and the end-of-stream envelope), and
    ``inner`` the decoded inner message, ``None`` for the end-of-stream envelope.
    """

    inner: Message | None
    signature: bytes | None
    date: datetime | None
    raw_inner: bytes

    @property
    def ends_stream(self) -> bool:
        """True for the signed envelope with an empty payload that closes the input."""
        return self.inner is None


_set_inner = vars(Envelope)["inner"].__set__
_set_signature = vars(Envelope)["signature"].__set__
_set_date = vars(Envelope)["date"].__set__
_set_raw_inner = vars(Envelope)["raw_inner"].__set__


def _envelope(
    inner: Message | None, signature: bytes | None, date: datetime | None, raw_inner: bytes, /
) -> Envelope:
    # As for messages: the fields are known good, so skip the frozen __init__.
    envelope = _new_object(Envelope)
    _set_inner(envelope, inner)
    _set_signature(envelope, signature)
    _set_date(envelope, date)
    _set_raw_inner(envelope, raw_inner)
    return envelope


def _decode_single(data: bytes, known_crc: int | None = None) -> Message:
    """Decode ``data`` as exactly one complete message, under the default limits;
    ``known_crc`` as for :func:`_decode_body`."""
    size = len(data)
    if size < PRELUDE_LENGTH:
        raise TruncatedMessageError(
            f"truncated message: {size} bytes, fewer than the {PRELUDE_LENGTH}-byte prelude"
        )
    with memoryview(data) as view:
        prelude = _read_prelude(view, 0, MAX_PAYLOAD_LENGTH, MAX_HEADERS_LENGTH)
        total_length = prelude[0]
        if size < total_length:
            raise TruncatedMessageError(f"truncated message: {size} of its {total_length} bytes")
        if size > total_length:
            raise InvalidLengthError(
                f"has {size - total_length} trailing bytes after a message of "
                f"total length {total_length}"
            )
        return _decode_body(view, 0, prelude, known_crc, data if type(data) is bytes else None)


def open_envelope(message: Message) -> Envelope:
    """Return the :class:`Envelope` view of a received input message.

    A message with a ``:chunk-signature`` header is a signed envelope: an empty
    payload gives ``inner=None`` (end of stream), otherwise the payload must be
    exactly one complete message. A message without it is a bare event, returned
    as ``Envelope(inner=message, signature=None, date=None, raw_inner=b"")``.

    Raises :class:`InvalidHeaderError` if ``:chunk-signature`` is not a byte
    array, ``:date`` is present but not a timestamp, or a message has ``:date``
    but neither ``:chunk-signature`` nor ``:message-type`` (an envelope whose
    signature was left out), and the codec's errors
    for a bad payload (:class:`TruncatedMessageError`, :class:`InvalidLengthError`
    for trailing bytes, CRC, length and header errors), their message starting
    with ``envelope payload``.
    """
    headers = message.headers
    signature = headers.get(":chunk-signature")
    if signature is None:
        if ":date" in headers and ":message-type" not in headers:
            # The SDK's envelope with its signature left out, not an event
            # without its :message-type.
            raise InvalidHeaderError(
                "a message with a :date header but no :chunk-signature: a signed envelope "
                "needs both (a bare event has a :message-type and no :date)"
            )
        return _envelope(message, None, None, b"")
    if type(signature) is not bytes:
        raise InvalidHeaderError(
            "envelope header ':chunk-signature' must be a byte array (type 6), got "
            + describe_header_value(signature)
        )
    date = headers.get(":date")
    if date is not None and not isinstance(date, datetime):
        raise InvalidHeaderError(
            "envelope header ':date' must be a timestamp (type 8), got "
            + describe_header_value(date)
        )
    raw_inner = message.payload
    if not raw_inner:
        return _envelope(None, signature, date, b"")
    try:
        inner = _decode_single(raw_inner, message._payload_crc)
    except FramingError as exc:
        raise type(exc)(f"envelope payload: {exc}") from None
    return _envelope(inner, signature, date, raw_inner)


# --------------------------------------------------------------------------- shortcut

# The SDK's two audio events, each mapped to itself: the name returned is this
# module's string, whatever string object the headers held.
_AUDIO_EVENT_TYPES = {"audioEvent": "audioEvent", "binaryAudioEvent": "binaryAudioEvent"}
_EVENT_MESSAGE_TYPE = "event"


# What sdk_audio_event reads in one unpack: the envelope's prelude, its two
# headers' fixed parts (the signature's 32 bytes skipped) and the inner prelude.
_SDK_HEAD = struct.Struct(f">III{len(_ENVELOPE_DATE)}sq{len(_ENVELOPE_SIGNATURE)}s32xIII")
_SDK_INNER_AT = PRELUDE_LENGTH + _ENVELOPE_HEADERS.size
_TWO_U32 = struct.Struct(">II")
# The :date values (milliseconds since the epoch) a datetime can hold: what
# _EPOCH + _ONE_MS * millis gives without OverflowError.
_MIN_MILLIS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_MS
_MAX_MILLIS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_MS
# Inner headers blocks seen to be an audio event, and which: the SDK writes the
# same block for every audio event.
_AUDIO_BLOCKS: dict[bytes, str] = {}
#: Bounded so a client sending ever new audio blocks cannot grow it (any block with
#: the two audio headers is kept, of up to MAX_HEADERS_LENGTH: 4 MiB at most); the
#: SDK sends 2, one per audio event type, and a full cache is cleared.
_AUDIO_BLOCKS_LIMIT = 32


def _audio_block_type(block: bytes) -> str | None:
    """The audio event type an inner headers ``block`` declares (``:message-type``
    ``event``), or None; audio blocks are remembered in ``_AUDIO_BLOCKS``."""
    try:
        headers = _decode_headers(block)
    except FramingError:
        return None
    event_type = headers.get(":event-type")
    if (
        type(event_type) is not str
        or (event_type := _AUDIO_EVENT_TYPES.get(event_type)) is None
        or headers.get(":message-type") != _EVENT_MESSAGE_TYPE
    ):
        return None
    if len(_AUDIO_BLOCKS) >= _AUDIO_BLOCKS_LIMIT:
        _AUDIO_BLOCKS.clear()
    _AUDIO_BLOCKS[block] = event_type
    return event_type


def _python_envelope_crcs_ok(data: bytes, prelude_crc: int, inner_prelude_crc: int) -> bool:
    """Whether the four CRCs of the envelope that fills ``data`` are right: its
    prelude's and its message's, and those of the inner message at
    ``_SDK_INNER_AT`` that fills its payload (lengths already checked).

    The inner message's bytes are hashed once: the envelope's CRC is combined
    from the CRC of its own first bytes and the inner message's, which is the
    inner message CRC continued over its last 4.
    """
    size = len(data)
    crc_at = size - MESSAGE_CRC_LENGTH
    inner_crc_at = crc_at - MESSAGE_CRC_LENGTH
    view = memoryview(data)
    if (
        crc32(view[:8], 0) != prelude_crc
        or crc32(view[_SDK_INNER_AT : _SDK_INNER_AT + 8], 0) != inner_prelude_crc
    ):
        return False
    inner_crc = crc32(view[_SDK_INNER_AT + 8 : inner_crc_at], inner_prelude_crc)
    inner_field: int
    outer_field: int
    inner_field, outer_field = _TWO_U32.unpack_from(data, inner_crc_at)
    return inner_crc == inner_field and (
        combine_crc32(
            crc32(view[8:_SDK_INNER_AT], prelude_crc),
            crc32(view[inner_crc_at:crc_at], inner_crc),
            size - _SDK_INNER_AT - MESSAGE_CRC_LENGTH,
        )
        == outer_field
    )


def sdk_audio_event(data: bytes) -> tuple[str, bytes] | None:
    """``(event type, payload)`` of the audio event that ``data`` holds, when ``data``
    is exactly one envelope in the SDK's layout around one ``audioEvent`` or
    ``binaryAudioEvent``; else ``None``.

    The SDK writes each audio event in a DATA frame of its own, so a receiver
    sees this one frame far more often than anything else. For it, this stands
    in for :class:`EventStreamDecoder` (default limits, nothing buffered) plus
    :func:`open_envelope`, without building the messages: it returns an event
    only where they would give exactly one signed envelope, both CRCs right,
    whose inner message has ``:message-type`` ``event`` and an audio
    ``:event-type``, with that type and that message's payload. For anything
    else, valid or not, it returns ``None``: the general path then gives the
    event or the error. A decoder takes a frame so with
    :meth:`EventStreamDecoder.receive_sdk_audio`, which keeps its stream offsets.
    """
    frame = _sdk_audio_frame(data)
    if frame is None:
        return None
    block, payload = frame
    event_type = _AUDIO_BLOCKS.get(block)
    if event_type is None:
        event_type = _audio_block_type(block)
        if event_type is None:
            return None
    return event_type, payload


def _python_sdk_audio_frame(data: bytes) -> tuple[bytes, bytes] | None:
    """``(inner headers block, inner payload)`` of ``data`` if it is exactly one
    envelope in the SDK's layout (``:date``, ``:chunk-signature``), every length in
    bounds and all four CRCs right, around one message; else ``None``.

    The layout part of :func:`sdk_audio_event`, which then reads the block;
    ``emulator._speedups.sdk_audio_frame`` is the same in C.
    """
    size = len(data)
    if size < 2 * MIN_MESSAGE_LENGTH + _ENVELOPE_HEADERS.size:
        return None
    (
        total_length,
        headers_length,
        prelude_crc,
        date_name,
        millis,
        signature_name,
        inner_total_length,
        inner_headers_length,
        inner_prelude_crc,
    ) = _SDK_HEAD.unpack_from(data, 0)
    if (
        total_length != size
        or headers_length != _ENVELOPE_HEADERS.size
        or date_name != _ENVELOPE_DATE
        or signature_name != _ENVELOPE_SIGNATURE
        # A :date the decoder could not turn into a datetime (it reports that).
        or not _MIN_MILLIS <= millis <= _MAX_MILLIS
    ):
        return None
    # The inner message fills the envelope's payload.
    inner_length = size - _SDK_INNER_AT - MESSAGE_CRC_LENGTH
    room = inner_total_length - MIN_MESSAGE_LENGTH
    if (
        inner_total_length != inner_length
        or inner_length > MAX_PAYLOAD_LENGTH
        or inner_headers_length > room
        or inner_headers_length > MAX_HEADERS_LENGTH
    ):
        return None
    if not _python_envelope_crcs_ok(data, prelude_crc, inner_prelude_crc):
        return None
    payload_at = _SDK_INNER_AT + PRELUDE_LENGTH + inner_headers_length
    block = data[_SDK_INNER_AT + PRELUDE_LENGTH : payload_at]
    return block, data[payload_at : size - 2 * MESSAGE_CRC_LENGTH]


def _sdk_probes() -> list[bytes]:
    """Frames on which the C and Python layout checks must agree: the SDK's own
    layout, and each of its checks failed once."""
    date = datetime(2026, 11, 22, tzinfo=UTC)

    def frame(inner: bytes, headers: dict[str, HeaderValue] | None = None) -> bytes:
        envelope: Mapping[str, HeaderValue] = (
            {":date": date, ":chunk-signature": bytes(32)} if headers is None else headers
        )
        return encode_message(Message(headers=envelope, payload=inner))

    inner = encode_message(
        Message(headers={":message-type": "event", ":event-type": "audioEvent"}, payload=b"{}")
    )
    good = frame(inner)

    def flip(at: int) -> bytes:
        return good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :]

    # An inner headers length past the payload, with every CRC made right again.
    long_headers = bytearray(inner)
    long_headers[4:12] = struct.pack(">II", len(inner) - 15, 0)
    long_headers[8:12] = struct.pack(">I", crc32(bytes(long_headers[:8]), 0))
    long_headers[-4:] = struct.pack(">I", crc32(bytes(long_headers[:-4]), 0))
    return [
        good,
        good[:-1],
        good + b"\0",
        *(flip(at) for at in (9, 30, _SDK_INNER_AT + 9, len(good) - 6, len(good) - 2)),
        frame(inner[:-1] + b"\0"),  # the inner message CRC
        frame(bytes(long_headers)),
        frame(inner, {":datf": date, ":chunk-signature": bytes(32)}),
        frame(inner, {":date": 7, ":chunk-signature": bytes(32)}),
        frame(inner, {":date": Int64(-(2**62)), ":chunk-signature": bytes(32)}),
        frame(inner, {":date": date, ":chunk-signature": bytes(31)}),
        frame(inner, {":chunk-signature": bytes(32), ":date": date}),
        frame(inner + b"\0"),  # the inner message does not fill the payload
        frame(b"\0" * 16),
    ]


def _choose_sdk_audio_frame() -> Callable[[bytes], tuple[bytes, bytes] | None]:
    native = speedups.sdk_audio_frame
    if native is None:
        return _python_sdk_audio_frame
    try:
        agrees = all(native(frame) == _python_sdk_audio_frame(frame) for frame in _sdk_probes())
    except Exception:  # noqa: BLE001 - any surprise means: keep the Python code
        agrees = False
    return native if agrees else _python_sdk_audio_frame


_sdk_audio_frame = _choose_sdk_audio_frame()
