"""Request ids: random version-4 UUIDs made without a system call.

``uuid.uuid4()`` reads ``os.urandom``, which releases the GIL around its
``getrandom()`` call; with the journal's writer thread waiting for the GIL, the
event loop then waited to get it back, and a stream's start spent a quarter of
its time there while 1,000 sessions opened. A request id needs to be unique,
not unpredictable: these come from a generator seeded once from ``os.urandom``.
"""

from __future__ import annotations

import os
import random
import uuid

__all__ = ["new_request_id", "request_id_headers"]

_random = random.Random(os.urandom(32))


def new_request_id() -> str:
    """A random version-4 UUID in its canonical text form."""
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


def request_id_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    """The response headers carrying ``request_id``, under both names clients read.

    StartMedicalScribeListeningSession binds its ``requestId`` output to
    ``x-amzn-request-id``; the REST-JSON responses of every other operation, and
    errors, carry ``x-amzn-requestid``, the only one botocore reads (its
    ``ResponseMetadata.RequestId``).
    """
    value = request_id.encode()
    return [(b"x-amzn-requestid", value), (b"x-amzn-request-id", value)]
