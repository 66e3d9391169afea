"""Which ``aws-sdk-connecthealth`` the emulator's client helpers can use.

The server needs no SDK. :mod:`emulator.sdk` (the pytest fixture's ``client()``
and the ``stream`` command) uses the async client as 0.11 and later shape it:
``AsyncConnectHealthConfig`` came in 0.8-0.10, ``async with`` on the client in
0.11. With an older SDK the import failed on a missing name and said to
install the SDK that was installed. Kept apart from :mod:`emulator.sdk`, which
cannot be imported without a usable SDK.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata

__all__ = ["SDK_DISTRIBUTION", "OLDEST_SDK", "sdk_problem"]

SDK_DISTRIBUTION = "aws-sdk-connecthealth"
#: The oldest release the helpers work with (0.12.0 is the one the tests run).
OLDEST_SDK = (0, 11)

_INSTALL = "pip install 'medscribe-emulator[sdk]' (or aws-sdk-connecthealth)"


def sdk_problem(what: str = "emulator.sdk") -> str | None:
    """Why ``what`` cannot use the installed SDK (none, or too old), or None."""
    try:
        version = metadata.version(SDK_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        if importlib.util.find_spec("aws_sdk_connecthealth") is not None:
            return None  # importable without its metadata (vendored, a checkout): try it
        return f"{what} needs the AWS SDK for Python's Connect Health client: {_INSTALL}"
    if _release(version) < OLDEST_SDK:
        oldest = ".".join(map(str, OLDEST_SDK))
        return (
            f"{what} needs {SDK_DISTRIBUTION} {oldest} or later, and {version} is installed: "
            f"{_INSTALL}. An app pinned to an older SDK can still use the emulator: build "
            "its client as the README's plain-SDK example does"
        )
    return None


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version (``0.12.0rc1`` -> ``(0, 12, 0)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()
