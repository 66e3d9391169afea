"""Entropy: where every random value of the emulator comes from, and request ids.

- Per-session choices (chaos jitter, the synthetic visit) come from
  :func:`session_rng`, a generator seeded by ``--seed`` and the session id, so a
  run with the same seed repeats exactly. (The rules' probability draws hash the
  same seed in :meth:`emulator.rules.RuleBook._draw`.)
- Domain, subscription and app ids come from :func:`id_rng`, the OS's entropy:
  they must not repeat after a restart, which a seeded generator would do.
- Request ids (:func:`new_request_id`) need to be unique, not unpredictable or
  repeatable: they come from one generator seeded once from ``os.urandom``.
  ``uuid.uuid4()`` reads ``os.urandom`` for each, which releases the GIL around
  its ``getrandom()`` call; with the journal's writer thread waiting for the
  GIL, the event loop then waited to get it back, and a stream's start spent a
  quarter of its time there while 1,000 sessions opened.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from typing import Literal

__all__ = ["Purpose", "session_rng", "id_rng", "new_request_id", "request_id_headers"]

#: What a per-session generator is for; each has its own derivation from the seed.
Purpose = Literal["chaos", "synthetic"]

_random = random.Random(os.urandom(32))


def session_rng(seed: int, session_id: str, purpose: Purpose) -> random.Random:
    """Return a new generator seeded by ``seed`` and ``session_id`` for ``purpose``.

    The same arguments always give the same sequence, in any process: never
    :func:`hash`, which is salted per process. The derivations are those the
    values already handed out rest on (a scenario's transcript, a rule's
    jitter), so they must not change: ``"chaos"`` seeds with the text
    ``"<seed>:<session_id>"``, ``"synthetic"`` with the integer of
    ``sha256("<seed>\\0<session_id>")``. Raises :class:`ValueError` for another
    purpose.
    """
    if purpose == "chaos":
        return random.Random(f"{seed}:{session_id}")
    if purpose == "synthetic":
        digest = hashlib.sha256(f"{seed}\x00{session_id}".encode()).digest()
        return random.Random(int.from_bytes(digest, "big"))
    raise ValueError(f"no random source for {purpose!r}")


def id_rng() -> random.Random:
    """Return the generator of resource ids: the OS's entropy (:class:`random.SystemRandom`),
    so that ids never repeat after a restart and no seed predicts them."""
    return random.SystemRandom()


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
