"""h2's checks of header blocks, each way, in fewer Python steps.

h2 checks every byte of every received header in a Python loop, and runs each
block it receives or sends through a pipeline of seven generators a header;
for the emulator's short streams that was about 45 us of the 300 us h2 spent
on a stream's two header blocks. This module holds the emulator's versions,
which :func:`emulator.hypercorn_h2.install` puts into h2 (``h2.utilities`` and
``h2.stream``, whose names :data:`STOCK_PIPELINES` and
:data:`FAST_PIPELINES` pair up):

* :func:`reject_illegal_characters` tests a header whole in C loops
  (``bytes.translate``, ``in``), falling back to h2's own check, and its error,
  for any header that fails;
* :func:`_validate_headers` and :func:`_normalize_inbound_headers` pass a plain
  request (:func:`plain_request`) through in one pass, and
  :func:`_normalize_outbound_headers` and :func:`_validate_outbound_headers` a
  plain response (:func:`plain_response`); any other block goes through h2's
  pipeline, which raises h2's exact errors in h2's order.

It also holds :func:`check_ascii_pseudo_headers`, with which
``_StreamCountingConnection`` refuses a request whose method, path, scheme or
authority holds a byte outside ASCII: h2 lets it through, and hypercorn's
``decode("ascii")`` of it raised in the connection's task.

No upstream issue is cited for the checks and pipelines: h2's are correct, only slow.
"""

from __future__ import annotations

from typing import Any

import h2.events
import h2.exceptions
import h2.utilities

# What emulator.hypercorn_h2, the emulator's HTTP/2 layer, and its tests use.
__all__ = [
    "FAST_PIPELINES",
    "STOCK_PIPELINES",
    "STOCK_REJECT_ILLEGAL_CHARACTERS",
    "check_ascii_pseudo_headers",
    "plain_request",
    "plain_response",
    "reject_illegal_characters",
]


#: The pseudo-headers hypercorn decodes as ASCII, or reads as a URI's parts.
_ASCII_PSEUDO_HEADERS = frozenset({b":method", b":path", b":scheme", b":authority"})


def check_ascii_pseudo_headers(events: list[Any]) -> None:
    """Raise h2's ProtocolError (a malformed request) for a request whose
    method, path, scheme or authority holds a byte outside ASCII."""
    for event in events:
        if type(event) is h2.events.RequestReceived:
            for name, value in event.headers:
                if name[:1] != b":":
                    break  # h2 has checked that the pseudo-headers come first
                if name in _ASCII_PSEUDO_HEADERS and not value.isascii():
                    raise h2.exceptions.ProtocolError(
                        f"Request pseudo-header {name.decode()} holds a byte outside ASCII"
                    )


#: h2's own check, which words every error; None if h2 no longer has it.
STOCK_REJECT_ILLEGAL_CHARACTERS: Any = getattr(h2.utilities, "_reject_illegal_characters", None)

#: What a header name may hold (RFC 9113 section 8.2.1): no controls, space,
#: uppercase letters, DEL or bytes above it. Deleting these from a name leaves
#: exactly the bytes h2 rejects.
_NAME_BYTES = bytes(c for c in range(256) if 0x20 < c < 0x7F and not 0x41 <= c <= 0x5A)


def _legal_value(value: bytes) -> bool:
    """Whether h2's check of received headers takes ``value``: no NUL, CR or LF,
    and no space or tab at either end."""
    return not value or (
        b"\x00" not in value
        and b"\n" not in value
        and b"\r" not in value
        and value[0] != 0x20
        and value[0] != 0x09
        and value[-1] != 0x20
        and value[-1] != 0x09
    )


def reject_illegal_characters(headers: Any, hdr_validation_flags: Any) -> Any:
    """h2's first check of received headers (``validate_headers``), in C loops.

    h2 tests each byte of every name and value in Python: a sixth of the bare
    stack's cost per stream when streams are short, 7% of the emulator's. Here
    ``bytes.translate`` and ``in`` test a header whole; a header that fails, or
    is not bytes, goes through h2's own check, which raises its exact error.
    Lazy like h2's, one header at a time, so errors come in h2's order.
    """
    for header in headers:
        name = header[0]
        value = header[1]
        if (
            type(name) is bytes
            and type(value) is bytes
            and not name.translate(None, _NAME_BYTES)
            and name.find(b":", 1) == -1
            and _legal_value(value)
        ):
            yield header
        else:
            yield from STOCK_REJECT_ILLEGAL_CHARACTERS((header,), hdr_validation_flags)


#: h2's header pipelines, which h2.stream imports by name; None for any it no
#: longer has. (From h2.utilities: install() rebinds the names in h2.stream.)
STOCK_PIPELINES: dict[str, Any] = {
    name: getattr(h2.utilities, name, None)
    for name in (
        "normalize_inbound_headers",
        "validate_headers",
        "normalize_outbound_headers",
        "validate_outbound_headers",
    )
}

#: Names whose presence sends a header block through h2's own pipeline: each
#: is changed, reordered or checked beyond the common case there.
_SLOW_NAMES = frozenset((b"te", b"host", b"cookie", *h2.utilities.CONNECTION_HEADERS))
_SLOW_OUTBOUND_NAMES = _SLOW_NAMES | frozenset((b"authorization", b"proxy-authorization"))
#: What bytes.strip() removes.
_ASCII_SPACE = frozenset(b" \t\n\r\x0b\x0c")


