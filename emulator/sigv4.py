"""AWS Signature Version 4 verification: the request's header and the event-stream chain.

Pure: nothing here reads a socket or a clock unless given one (``now`` and
``now_fn``); :meth:`CredentialStore.from_file` is the one function that reads a file.
The algorithm is the one the real client runs, ``aws_sdk_signers`` 0.4
(``AsyncSigV4Signer`` for the request, ``AsyncEventSigner`` for the events),
and the tests check every rule here against it byte for byte.

How a signed stream is checked::

    signature = verify_request(method="POST", path=raw_path, query="", headers=headers,
                               store=store, now=now)          # AccessDeniedException
    chunks = ChunkVerifier(request=signature)
    for message in decoder.receive_data(data):
        envelope = open_envelope(message)
        chunks.verify(envelope)                               # ValidationException
    chunks.end_of_stream()                                    # ValidationException

The request signature seeds the chain: each event's string to sign is::

    AWS4-HMAC-SHA256-PAYLOAD
    <the event's :date as YYYYMMDDTHHMMSSZ>
    <YYYYMMDD of that date>/<region>/<service>/aws4_request
    <previous signature, hex; the Authorization header's for the first event>
    <hex sha256 of the encoded :date header>
    <hex sha256 of the envelope payload: the inner message bytes, empty for the last>

signed with the SigV4 key derived for the event's own date (the SDK re-derives it
per event, so a stream that crosses midnight UTC changes keys). Error messages
name the access key id but never a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, quote

from .errors import AccessDeniedException, ConfigError, ValidationException
from .eventstream import Envelope

__all__ = [
    "ALGORITHM",
    "EVENT_ALGORITHM",
    "STREAMING_PAYLOAD",
    "UNSIGNED_PAYLOAD",
    "SERVICE",
    "MAX_CLOCK_SKEW",
    "SIGNATURE_LENGTH",
    "MISSING_EMPTY_FRAME",
    "Credentials",
    "CredentialStore",
    "RequestSignature",
    "verify_request",
    "ChunkVerifier",
    "derive_signing_key",
    "encode_date_header",
]

ALGORITHM = "AWS4-HMAC-SHA256"
#: The algorithm line of an event's string to sign (aws_sdk_signers.AsyncEventSigner).
EVENT_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
#: The payload hash of an event-stream request: its body is signed event by event.
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: The model's SigV4 signing name (``aws.auth#sigv4`` name of connecthealth).
SERVICE = "health-agent"
#: SigV4's freshness window: a signature more than 5 minutes off the server clock is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)
#: An event's ``:chunk-signature``: the HMAC-SHA256's 32 bytes themselves.
SIGNATURE_LENGTH = 32
#: What the real service says when the input ends without the final empty signed frame.
MISSING_EMPTY_FRAME = "A complete signal was sent without the preceding empty frame."

_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_TIMESTAMP = re.compile(r"\d{8}T\d{6}Z")
# A hex SHA-256 digest or SigV4 signature, lowercase as the signers write them.
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# ``:date`` as aws_sdk_signers encodes it: name length 5, name, type 8 (timestamp).
_DATE_HEADER_PREFIX = b"\x05:date\x08"
_I64 = struct.Struct(">q")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment}")


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """One access key pair, with the session token of temporary credentials. The
    secret and the token are left out of ``repr``.

    Raises :class:`ValueError` for an empty key id, secret or session token, or a
    key id holding ``/``, ``,``, ``=`` or whitespace (it could not appear in a
    ``Credential=`` scope).
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    #: Temporary credentials' token: a request signed with the key must carry it
    #: as ``X-Amz-Security-Token``. None for a long-term key, whose requests must
    #: carry none.
    session_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.access_key_id or re.search(r"[\s/,=]", self.access_key_id):
            # Not quoted: a secret given as the key id (the two swapped) would be
            # printed to the terminal and the CI log.
            raise ValueError(
                "an access key id must be non-empty, without whitespace, '/', ',' or '=' "
                "(a secret access key often holds '/': were the two swapped?)"
            )
        if not self.secret_access_key:
            raise ValueError(f"access key id {self.access_key_id!r} has an empty secret")
        if self.session_token is not None and not self.session_token:
            raise ValueError(f"access key id {self.access_key_id!r} has an empty session token")


