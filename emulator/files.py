"""Small file-writing helpers on plain ``os`` calls, for the per-session paths.

A buffered ``open()`` per write costs several times the system calls it makes
(io objects, a text encoder); the journal and the disk S3 stand-in write often
enough for that to show.
"""

from __future__ import annotations

import os

__all__ = ["write_all", "writev_all"]

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
