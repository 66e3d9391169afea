"""Request ids: version-4 UUIDs, unique, made without reading os.urandom."""

from __future__ import annotations

import os
import uuid

from emulator.ids import new_request_id


def test_request_ids_are_distinct_version_4_uuids_in_canonical_form():
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:100]:
        value = uuid.UUID(text)
        assert str(value) == text  # canonical: lowercase, dashed
        assert value.version == 4 and value.variant == uuid.RFC_4122


def test_a_request_id_needs_no_system_call(monkeypatch):
    # os.urandom releases the GIL around getrandom(): the loop then waits to
    # get it back from the journal's writer (see emulator.ids).
    def refuse(size: int) -> bytes:
        raise AssertionError("os.urandom called")

    monkeypatch.setattr(os, "urandom", refuse)
    assert uuid.UUID(new_request_id()).version == 4