class CredentialStore(Mapping[str, str]):
    """The known key pairs, an immutable mapping of access key id -> secret access key.

    Built from :class:`Credentials` or a mapping; ``repr`` lists key ids only. A
    pair's session token, if it has one, is :meth:`session_token`. Raises
    :class:`ValueError` when one key id is given two different secrets, or two
    different session tokens (one and none among them).
    """

    __slots__ = ("_known", "region")

    def __init__(
        self,
        credentials: Iterable[Credentials] | Mapping[str, str] = (),
        *,
        region: str | None = None,
    ) -> None:
        #: The one region a signature's scope may name (``--region``); None: any.
        self.region = region
        if isinstance(credentials, Mapping):
            credentials = [
                Credentials(access_key_id=key_id, secret_access_key=secret)
                for key_id, secret in credentials.items()
            ]
        known: dict[str, Credentials] = {}
        for pair in credentials:
            seen = known.setdefault(pair.access_key_id, pair)
            if seen.secret_access_key != pair.secret_access_key:
                raise ValueError(
                    f"access key id {pair.access_key_id!r} is given two different secrets"
                )
            if seen.session_token != pair.session_token:
                raise ValueError(
                    f"access key id {pair.access_key_id!r} is given two different session "
                    "tokens (or one and none)"
                )
        self._known = known

    def __getitem__(self, access_key_id: str) -> str:
        return self._known[access_key_id].secret_access_key

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def __repr__(self) -> str:
        return f"CredentialStore({sorted(self._known)!r})"

    def credentials(self, access_key_id: str) -> Credentials | None:
        """Return the pair of ``access_key_id``, or ``None`` when it is unknown."""
        return self._known.get(access_key_id)

    def session_token(self, access_key_id: str) -> str | None:
        """The session token of ``access_key_id`` (temporary credentials), or None."""
        pair = self._known.get(access_key_id)
        return None if pair is None else pair.session_token

    def merged(self, other: Iterable[Credentials] | Mapping[str, str]) -> CredentialStore:
        """Return a store holding both sets of pairs.

        Raises :class:`ValueError` when a key id has different secrets or session
        tokens in the two.
        """
        if not isinstance(other, CredentialStore):
            other = CredentialStore(other)
        return CredentialStore([*self._known.values(), *other._known.values()], region=self.region)

    @classmethod
    def from_file(cls, path: str | Path) -> CredentialStore:
        """Read an AWS-style credentials file (``~/.aws/credentials`` format).

        Raises :class:`~emulator.errors.ConfigError` naming the file (and the line,
        for a content error) when it cannot be read or parsed; see :meth:`from_text`.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"credentials file {path}: cannot be read: {error.strerror or error}"
            ) from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"credentials file {path}: not valid UTF-8 at byte {error.start}"
            ) from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, *, source: str = "<credentials>") -> CredentialStore:
        """Parse credentials-file text: ``[profile]`` sections of ``key = value`` lines.

        Every profile holding ``aws_access_key_id`` must hold ``aws_secret_access_key``
        and vice versa; its ``aws_session_token``, if any, makes it temporary
        credentials (see :class:`Credentials`); other keys (``region``...) and
        profiles without a pair are ignored. ``#`` and ``;`` start comment lines; ``:`` is
        accepted for ``=``, as botocore's parser does. Raises
        :class:`~emulator.errors.ConfigError` as ``"<source>:<line>: <problem>"`` for
        a line that is neither a section nor a pair, a pair outside any profile, a
        repeated profile or key, a half pair, a bad key id, one key id with two
        secrets, or a text with no pair at all. Line contents are not echoed, as
        they may hold secrets.
        """
        profiles: dict[str, _Profile] = {}
        current: _Profile | None = None
        last_key: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if raw[0] in " \t" and last_key is not None:
                # configparser's continuation line: part of the previous value.
                if last_key in _READ_KEYS:
                    raise ConfigError(
                        f"{source}:{number}: the value of {last_key} continues on an "
                        "indented line; put it on one line"
                    )
                continue
            if line.startswith("["):
                if not line.endswith("]") or not line[1:-1].strip():
                    raise ConfigError(
                        f"{source}:{number}: malformed profile header: expected '[name]'"
                    )
                name = line[1:-1].strip()
                if name in profiles:
                    raise ConfigError(
                        f"{source}:{number}: profile [{name}] is already defined at line "
                        f"{profiles[name].line}"
                    )
                current = profiles[name] = _Profile(name=name, line=number)
                last_key = None
                continue
            match = _PAIR.match(line)
            if match is None:
                raise ConfigError(
                    f"{source}:{number}: expected '[profile]' or 'key = value' "
                    "(the line is not shown: it may hold a secret)"
                )
            key, value = match.group(1).strip().lower(), match.group(2).strip()
            if current is None:
                raise ConfigError(f"{source}:{number}: {key} appears before any [profile] header")
            if key in current.values:
                raise ConfigError(
                    f"{source}:{number}: {key} is repeated in profile [{current.name}] "
                    f"(first at line {current.values[key][1]})"
                )
            current.values[key] = (value, number)
            last_key = key
        pairs: list[Credentials] = []
        owners: dict[str, tuple[str, str | None, int]] = {}
        for profile in profiles.values():
            pair = profile.credentials(source)
            if pair is None:
                continue
            key_line = profile.values[_KEY_ID][1]
            seen = owners.get(pair.access_key_id)
            if seen is not None and seen[0] != pair.secret_access_key:
                raise ConfigError(
                    f"{source}:{key_line}: access key id {pair.access_key_id!r} in profile "
                    f"[{profile.name}] has a different secret than at line {seen[2]}"
                )
            if seen is not None and seen[1] != pair.session_token:
                if seen[1] is not None and pair.session_token is not None:
                    what = f"a different {_TOKEN} than"
                elif seen[1] is None:
                    what = f"an {_TOKEN}, where it has none"
                else:
                    what = f"no {_TOKEN}, where it has one"
                raise ConfigError(
                    f"{source}:{key_line}: access key id {pair.access_key_id!r} in profile "
                    f"[{profile.name}] has {what} at line {seen[2]}"
                )
            owners[pair.access_key_id] = (pair.secret_access_key, pair.session_token, key_line)
            pairs.append(pair)
        if not pairs:
            raise ConfigError(
                f"{source}: no profile holds both {_KEY_ID} and {_SECRET}; nothing to verify with"
            )
        return cls(pairs)


_KEY_ID = "aws_access_key_id"
_SECRET = "aws_secret_access_key"
_TOKEN = "aws_session_token"
#: The keys the emulator reads: a value continued on the next line is refused.
_READ_KEYS = (_KEY_ID, _SECRET, _TOKEN)
_PAIR = re.compile(r"([^=:\[\s][^=:]*?)\s*[=:]\s*(.*)")


@dataclass(kw_only=True, slots=True)
class _Profile:
    name: str
    line: int
    values: dict[str, tuple[str, int]] = field(default_factory=dict)

    def credentials(self, source: str) -> Credentials | None:
        key_id, secret = self.values.get(_KEY_ID), self.values.get(_SECRET)
        if key_id is None and secret is None:
            return None
        if key_id is None or secret is None:
            present, missing = (_KEY_ID, _SECRET) if secret is None else (_SECRET, _KEY_ID)
            line = self.values[present][1]
            raise ConfigError(
                f"{source}:{line}: profile [{self.name}] has {present} but no {missing}"
            )
        if not secret[0]:
            raise ConfigError(f"{source}:{secret[1]}: profile [{self.name}] has an empty {_SECRET}")
        token = self.values.get(_TOKEN)
        if token is not None and not token[0]:
            raise ConfigError(f"{source}:{token[1]}: profile [{self.name}] has an empty {_TOKEN}")
        try:
            return Credentials(
                access_key_id=key_id[0],
                secret_access_key=secret[0],
                session_token=None if token is None else token[0],
            )
        except ValueError as error:
            raise ConfigError(f"{source}:{key_id[1]}: profile [{self.name}]: {error}") from None


# --------------------------------------------------------------------------- request


def derive_signing_key(*, secret_access_key: str, day: str, region: str, service: str) -> bytes:
    """Return the SigV4 signing key for ``day`` (``YYYYMMDD``), region and service.

    ``HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request")``.
    """
    key = _hmac(f"AWS4{secret_access_key}".encode(), day.encode())
    key = _hmac(key, region.encode())
    key = _hmac(key, service.encode())
    return _hmac(key, b"aws4_request")


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestSignature:
    """A verified request signature: what the event chain needs to go on.

    ``signature`` is the Authorization header's hex signature (the chain's seed),
    ``signing_key`` the key derived for the request's date (secret-derived, so not
    in ``repr``), ``scope`` ``DATE/REGION/SERVICE/aws4_request`` and ``streaming``
    whether the payload hash was :data:`STREAMING_PAYLOAD`.
    """

    access_key_id: str
    date: datetime
    region: str
    service: str
    scope: str
    signature: str
    streaming: bool
    signing_key: bytes = field(repr=False)
    # Events signed on a later UTC day need a key derived from the secret itself.
    secret_access_key: str = field(repr=False)

    def signing_key_for(self, day: str) -> bytes:
        """Return the signing key for ``day`` (``YYYYMMDD``) in this request's scope."""
        if day == self.scope[:8]:
            return self.signing_key
        return derive_signing_key(
            secret_access_key=self.secret_access_key,
            day=day,
            region=self.region,
            service=self.service,
        )


