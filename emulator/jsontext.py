"""Compact JSON text: the one encoding of journal lines, session rows and transcript payloads.

Pure standard library (``json``), so the sans-IO layers (:mod:`emulator.events`)
can encode without importing the journal's files and writer thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["compact_encoder", "compact_json"]


def compact_encoder(*, ensure_ascii: bool = True) -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":"), check_circular=False,
    ensure_ascii=ensure_ascii).encode``, the same text for the same value.

    No cycle check: what is encoded is parsed JSON and our own plain data,
    never cyclic, and the check (an id() set of every container) was an eighth
    of the cost. ``JSONEncoder.encode`` also builds its C encoder anew for
    every call, which cost as much as encoding a transcript event: this builds
    it once.
    """
    encoder = json.JSONEncoder(
        separators=(",", ":"), check_circular=False, ensure_ascii=ensure_ascii
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the _json accelerator
        return encoder.encode
    strings = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    chunks = make(None, encoder.default, strings, None, ":", ",", False, False, True)
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


#: Compact JSON text, the one encoding of journal lines, session rows and
#: transcript payloads (a scripted scenario's text is spliced into rows, and a
#: sent payload into the journal, so all must agree).
compact_json = compact_encoder()
