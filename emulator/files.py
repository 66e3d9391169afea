"""Small file-writing helpers on plain ``os`` calls, for the per-session paths.

A buffered ``open()`` per write costs several times the system calls it makes
(io objects, a text encoder); the journal and the disk S3 stand-in write often
enough for that to show.
"""

from __future__ import annotations

import errno
import os

__all__ = ["write_all", "writev_all", "append_files", "python_append_files"]

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)

#: The most buffers one writev() takes: the system's limit (1,024 on Linux), at
#: least POSIX's 16 should it not say.
IOV_MAX = max(16, min(os.sysconf("SC_IOV_MAX"), 1024))


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd``; raises :class:`OSError`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def writev_all(fd: int, buffers: list[bytes]) -> None:
    """Write ``buffers`` one after another to ``fd`` without joining them first
    (``writev``, at most :data:`IOV_MAX` at a time); raises :class:`OSError`."""
    pending: list[bytes | memoryview] = list(buffers)
    while pending:
        batch = pending[:IOV_MAX]
        written = os.writev(fd, batch)
        done = 0
        for buffer in batch:  # drop what went out whole; cut the one cut short
            size = len(buffer)
            if written < size:
                if written:
                    pending[done] = memoryview(buffer)[written:]
                break
            written -= size
            done += 1
        del pending[:done]


def python_append_files(items: list[tuple[str | None, str, list[bytes]]]) -> list[int]:
    """For each ``(directory, path, buffers)``, in order: make ``directory`` (unless
    None) as ``os.makedirs(exist_ok=True)``, then append ``buffers`` to the file
    at ``path``, creating it 0644, and close it. Returns one errno per item, 0
    for written; an item that fails is left as far as it got and the next one
    is tried.

    The pure-Python twin of ``emulator._speedups.append_files``, which makes
    the same system calls with the GIL released once for them all.
    """
    errors = []
    for directory, path, buffers in items:
        try:
            if directory is not None:
                os.makedirs(directory, exist_ok=True)
            fd = os.open(path, _APPEND, 0o644)
            try:
                writev_all(fd, buffers)
            finally:
                os.close(fd)
        except OSError as error:
            errors.append(error.errno or errno.EIO)
        else:
            errors.append(0)
    return errors


def _choose() -> object:
    from .speedups import NATIVE

    if NATIVE:
        from . import _speedups

        return getattr(_speedups, "append_files", python_append_files)
    return python_append_files


#: :func:`python_append_files`, in C where ``emulator._speedups`` is in use.
append_files = _choose()
