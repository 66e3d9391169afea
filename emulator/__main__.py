"""``python -m emulator``: the same as the ``medscribe-emulator`` command."""

import sys

from .cli import main

sys.exit(main())
