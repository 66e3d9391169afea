"""The plain-``os`` write helpers: everything written, in order, whatever the
kernel takes per call."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import speedups
from emulator.files import IOV_MAX, append_files, python_append_files, write_all, writev_all

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


# --- append_files: the journal writer's batches ----------------------------------


def _implementations() -> list:
    found = [pytest.param(python_append_files, id="python")]
    if speedups.NATIVE:
        from emulator import _speedups

        found.append(pytest.param(_speedups.append_files, id="c"))
    return found


IMPLEMENTATIONS = _implementations()


def test_the_writer_uses_the_c_batch_where_the_extension_is_built() -> None:
    if speedups.NATIVE:
        from emulator import _speedups

        assert append_files is _speedups.append_files
    else:
        assert append_files is python_append_files


@pytest.mark.parametrize("append", IMPLEMENTATIONS)
def test_append_files_makes_directories_and_appends_in_order(tmp_path, append) -> None:
    session = tmp_path / "sessions" / "dom" / "sub" / "s1"
    events, audio = session / "events.jsonl", session / "audio-1-1.pcm"
    many = [bytes([n % 251]) * (n % 5) for n in range(2 * IOV_MAX + 3)]
    errors = append(
        [
            (str(session), str(events), [b"one\n"]),
            (None, str(audio), [b"ab", memoryview(b"cd"), bytearray(b"ef")]),
            (str(session), str(events), [b"two", b"\n"]),  # exists already: fine
            (None, str(audio), many),
            (None, str(tmp_path / "empty"), []),  # created, nothing in it
        ]
    )
    assert errors == [0, 0, 0, 0, 0]
    assert events.read_bytes() == b"one\ntwo\n"
    assert audio.read_bytes() == b"abcdef" + b"".join(many)
    assert (tmp_path / "empty").read_bytes() == b""
    assert oct(events.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


@pytest.mark.parametrize("append", IMPLEMENTATIONS)
def test_append_files_reports_each_failure_and_goes_on(tmp_path, append) -> None:
    (tmp_path / "file").write_bytes(b"x")
    errors = append(
        [
            (None, str(tmp_path / "missing" / "a"), [b"lost"]),  # no such directory
            (str(tmp_path / "file"), str(tmp_path / "file" / "b"), [b"lost"]),  # not a dir
            (str(tmp_path / "file" / "sub"), str(tmp_path / "c"), [b"lost"]),
            (str(tmp_path / "d"), str(tmp_path / "d"), [b"lost"]),  # a directory now
            (None, str(tmp_path / "kept"), [b"kept"]),
        ]
    )
    assert errors == [errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, 0]
    assert (tmp_path / "kept").read_bytes() == b"kept"
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(not speedups.NATIVE, reason="emulator._speedups is not built")
def test_the_c_batch_refuses_what_is_not_items() -> None:
    from emulator import _speedups

    for bad in (
        5,
        [("d", "p")],
        [("d", "p", [b"x"], 4)],
        [(None, "p", [b"x"]), "not a tuple"],
        [(None, "p", ["text"])],
        [(None, "p", 7)],
        [(None, 3.5, [b"x"])],
        [(None, "nul\0byte", [b"x"])],
    ):
        with pytest.raises((TypeError, ValueError)):
            _speedups.append_files(bad)


_NAMES = st.sampled_from(["a", "b", "d/a", "d/e/b", "f"])


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["d", "d/e", "f", "a"])),
            _NAMES,
            st.lists(st.binary(max_size=20), max_size=4),
        ),
        max_size=12,
    )
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.skipif(not speedups.NATIVE, reason="emulator._speedups is not built")
def test_the_c_batch_does_what_the_python_one_does(tmp_path_factory, items) -> None:
    """Same errors, same files, same bytes, for any mix of directories to make
    (some clashing with files), files in them or not, and buffers."""
    from emulator import _speedups

    results = []
    for append in (python_append_files, _speedups.append_files):
        root = tmp_path_factory.mktemp("batch")
        errors = append(
            [
                (None if d is None else str(root / d), str(root / name), buffers)
                for d, name, buffers in items
            ]
        )
        tree = {
            str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
            for path in sorted(root.rglob("*"))
        }
        results.append((errors, tree))
    assert results[0] == results[1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
