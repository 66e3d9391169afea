"""The C loops of the audio-event path and of HPACK Huffman strings, or their Python twins.

Every audio event costs a CRC-32 over its frame, the checks of the SDK's frame
layout and, for an ``audioEvent``, a check that its base64 text uses only the
alphabet. In Python (awscrt's software CRC on CPUs without AVX-512,
``bytes.translate`` for the alphabet) these took about 90k instructions an
event, a third of the server's whole cost of one; :mod:`emulator._speedups`
does them in about 10k.

The extension is optional: ``setup.py`` builds it where a C compiler is found,
and without it (or with ``MEDSCRIBE_PURE_PYTHON=1`` in the environment) the
Python code below runs, with the same results. The C functions are used only
if, at import, they answer exactly as the Python ones on a set of probes.

- :data:`crc32`: ``crc32(data, value) -> int``, as ``zlib.crc32(data, value)``;
  ``None`` when the extension is not in use (callers keep awscrt's).
- :data:`sdk_audio_frame`: ``sdk_audio_frame(data) -> (block, payload) | None``,
  the checks of :func:`emulator.eventstream.sdk_audio_event` but for the
  lookup of the inner headers ``block``; ``None`` without the extension.
  :mod:`emulator.eventstream` probes it against its own Python version.
- :func:`base64_size`: see :func:`python_base64_size`.
- :data:`audio_event_size`: ``audio_event_size(payload) -> int``, ``base64_size``
  of the chunk of an ``audioEvent`` payload in the SDK's exact layout,
  ``{"audioChunk":"<chunk>"}``, else -1; ``None`` without the extension
  (:func:`emulator.validation.audio_event_size` is the Python one).
- :data:`huffman_decode`: ``huffman_decode(data, table) -> bytes | int``, hpack's
  Huffman decoding on its own state table (see :mod:`emulator.hpack_codec`);
  ``None`` without the extension (hpack's Python loop runs).
- :data:`NATIVE`: whether the extension is in use; :data:`CRC32_FOLDING`:
  whether its CRC folds with the CPU's carry-less multiply (PCLMULQDQ).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Buffer, Callable

__all__ = [
    "NATIVE",
    "CRC32_FOLDING",
    "crc32",
    "sdk_audio_frame",
    "base64_size",
    "audio_event_size",
    "huffman_decode",
    "python_base64_size",
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


_Chosen = tuple[
    Callable[[bytes, int], int] | None,
    Callable[[bytes], tuple[bytes, bytes] | None] | None,
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
    # Built from this package's own source: an editable install of another
    # checkout can answer for ``emulator._speedups`` when this copy has none.
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.dirname(os.path.abspath(getattr(_speedups, "__file__", ""))) != here:
        return pure
    try:
        agrees = all(
            _speedups.crc32(data, value) == zlib.crc32(data, value)
            for data in _probes()
            for value in (0, 0xFFFFFFFF, 0x12345678)
        ) and all(
            _speedups.base64_size(text) == python_base64_size(text) for text in _base64_probes()
        )
        agrees = agrees and all(
            _speedups.audio_event_size(b'{"audioChunk":"' + text + b'"}')
            == python_base64_size(text)
            for text in _base64_probes()
        )
        chosen = (
            _speedups.crc32,
            _speedups.sdk_audio_frame,
            _speedups.base64_size,
            bool(_speedups.crc32_accelerated()),
        )
    except Exception:  # noqa: BLE001 - e.g. a module built from older source
        return pure
    return chosen if agrees else pure


crc32, sdk_audio_frame, base64_size, CRC32_FOLDING = _load()
NATIVE = crc32 is not None
huffman_decode: Callable[[Buffer, bytes], bytes | int] | None  # data: any bytes-like
if NATIVE:
    from . import _speedups as _module
    from ._speedups import audio_event_size

    huffman_decode = getattr(_module, "huffman_decode", None)  # absent from older builds
else:
    audio_event_size = None
    huffman_decode = None


def describe() -> str:
    """One line for logs and benchmark reports: which code runs the byte loops."""
    if not NATIVE:
        return "pure Python (emulator._speedups not in use)"
    return "C (emulator._speedups)" + (", CRC-32 folded with PCLMULQDQ" if CRC32_FOLDING else "")