# Signed headers whose values a signature-mismatch message must not echo.
_HIDDEN_HEADERS = frozenset({"x-amz-security-token"})
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method."
)


def _group_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        # surrogateescape keeps any non-UTF-8 byte, so the canonical request re-encodes
        # to exactly the bytes the client hashed.
        grouped.setdefault(key, []).append(value.decode("utf-8", "surrogateescape"))
    return grouped


def _parse_authorization(value: str) -> tuple[str, str, str]:
    """Return (credential, signed headers, signature) or raise AccessDeniedException."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AccessDeniedException(
            f"Authorization header uses algorithm {algorithm[:40]!r}; only {ALGORITHM} "
            "(SigV4) is supported"
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, equals, part = item.strip().partition("=")
        part = part.strip()
        if not equals or name in parts or any(c.isspace() for c in part):
            raise AccessDeniedException(
                "Authorization header is malformed: expected 'AWS4-HMAC-SHA256 "
                "Credential=..., SignedHeaders=..., Signature=...'"
            )
        parts[name] = part
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not parts.get(required):
            raise AccessDeniedException(f"Authorization header requires '{required}' parameter.")
    return parts["Credential"], parts["SignedHeaders"], parts["Signature"]


def _canonical_path(path: str) -> str:
    # aws_sdk_signers: remove dot segments and doubled slashes, then URI-encode the
    # path as sent (already encoded once), so non-S3 paths end up encoded twice.
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == ".":
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    if path.startswith("/") and (not segments or segments[0]):
        segments.insert(0, "")
    if segments and path.endswith(("/.", "/..")):
        segments.append("")
    normalized = "/".join(segments).replace("//", "/")
    return quote(normalized or "/", safe="/")


def _canonical_query(query: str) -> str:
    # aws_sdk_signers: decode, re-encode every name and value, sort the encoded pairs.
    if not query:
        return ""
    pairs = (
        (quote(name, safe=""), quote(value, safe=""))
        for name, value in parse_qsl(query, keep_blank_values=True)
    )
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _payload_hash(grouped: dict[str, list[str]], body: bytes | None) -> str:
    declared = grouped.get("x-amz-content-sha256")
    value = ",".join(declared) if declared is not None else None
    if body is None:
        if value != STREAMING_PAYLOAD:
            got = "no x-amz-content-sha256 header" if value is None else repr(value[:80])
            raise AccessDeniedException(
                f"x-amz-content-sha256 must be {STREAMING_PAYLOAD} on an event-stream "
                f"request, got {got}"
            )
        return value
    actual = hashlib.sha256(body).hexdigest()
    if value is None:
        return actual
    if value == UNSIGNED_PAYLOAD:
        # S3's: a service that signs its body computes its hash itself, and a
        # signature over UNSIGNED-PAYLOAD does not match (nothing covered the body).
        raise AccessDeniedException(
            f"x-amz-content-sha256 is {UNSIGNED_PAYLOAD}, which only S3 takes: this "
            "service's signature covers the request body (its SHA-256)"
        )
    if not _HEX_SHA256.fullmatch(value) or not hmac.compare_digest(value, actual):
        raise AccessDeniedException(
            f"x-amz-content-sha256 {value[:80]!r} does not match the SHA-256 of the "
            f"{len(body)}-byte request body ({actual})"
        )
    return value


def _check_fresh(stamp: str, moment: datetime, now: datetime, what: str) -> None:
    now_stamp = _format_timestamp(now)
    if moment < now - MAX_CLOCK_SKEW:
        limit = _format_timestamp(now - MAX_CLOCK_SKEW)
        raise AccessDeniedException(
            f"Signature expired: {what} {stamp} is now earlier than {limit} ({now_stamp} - 5 min.)"
        )
    if moment > now + MAX_CLOCK_SKEW:
        limit = _format_timestamp(now + MAX_CLOCK_SKEW)
        raise AccessDeniedException(
            f"Signature not yet current: {what} {stamp} is still later than {limit} "
            f"({now_stamp} + 5 min.)"
        )


def _check_session_token(
    sent: list[str] | None, access_key_id: str, store: Mapping[str, str]
) -> None:
    """Refuse a request whose ``X-Amz-Security-Token`` does not go with its key:
    temporary credentials (a key given with a session token) must send that
    token, and a long-term key none. The tokens are never echoed."""
    token = store.session_token(access_key_id) if isinstance(store, CredentialStore) else None
    invalid = "The security token included in the request is invalid"
    if token is None:
        if sent is not None:
            raise AccessDeniedException(
                f"{invalid}: the request carries an X-Amz-Security-Token, but access key "
                f"id '{access_key_id}' was given to the emulator without a session token "
                "(a long-term key sends none; for temporary credentials give the emulator "
                "their token too: --session-token, or aws_session_token in the "
                "--credentials-file profile)"
            )
        return
    if sent is None:
        raise AccessDeniedException(
            f"{invalid}: access key id '{access_key_id}' is temporary credentials (the "
            "emulator was given its session token) and the request has no "
            "X-Amz-Security-Token header"
        )
    if len(sent) != 1 or not hmac.compare_digest(
        sent[0].encode("utf-8", "surrogateescape"), token.encode()
    ):
        raise AccessDeniedException(
            f"{invalid}: the request's X-Amz-Security-Token is not the session token of "
            f"access key id '{access_key_id}'"
        )


def verify_request(
    *,
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[bytes, bytes]],
    store: Mapping[str, str],
    now: datetime,
    body: bytes | None = None,
    service: str = SERVICE,
    region: str | None = None,
) -> RequestSignature:
    """Check the request's SigV4 ``Authorization`` header; return its :class:`RequestSignature`.

    ``path`` is the path as sent on the wire, still percent-encoded (ASGI
    ``raw_path``), ``query`` the raw query string without ``?``, ``headers`` the
    request headers (ASGI ``scope["headers"]``: ``host`` stands for ``:authority``),
    ``store`` the known key pairs (a :class:`CredentialStore` or any mapping of key
    id -> secret) and ``now`` the server's aware time. ``body=None`` means the
    event-stream request, whose ``x-amz-content-sha256`` must be
    :data:`STREAMING_PAYLOAD`; any other request passes its whole body, hashed as
    the payload (or checked against ``x-amz-content-sha256``; ``UNSIGNED-PAYLOAD``,
    S3's, is refused). ``region``, when given, is the only scope region accepted
    (by default ``store``'s :attr:`CredentialStore.region`, if it is one).

    Raises :class:`~emulator.errors.AccessDeniedException` for: no Authorization
    header; another algorithm or a malformed header; a malformed or mis-scoped
    Credential (date other than ``x-amz-date``'s, another service or region, not
    ``aws4_request``); no or malformed ``x-amz-date``; ``x-amz-date`` more than
    :data:`MAX_CLOCK_SKEW` off ``now``; an unknown access key id; an
    ``X-Amz-Security-Token`` missing, wrong or sent with a long-term key (one a
    :class:`CredentialStore` holds without a session token); ``host`` not
    signed or a signed header missing; a wrong payload hash; a signature mismatch
    (the message then gives the canonical request and string to sign, as AWS does).
    """
    _require_aware(now, "now")
    if region is None:
        region = getattr(store, "region", None)
    grouped = _group_headers(headers)
    authorizations = grouped.get("authorization")
    if not authorizations:
        if re.search(r"(?:^|&)X-Amz-(?:Signature|Algorithm)=", query, re.IGNORECASE):
            raise AccessDeniedException(
                "Missing Authentication Token: the request is presigned (its SigV4 "
                "signature is in the query string), which the emulator does not verify: "
                "sign it in an Authorization header, as the SDK and boto3 do for these calls"
            )
        raise AccessDeniedException(
            "Missing Authentication Token: the request has no Authorization header; "
            "sign it with AWS Signature Version 4"
        )
    if len(authorizations) > 1:
        raise AccessDeniedException("the request has more than one Authorization header")
    credential, signed_list, signature = _parse_authorization(authorizations[0])

    scope_parts = credential.rsplit("/", 4)
    if len(scope_parts) != 5 or not all(scope_parts):
        raise AccessDeniedException(
            "Credential should be of the form 'ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/"
            f"aws4_request', got {credential.count('/') + 1} '/'-separated parts"
        )
    access_key_id, day, scope_region, scope_service, terminator = scope_parts
    if not _HEX_SHA256.fullmatch(signature):
        raise AccessDeniedException(
            "Authorization header is malformed: Signature must be 64 lowercase hex digits"
        )

    dates = grouped.get("x-amz-date")
    if not dates:
        raise AccessDeniedException(
            "Authorization header requires existence of an 'X-Amz-Date' header."
        )
    stamp = ",".join(dates).strip()
    if not _TIMESTAMP.fullmatch(stamp):
        raise AccessDeniedException(
            f"X-Amz-Date {stamp[:40]!r} is not an ISO-8601 basic timestamp (YYYYMMDDTHHMMSSZ)"
        )
    try:
        moment = datetime.strptime(stamp, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise AccessDeniedException(f"X-Amz-Date {stamp!r} is not a valid date and time") from None

    if day != stamp[:8]:
        raise AccessDeniedException(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{day}' != '{stamp[:8]}', from '{stamp}'."
        )
    if scope_service != service:
        raise AccessDeniedException(
            f"Credential should be scoped to correct service: '{service}' "
            f"(the scope names '{scope_service}')."
        )
    if region is not None and scope_region != region:
        raise AccessDeniedException(
            f"Credential should be scoped to a valid region: '{region}' "
            f"(the scope names '{scope_region}')."
        )
    if terminator != "aws4_request":
        raise AccessDeniedException(
            f"Credential should be scoped with a valid terminator: 'aws4_request', "
            f"not '{terminator[:40]}'."
        )
    _check_fresh(stamp, moment, now, "the request's X-Amz-Date")

    secret = store.get(access_key_id)
    if secret is None:
        raise AccessDeniedException(
            "The security token included in the request is invalid: unknown access key "
            f"id '{access_key_id}'"
        )
    _check_session_token(grouped.get("x-amz-security-token"), access_key_id, store)

    signed = signed_list.split(";")
    if "host" not in signed:
        raise AccessDeniedException("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    canonical_headers: list[str] = []
    shown_headers: list[str] = []
    for name in signed:
        values = grouped.get(name)
        if values is None or name != name.lower() or not name:
            raise AccessDeniedException(
                f"signed header {name[:80]!r} is not in the request (SignedHeaders lists "
                "lowercase names of headers that were sent)"
            )
        line = f"{name}:{' '.join(','.join(values).split())}\n"
        canonical_headers.append(line)
        # The mismatch message shows the canonical request, but not a session token.
        shown_headers.append(f"{name}:***\n" if name in _HIDDEN_HEADERS else line)
    payload_hash = _payload_hash(grouped, body)

    head = f"{method.upper()}\n{_canonical_path(path)}\n{_canonical_query(query)}\n"
    tail = f"\n{signed_list}\n{payload_hash}"
    canonical_request = f"{head}{''.join(canonical_headers)}{tail}"
    scope = f"{day}/{scope_region}/{scope_service}/{terminator}"
    string_to_sign = (
        f"{ALGORITHM}\n{stamp}\n{scope}\n"
        f"{hashlib.sha256(canonical_request.encode('utf-8', 'surrogateescape')).hexdigest()}"
    )
    key = derive_signing_key(
        secret_access_key=secret, day=day, region=scope_region, service=scope_service
    )
    expected = _hmac(key, string_to_sign.encode()).hex()
    if not hmac.compare_digest(expected, signature):
        raise AccessDeniedException(
            f"{_SIGNATURE_MISMATCH} (access key id '{access_key_id}')\n\n"
            "The Canonical String for this request should have been\n"
            f"'{head}{''.join(shown_headers)}{tail}'\n\n"
            f"The String-to-Sign should have been\n'{string_to_sign}'\n"
        )
    return RequestSignature(
        access_key_id=access_key_id,
        date=moment,
        region=scope_region,
        service=scope_service,
        scope=scope,
        signature=signature,
        streaming=payload_hash == STREAMING_PAYLOAD,
        signing_key=key,
        secret_access_key=secret,
    )


# --------------------------------------------------------------------------- events


def encode_date_header(date: datetime) -> bytes:
    """Return the ``:date`` header exactly as the SDK encodes (and signs) it.

    Name length 5, ``:date``, type 8, then the big-endian i64 milliseconds since
    the epoch. Raises :class:`ValueError` for a naive ``date``.
    """
    _require_aware(date, "date")
    return _DATE_HEADER_PREFIX + _I64.pack((date - _EPOCH) // _ONE_MS)


def _now() -> datetime:
    return datetime.now(UTC)


class ChunkVerifier:
    """Checks the ``:chunk-signature`` chain of one input stream, envelope by envelope.

    Feed every decoded input message, in order, as :func:`emulator.eventstream.open_envelope`
    returns it, to :meth:`verify`; call :meth:`end_of_stream` when the request body
    ends. Events are numbered from 1 in messages: "event 3" is the third message
    of the input stream. ``now_fn`` returns the server's aware time for the
    freshness check (default: the system clock). Once a check fails, every later
    call fails too: the chain cannot be resumed.
    """

    def __init__(
        self, *, request: RequestSignature, now_fn: Callable[[], datetime] | None = None
    ) -> None:
        self._request = request
        self._now_fn = now_fn or _now
        self._prior = request.signature
        self._keys: dict[str, bytes] = {request.scope[:8]: request.signing_key}
        self._count = 0
        self._complete = False
        self._failure: str | None = None

    @property
    def complete(self) -> bool:
        """True once the final empty signed frame has been verified."""
        return self._complete

    @property
    def count(self) -> int:
        """How many envelopes have been given to :meth:`verify`."""
        return self._count

    def _fail(self, message: str) -> ValidationException:
        self._failure = message
        return ValidationException(message)

    def verify(self, envelope: Envelope) -> None:
        """Check the next envelope's signature against the chain, then advance the chain.

        Raises :class:`~emulator.errors.ValidationException` when: an envelope
        comes after the final empty frame; it has no ``:chunk-signature`` or no
        ``:date``; its signature is not :data:`SIGNATURE_LENGTH` bytes; its ``:date``
        is more than :data:`MAX_CLOCK_SKEW` off ``now_fn()``;
        its signature does not match (a tampered, dropped, reordered or foreign
        event); or the chain already failed.
        """
        self._count += 1
        number = self._count
        if self._failure is not None:
            raise ValidationException(
                f"event {number} cannot be verified: the signature chain failed earlier "
                f"({self._failure})"
            )
        if self._complete:
            raise self._fail(
                f"event {number} arrived after the final empty signed frame that ends the "
                "input stream"
            )
        if envelope.signature is None:
            raise self._fail(
                f"event {number} has no :chunk-signature header: with signature "
                "verification on, every input event must come in a signed envelope"
            )
        if envelope.date is None:
            raise self._fail(
                f"event {number} has no :date header: its :chunk-signature cannot be checked"
            )
        if len(envelope.signature) != SIGNATURE_LENGTH:
            raise self._fail(
                f"the :chunk-signature of event {number} is {len(envelope.signature)} bytes: "
                f"an event's signature is {SIGNATURE_LENGTH} (an HMAC-SHA256, sent as bytes, "
                "not hex)"
            )
        date = envelope.date
        stamp = _format_timestamp(date)
        now = self._now_fn()
        if abs(date - now) > MAX_CLOCK_SKEW:
            side = "before" if date < now else "after"
            raise self._fail(
                f"event {number} is signed at {stamp} (its :date), more than 5 minutes "
                f"{side} the server time {_format_timestamp(now)}"
            )
        day = stamp[:8]
        key = self._keys.get(day)
        if key is None:
            key = self._keys[day] = self._request.signing_key_for(day)
        string_to_sign = (
            f"{EVENT_ALGORITHM}\n{stamp}\n"
            f"{day}/{self._request.region}/{self._request.service}/aws4_request\n"
            f"{self._prior}\n"
            f"{hashlib.sha256(encode_date_header(date)).hexdigest()}\n"
            f"{hashlib.sha256(envelope.raw_inner).hexdigest()}"
        )
        expected = _hmac(key, string_to_sign.encode())
        if not hmac.compare_digest(expected, envelope.signature):
            position = "the final empty frame" if envelope.ends_stream else "its payload"
            raise self._fail(
                f"chunk signature of event {number} does not match the one computed from "
                f"the previous signature, its :date and {position}: the event was altered, "
                "dropped, reordered or signed with other credentials"
            )
        self._prior = expected.hex()
        if envelope.ends_stream:
            self._complete = True

    def end_of_stream(self) -> None:
        """Declare the request body finished.

        Raises :class:`~emulator.errors.ValidationException` with
        :data:`MISSING_EMPTY_FRAME` (the service's own words) unless the final
        empty signed frame was verified; returns ``None`` otherwise.
        """
        if not self._complete:
            raise ValidationException(MISSING_EMPTY_FRAME)
