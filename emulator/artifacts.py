"""Where post-stream artifacts go: their S3 locations, and the buckets that take them.

Artifacts live under ``{outputS3Uri}/health-agent-listening-session/{domainId}/
{subscriptionId}/{sessionId}/post-stream-action/`` (the Connect Health user
guide). Two buckets can take them:

* :class:`DiskBuckets`, the default: an S3 stand-in on disk,
  ``<state-dir>/s3/<bucket>/<key>``, so nothing else needs to run; it refuses
  what S3 refuses (a key over :data:`KEY_MAX` bytes) and says so;
* :class:`S3Buckets`: a real S3 client (boto3) on an S3-compatible endpoint
  (moto server, MinIO, LocalStack), with the usual AWS credential variables.

Both are blocking; the backend calls them from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError
from .files import write_all
from .notescript import ARTIFACT_NAMES
from .scenario import shown

__all__ = [
    "ARTIFACT_FILES",
    "ARTIFACT_NAMES",
    "ArtifactLocation",
    "LOG_REASON_CHARS",
    "Buckets",
    "DiskBuckets",
    "S3Buckets",
    "artifact_locations",
    "describe_results",
    "make_buckets",
    "s3_uri",
]

#: Each artifact's key below the session's post-stream-action prefix.
ARTIFACT_FILES = {
    "transcriptResult": "transcript.json",
    "noteResult": "clinical-notes/clinicalDoc.json",
    "afterVisitSummaryResult": "clinical-notes/afterVisitSummary.json",
}

ArtifactLocation = tuple[str, str]  # (bucket, key)

#: How much of a failureReason (up to 2,048 characters) a log line quotes: room for
#: the object's s3:// URI, about 200 characters, and the S3 error after it.
LOG_REASON_CHARS = 400


def artifact_locations(
    output_s3_uri: str, *, domain_id: str, subscription_id: str, session_id: str
) -> dict[str, ArtifactLocation]:
    """Return each artifact's ``(bucket, key)`` for a session writing to ``output_s3_uri``.

    ``output_s3_uri`` is a validated S3Uri (``s3://bucket[/prefix]``); a trailing
    slash is not doubled. Other empty segments are kept (``a//b``): an S3 key
    holding them is another object than ``a/b``, the one the client would look for.
    """
    rest = output_s3_uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    parts = [prefix.removesuffix("/")] if prefix else []
    parts += [
        "health-agent-listening-session",
        domain_id,
        subscription_id,
        session_id,
        "post-stream-action",
    ]
    base = "/".join(parts)
    return {name: (bucket, f"{base}/{ARTIFACT_FILES[name]}") for name in ARTIFACT_NAMES}


def s3_uri(location: ArtifactLocation) -> str:
    """Return ``s3://bucket/key``."""
    return f"s3://{location[0]}/{location[1]}"


def describe_results(results: Mapping[str, Mapping[str, str]]) -> str:
    """Return ``name STATUS, ...`` for a log line, each FAILED artifact followed by
    ``(failureReason)`` on one line, cut to :data:`LOG_REASON_CHARS`."""
    parts = []
    for name, result in results.items():
        part = f"{name} {result['status']}"
        reason = " ".join(result.get("failureReason", "").split())
        if result["status"] == "FAILED" and reason:
            if len(reason) > LOG_REASON_CHARS:
                reason = reason[: LOG_REASON_CHARS - 3] + "..."
            part += f" ({reason})"
        parts.append(part)
    return ", ".join(parts)


class Buckets(Protocol):
    """Something that stores an object; ``put`` raises on failure with a readable message."""

    def put(self, bucket: str, key: str, body: bytes) -> None: ...


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


#: The longest file name, in bytes, the disk stand-in writes (NAME_MAX on Linux).
NAME_MAX = 255

#: The longest object key S3 takes, in bytes of UTF-8, not characters (the S3 user
#: guide, "Naming Amazon S3 objects"): a PUT past it fails with KeyTooLongError.
KEY_MAX = 1024

#: Where the disk stand-in sends a key it cannot store (one S3 takes: see :func:`_check_key`).
_USE_S3 = "S3 takes it: use --s3-endpoint-url"


def _check_key(key: str) -> None:
    """Raise :class:`ValueError` for a key S3 refuses, as a PUT to S3 would fail: the
    outputS3Uri is limited to 1,024 characters, and the service's own ~170 bytes
    follow it, so a prefix in CJK letters passes S3's byte limit far sooner."""
    size = len(key.encode())
    if size > KEY_MAX:
        raise ValueError(
            f"the object key is longer than the {KEY_MAX} bytes S3 takes (KeyTooLongError; "
            f"S3 counts the key's bytes of UTF-8, not its characters): it is {size} bytes "
            f"({len(key)} characters)"
        )


def _parts(bucket: str, key: str) -> list[str]:
    """The path parts of ``bucket``/``key``. The reasons a key cannot be stored
    say why first and quote little of the key: the failure reason a client
    reads already names the object, and is cut at 2048 characters. Their advice,
    S3 takes it, holds for a key :func:`_check_key` let through."""
    parts = [p for p in key.split("/") if p]
    if any(p in (".", "..") for p in (bucket, *parts)):
        raise ValueError(f"the disk stand-in cannot store a key with '.' or '..' parts ({_USE_S3})")
    if "\0" in key:  # no file name holds one: the OS's bare "embedded null byte"
        raise ValueError(
            f"the disk stand-in cannot store a key holding a NUL character ({_USE_S3})"
        )
    for part in parts:
        if len(part.encode()) > NAME_MAX:
            raise ValueError(
                f"the disk stand-in cannot store a key part longer than the {NAME_MAX} "
                f"bytes a file name holds ({_USE_S3}): {shown(part, 32)} is "
                f"{len(part.encode())} bytes"
            )
    return [bucket, *parts]


class DiskBuckets:
    """An S3 stand-in on disk: object ``s3://b/k`` is the file ``<root>/b/k``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, bucket: str, key: str) -> Path:
        """Return the file of ``bucket``/``key``.

        Raises :class:`ValueError` when a key part is ``.`` or ``..`` (S3 keys may
        hold them; a file path must not climb out of the bucket).
        """
        return self.root.joinpath(*_parts(bucket, key))

    def put(self, bucket: str, key: str, body: bytes) -> None:
        """Write the object atomically (a reader never sees half a file); raises OSError.

        Plain ``os`` calls, the directory made only when the first open finds
        it missing: a post-stream job writes three objects per session. Raises
        :class:`ValueError` for a key S3 refuses (over :data:`KEY_MAX` bytes) or the
        stand-in cannot hold (see :func:`_parts`).
        """
        _check_key(key)  # first: S3 refuses the key whatever else the stand-in thinks of it
        parts = _parts(bucket, key)
        path = os.path.join(self.root, *parts)
        directory = os.path.dirname(path)
        # Named by the writer, not the object: a name of the object's own length
        # plus a suffix went past NAME_MAX for a key part the object's name fits.
        partial = os.path.join(directory, f".{os.getpid()}.{threading.get_ident()}.part")
        try:
            try:
                fd = os.open(partial, _CREATE, 0o666)  # less the umask, as open() does
            except FileNotFoundError:
                os.makedirs(directory, exist_ok=True)
                fd = os.open(partial, _CREATE, 0o666)
            try:
                try:
                    write_all(fd, body)
                finally:
                    os.close(fd)
                os.replace(partial, path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
        except OSError as error:
            raise self._problem(parts, error) from None

    def _problem(self, parts: list[str], error: OSError) -> OSError:
        """``error`` said for a client: the rule broken, not the stand-in's paths."""
        if isinstance(error, (NotADirectoryError, FileExistsError, IsADirectoryError)):
            # An object and a folder of other objects under one name: S3 has no folders.
            for end in range(2, len(parts)):
                if os.path.isfile(os.path.join(self.root, *parts[:end])):
                    above = "/".join(parts[1:end])
                    return OSError(
                        "the disk stand-in cannot store an object under another object's "
                        f"key, which it keeps as a file ({_USE_S3}): the key lies under "
                        f"{shown(above, 256)}"
                    )
            if os.path.isdir(os.path.join(self.root, *parts)):
                return OSError(
                    "the disk stand-in cannot store an object at a key that other "
                    f"objects lie under, which it keeps as a folder ({_USE_S3})"
                )
        return OSError(error.errno, error.strerror)


class S3Buckets:
    """A real S3 client on ``endpoint_url`` (path-style, so any host name works).

    Credentials and region come from the standard AWS variables and files; the
    region defaults to us-east-1. Raises :class:`ConfigError` without boto3,
    which is not a dependency of the emulator itself (the ``s3`` extra).
    """

    def __init__(self, endpoint_url: str) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as error:
            raise ConfigError(
                f"--s3-endpoint-url {endpoint_url}: writing artifacts to S3 needs boto3, which "
                f"is not installed ({error}): pip install 'medscribe-emulator[s3]' (or boto3)"
            ) from None

        self.endpoint_url = endpoint_url
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=session.region_name or "us-east-1",
            # Bounded: botocore's 60 s a read, per attempt, kept a hung endpoint's
            # artifacts IN_PROGRESS for minutes; now each of a session's three
            # FAILs after two attempts of at most 5 s, saying why.
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 2},
                connect_timeout=2,
                read_timeout=5,
            ),
        )

    def put(self, bucket: str, key: str, body: bytes) -> None:
        """PUT the object; raises botocore's errors (e.g. NoSuchBucket)."""
        self._client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


def make_buckets(*, state_dir: Path, s3_endpoint_url: str | None) -> Buckets:
    """Return :class:`S3Buckets` for ``s3_endpoint_url``, else :class:`DiskBuckets` under the
    state dir."""
    if s3_endpoint_url:
        return S3Buckets(s3_endpoint_url)
    return DiskBuckets(state_dir / "s3")
