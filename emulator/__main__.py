"""``python -m emulator``, and the ``medscribe-emulator`` command (:func:`console`)."""

import sys


def console() -> int:
    """Run :func:`emulator.cli.main`; a Ctrl-C outside the commands' own handling
    (while the modules load, or in ``check``) ends it with status 130, quietly."""
    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(console())
