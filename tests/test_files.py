"""The plain-``os`` write helpers: everything written, in order, whatever the
kernel takes per call."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.files import IOV_MAX, write_all, writev_all

_REAL_WRITEV = os.writev


def _written(tmp_path, write, data) -> bytes:
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write(fd, data)
    finally:
        os.close(fd)
    return path.read_bytes()


def test_write_all_writes_everything(tmp_path) -> None:
    data = bytes(range(256)) * 1000
    assert _written(tmp_path, write_all, data) == data


def test_writev_all_takes_more_buffers_than_one_call_may(tmp_path) -> None:
    """More than IOV_MAX buffers (a flush of many tiny binary chunks) go out in
    several writev() calls, in order; empty buffers are skipped."""
    buffers = [bytes([n % 251]) * (n % 7) for n in range(3 * IOV_MAX + 5)]
    assert _written(tmp_path, writev_all, buffers) == b"".join(buffers)


@given(
    st.lists(st.binary(max_size=40), max_size=30),
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_writev_all_resumes_after_short_writes(
    tmp_path_factory, monkeypatch, buffers, limits
) -> None:
    """A writev() that takes less than asked (a full disk, a signal) is resumed
    at the first byte not written, even mid-buffer."""
    calls: list[int] = []

    def short_writev(fd: int, batch) -> int:
        # Write at most limits[k] bytes on the k-th call (cycling), as a kernel may.
        limit = limits[len(calls) % len(limits)]
        joined = b"".join(bytes(b) for b in batch)[:limit]
        calls.append(len(joined))
        return _REAL_WRITEV(fd, [joined]) if joined else 0

    tmp_path = tmp_path_factory.mktemp("writev")
    monkeypatch.setattr(os, "writev", short_writev)
    assert _written(tmp_path, writev_all, buffers) == b"".join(buffers)
    assert sum(calls) == sum(map(len, buffers))


def test_writev_all_raises_what_the_system_raises(tmp_path) -> None:
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError):
            writev_all(fd, [b"data"])
    finally:
        os.close(fd)
