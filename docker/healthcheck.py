"""Container health check: exit 0 when the emulator answers ``/_emulator/health``.

Docker runs this inside the emulator's container with the container's
environment, so it asks the port and address the emulator was told to use:
``--h2c-port`` and ``--host`` on the container's command line (process 1's, a
compose ``command:`` override included), which win as they do for the
emulator, else ``MEDSCRIBE_H2C_PORT`` and ``MEDSCRIBE_HOST``. The cleartext port
speaks plain HTTP/1.1, so the standard library is enough: slim images have no curl.

Exits 0 when the answer is 200 with ``{"status": "ready"}``, 1 otherwise; the
one line it prints lands in ``docker inspect``'s health log.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

HEALTH_PATH = "/_emulator/health"
#: Below the HEALTHCHECK --timeout, so a hung emulator gets a clear line, not a kill.
TIMEOUT_SECONDS = 1.5


def command_line_options(argv: list[str]) -> dict[str, str]:
    """``--h2c-port`` and ``--host`` from the emulator's command line (``--x v``
    or ``--x=v``; the last given wins, as with argparse)."""
    found: dict[str, str] = {}
    for index, arg in enumerate(argv):
        given, equals, value = arg.partition("=")
        name = _option_named(given)
        if name is None:
            continue
        if equals:
            found[name] = value
        elif index + 1 < len(argv):
            found[name] = argv[index + 1]
    return found


def _option_named(given: str) -> str | None:
    """The option ``given`` names, abbreviations included as argparse takes them
    (``--h2c``, ``--ho``; ``--h`` alone is ambiguous there: ``--help`` too)."""
    if len(given) < 4 or not given.startswith("--"):
        return None
    matches = [name for name in ("--h2c-port", "--host") if name.startswith(given)]
    return matches[0] if len(matches) == 1 else None


def container_command() -> list[str]:
    """Process 1's command line: the emulator's (or an init's, which holds it)."""
    try:
        with open("/proc/1/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class Unusable(ValueError):
    """The configuration names no port this check can ask."""


def health_url(environ: dict[str, str], argv: list[str] | None = None) -> str:
    """Return the health URL for the emulator configured by ``argv`` (its command
    line) and ``environ``; :class:`Unusable`, saying why, when it names no port
    to ask."""
    options = command_line_options(argv or [])
    # Read as the emulator reads them: stripped, the port by int() (which takes +8080).
    host = (options.get("--host") or "").strip()
    host = host or environ.get("MEDSCRIBE_HOST", "").strip() or "127.0.0.1"
    text = (options.get("--h2c-port") or "").strip()
    text = text or environ.get("MEDSCRIBE_H2C_PORT", "").strip() or "8080"
    given = "--h2c-port" if "--h2c-port" in options else "MEDSCRIBE_H2C_PORT"
    try:
        port = int(text)
    except ValueError:
        raise Unusable(f"{given} {text!r} is not a port number (1-65535)") from None
    if port == 0:
        raise Unusable(
            f"{given} is 0, a cleartext port the system picks at start-up, which this "
            "check cannot know: give the container a fixed one (the image's is 8080)"
        )
    if not 0 < port < 65536:
        raise Unusable(f"{given} {text!r} is not a port number (1-65535)")
    host = host.removeprefix("[").removesuffix("]")
    # A wildcard bind is reached through loopback.
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{HEALTH_PATH}"


def main() -> int:
    command = container_command()
    # Only an emulator's own command line: on a host (a test) process 1 is init.
    argv = command if any("medscribe-emulator" in part for part in command) else []
    try:
        url = health_url(dict(os.environ), argv)
    except Unusable as error:
        print(f"unhealthy: {error}")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except Exception as error:  # URLError, HTTPError, InvalidURL, timeouts, bad JSON
        # One line whatever it is: docker's health log shows no traceback well.
        print(f"unhealthy: {url}: {error}")
        return 1
    status = body.get("status") if isinstance(body, dict) else None
    if status != "ready":
        print(f"unhealthy: {url}: status {status!r}")
        return 1
    print(f"healthy: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
