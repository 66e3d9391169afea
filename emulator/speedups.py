"""The C loops of the audio-event path, or their pure-Python twins.

Every audio event costs a CRC-32 over its frame and, for an ``audioEvent``, a
check that its base64 text uses only the alphabet. In Python (awscrt's software
CRC on CPUs without AVX-512, ``bytes.translate`` for the alphabet) the two took
about 70k instructions an event, a quarter of the server's whole cost of one;
:mod:`emulator._speedups` does them in about 9k.

The extension is optional: ``setup.py`` builds it where a C compiler is found,
and without it (or with ``MEDSCRIBE_PURE_PYTHON=1`` in the environment) the
Python code below runs, with the same results. The C functions are used only
if, at import, they answer exactly as the Python ones on a set of probes.

- :data:`crc32`: ``crc32(data, value) -> int``, as ``zlib.crc32(data, value)``;
  ``None`` when the extension is not in use (callers keep awscrt's).
- :data:`message_crcs_ok`: ``message_crcs_ok(data, offset) -> bool``, see
  :func:`python_message_crcs_ok`; ``None`` without the extension.
- :func:`base64_size`: see :func:`python_base64_size`.
- :data:`NATIVE`: whether the extension is in use; :data:`CRC32_FOLDING`:
  whether its CRC folds with the CPU's carry-less multiply (PCLMULQDQ).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

__all__ = [
    "NATIVE",
    "CRC32_FOLDING",
    "crc32",
    "message_crcs_ok",
    "base64_size",
    "python_base64_size",
    "python_message_crcs_ok",
    "describe",
]

_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def python_base64_size(text: bytes) -> int:
    """The decoded size of ``text`` if it is standard base64 as every encoder
    writes it (a length that is a multiple of 4, only alphabet characters before
    at most two trailing ``=``), else -1.
    """
    if len(text) % 4:
        return -1
    data = text.rstrip(b"=")
    padding = len(text) - len(data)
    # Deleting the alphabet leaves nothing: a "=" inside, a quote or a backslash
    # would stay.
    if padding > 2 or data.translate(None, _BASE64_ALPHABET):
        return -1
    return len(text) // 4 * 3 - padding


def python_message_crcs_ok(data: bytes, offset: int) -> bool:
    """Whether the event-stream message at ``offset`` lies within ``data`` (its
    ``total_length`` at least 16) and its prelude and message CRCs are right."""
    if offset < 0:
        raise ValueError("message_crcs_ok(): offset must be >= 0")
    if len(data) - offset < 16:
        return False
    total = int.from_bytes(data[offset : offset + 4])
    if total < 16 or total > len(data) - offset:
        return False
    end = offset + total - 4
    return zlib.crc32(data[offset : offset + 8]) == int.from_bytes(
        data[offset + 8 : offset + 12]
    ) and zlib.crc32(data[offset:end]) == int.from_bytes(data[end : end + 4])


def _probes() -> list[bytes]:
    block = bytes(range(256)) * 20
    return [b"", b"123456789", block[:63], block[:64], block[:100], block[:4099], block]


def _base64_probes() -> list[bytes]:
    return [
        b"",
        b"QUJD",
        b"QUI=",
        b"QQ==",
        b"Q===",
        b"QUJ",
        b"QU=D",
        b'QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"',
        b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw==",
        b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrL\\==",
        b"-_-_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk",
    ]


def _message_probes() -> list[bytes]:
    payload = bytes(range(256)) * 3
    messages = []
    for body in (b"", b"\x01ab\x07\x00\x01c" + payload):
        total = (16 + len(body)).to_bytes(4) + (len(body) > 0 and 8 or 0).to_bytes(4)
        prelude = total + zlib.crc32(total).to_bytes(4)
        message = prelude + body
        messages.append(message + zlib.crc32(message).to_bytes(4))
    good = messages[1]
    messages += [b"\x00" + good, good[:-1] + b"\x00", good[:9] + b"\xff" + good[10:], good[:40]]
    return messages


_Chosen = tuple[
    Callable[[bytes, int], int] | None,
    Callable[[bytes, int], bool] | None,
    Callable[[bytes], int],
    bool,
]


def _load() -> _Chosen:
    pure: _Chosen = (None, None, python_base64_size, False)
    if os.environ.get("MEDSCRIBE_PURE_PYTHON", "") not in ("", "0"):
        return pure
    try:
        from . import _speedups
    except ImportError:
        return pure
    agrees = all(
        _speedups.crc32(data, value) == zlib.crc32(data, value)
        for data in _probes()
        for value in (0, 0xFFFFFFFF, 0x12345678)
    ) and all(_speedups.base64_size(text) == python_base64_size(text) for text in _base64_probes())
    agrees = agrees and all(
        _speedups.message_crcs_ok(data, offset) == python_message_crcs_ok(data, offset)
        for data in _message_probes()
        for offset in (0, 1, 5, 20)
    )
    if not agrees:
        return pure
    return (
        _speedups.crc32,
        _speedups.message_crcs_ok,
        _speedups.base64_size,
        bool(_speedups.crc32_accelerated()),
    )


crc32, message_crcs_ok, base64_size, CRC32_FOLDING = _load()
NATIVE = crc32 is not None


def describe() -> str:
    """One line for logs and benchmark reports: which code runs the byte loops."""
    if not NATIVE:
        return "pure Python (emulator._speedups not in use)"
    return "C (emulator._speedups)" + (", CRC-32 folded with PCLMULQDQ" if CRC32_FOLDING else "")
