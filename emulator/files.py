"""Small file-writing helpers on plain ``os`` calls, for the per-session paths.

A buffered ``open()`` per write costs several times the system calls it makes
(io objects, a text encoder); the journal and the disk S3 stand-in write often
enough for that to show.
"""

from __future__ import annotations

import os

__all__ = ["write_all"]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the file descriptor ``fd``; raises :class:`OSError`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
