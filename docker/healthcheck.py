"""Container health check: exit 0 when the emulator answers ``/_emulator/health``.

Docker runs this inside the emulator's container with the container's
environment, so it asks the port and address the emulator was told to use
(``MEDSCRIBE_H2C_PORT``, ``MEDSCRIBE_HOST``). The cleartext port speaks plain
HTTP/1.1, so the standard library is enough: slim images have no curl.

Exits 0 when the answer is 200 with ``{"status": "ready"}``, 1 otherwise; the
one line it prints lands in ``docker inspect``'s health log.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

HEALTH_PATH = "/_emulator/health"
#: Below the HEALTHCHECK --timeout, so a hung emulator gets a clear line, not a kill.
TIMEOUT_SECONDS = 1.5


def health_url(environ: dict[str, str]) -> str:
    """Return the health URL for the emulator configured by ``environ``."""
    host = environ.get("MEDSCRIBE_HOST", "").strip() or "127.0.0.1"
    port = environ.get("MEDSCRIBE_H2C_PORT", "").strip() or "8080"
    # A wildcard bind is reached through loopback.
    if host == "0.0.0.0":
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{HEALTH_PATH}"


def main() -> int:
    url = health_url(dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            body = json.load(response)
    except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts, bad JSON
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
