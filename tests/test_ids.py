"""Request ids: version-4 UUIDs, unique, made without reading os.urandom.
Segment ids: exactly the version-5 UUIDs ``uuid.uuid5`` gives."""

from __future__ import annotations

import os
import uuid

from hypothesis import given
from hypothesis import strategies as st

from emulator.ids import new_request_id
from emulator.session import segment_id


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


@given(session_id=st.text(), index=st.integers(min_value=0, max_value=10**9))
def test_a_segment_id_is_uuid5_of_its_index_in_the_sessions_namespace(session_id, index):
    # Ids already handed out (journals, artifacts, resumed sessions) must not
    # change with how they are computed.
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"medscribe-emulator:{session_id}")
    assert segment_id(session_id, index) == str(uuid.uuid5(namespace, str(index)))


def test_segment_ids_are_stable_across_releases():
    # Pinned to the value the emulator gave before ids were built from the
    # digest directly: journals and artifacts written earlier keep their ids.
    assert segment_id("sess-1", 0) == "af1e5ecc-fee1-5bc0-8e42-babe00e8a05a"