#: The bit of each request pseudo-header in :func:`plain_request`'s tally.
_PSEUDO_BITS = {b":method": 1, b":scheme": 2, b":authority": 4, b":path": 8}
_ALL_PSEUDO = 15
#: What a request header's name tells :func:`plain_request`, by name: its
#: pseudo-header bit, 0 for an ordinary header, None for a name h2 must judge.
#: A client repeats its names on every stream; the cache stops growing at
#: :data:`_NAME_CACHE_SIZE` names, so one sending a new name each time costs
#: the check, not memory.
_request_names: dict[bytes, int | None] = {}
_NAME_CACHE_SIZE = 1024


def _request_name(name: Any) -> int | None:
    if not (
        type(name) is bytes
        and name
        and not name.translate(None, _NAME_BYTES)
        and name.find(b":", 1) == -1
        and name not in _SLOW_NAMES
    ):
        kind = None
    elif name[0] == 0x3A:  # ":"
        kind = _PSEUDO_BITS.get(name)
    else:
        kind = 0
    if len(_request_names) < _NAME_CACHE_SIZE and type(name) is bytes:
        _request_names[name] = kind
    return kind


def plain_request(headers: list[Any]) -> bool:
    """Whether h2's ``validate_headers`` would pass ``headers``, a received
    request block, through unchanged, in the common case: bytes, legal
    characters, the four request pseudo-headers once each and first, a method
    other than CONNECT, none of :data:`_SLOW_NAMES`. False says nothing: h2 decides.
    """
    seen = 0
    regular = False
    names = _request_names
    for header in headers:
        name = header[0]
        value = header[1]
        kind = names.get(name, -1) if type(name) is bytes else None
        if kind == -1:
            kind = _request_name(name)
        if kind is None or type(value) is not bytes or not _legal_value(value):
            return False
        if kind:
            if regular or seen & kind:
                return False
            if kind == 1 and value == b"CONNECT":
                return False
            if kind == 8 and not value:
                return False
            seen |= kind
        else:
            regular = True
    return seen == _ALL_PSEUDO


def plain_response(headers: list[Any]) -> bool:
    """Whether h2's ``normalize_outbound_headers`` and ``validate_outbound_headers``
    would send the response block ``headers`` as it is: bytes, ``:status`` first
    and the only pseudo-header, lowercase names, nothing to strip, none of
    :data:`_SLOW_OUTBOUND_NAMES`. False says nothing: h2 decides.
    """
    if not headers or headers[0][0] != b":status":
        return False
    for header in headers:
        name = header[0]
        value = header[1]
        if not (
            type(name) is bytes
            and type(value) is bytes
            and name
            and name.lower() == name
            and name[0] not in _ASCII_SPACE
            and name[-1] not in _ASCII_SPACE
            and (not value or (value[0] not in _ASCII_SPACE and value[-1] not in _ASCII_SPACE))
            and name not in _SLOW_OUTBOUND_NAMES
            and (name[0] != 0x3A or header is headers[0])
        ):
            return False
    return True


def _normalize_inbound_headers(headers: Any, hdr_validation_flags: Any) -> Any:
    """h2's, which only merges ``cookie`` fields: a block without one is as it came."""
    headers = list(headers)
    for header in headers:
        if header[0] == b"cookie":
            return STOCK_PIPELINES["normalize_inbound_headers"](headers, hdr_validation_flags)
    return headers


def _validate_headers(headers: Any, hdr_validation_flags: Any) -> Any:
    """h2's check of a received header block, in one pass for a plain request.

    h2 chains seven generators per header (a fifth of the cost of opening a
    stream). A server's request block that :func:`plain_request` accepts is
    one they pass unchanged; any other block, or any other kind (trailers,
    responses), goes through them, which raise h2's exact errors in h2's order.
    """
    headers = list(headers)
    flags = hdr_validation_flags
    if (
        not flags.is_client
        and not flags.is_trailer
        and not flags.is_response_header
        and not flags.is_push_promise
        and plain_request(headers)
    ):
        return headers
    return STOCK_PIPELINES["validate_headers"](headers, flags)


class _PlainResponse(list[Any]):
    """A block :func:`plain_response` accepted, as normalizing hands it on to
    validation: checked once, not twice."""


def _normalize_outbound_headers(
    headers: Any, hdr_validation_flags: Any, should_split_outbound_cookies: bool = False
) -> Any:
    """h2's normalizing of a block to send, skipped for a response already normal."""
    headers = list(headers)
    if plain_response(headers):
        return _PlainResponse(headers)
    return STOCK_PIPELINES["normalize_outbound_headers"](
        headers, hdr_validation_flags, should_split_outbound_cookies
    )


def _validate_outbound_headers(headers: Any, hdr_validation_flags: Any) -> Any:
    """h2's check of a block to send, in one pass for a server's plain response."""
    flags = hdr_validation_flags
    plain = type(headers) is _PlainResponse
    headers = list(headers)
    if (
        not flags.is_client
        and flags.is_response_header
        and not flags.is_trailer
        and not flags.is_push_promise
        and (plain or plain_response(headers))
    ):
        return headers
    return STOCK_PIPELINES["validate_outbound_headers"](headers, flags)


FAST_PIPELINES = {
    "normalize_inbound_headers": _normalize_inbound_headers,
    "validate_headers": _validate_headers,
    "normalize_outbound_headers": _normalize_outbound_headers,
    "validate_outbound_headers": _validate_outbound_headers,
}
