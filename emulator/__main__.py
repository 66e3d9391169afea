"""``python -m emulator``, and the ``medscribe-emulator`` command (:func:`console`)."""

import signal
import sys


class _Terminated(BaseException):
    """A SIGTERM before a command's own handling of it (see :func:`console`)."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


def console() -> int:
    """Run :func:`emulator.cli.main`; a Ctrl-C outside the commands' own handling
    (while the modules load, or in ``check``) ends it with status 130, quietly,
    and a SIGTERM with status 143.

    The SIGTERM handler comes first: as a container's PID 1 (``docker run``
    without ``--init``) a process gets no default action for it, and one sent
    while ``serve`` started up (before its own handler) was lost, ``docker
    stop`` then waiting its 10 s to kill it."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    _escape_what_the_console_cannot_show()
    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        print("medscribe-emulator: SIGTERM received: stopped", file=sys.stderr, flush=True)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def _escape_what_the_console_cannot_show() -> None:
    """Write a character the output's encoding lacks as ``\\xbf``, not stop with
    a UnicodeEncodeError: Windows gives redirected output its ANSI code page
    (cp1252, GBK), and a Spanish "¿" in a final made ``stream`` die mid-session
    (the session left PAUSED, no summary) and ``check`` stop at its first
    problem quoting such text. (``stream --json`` escapes them as JSON does.)"""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(console())
