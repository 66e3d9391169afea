"""Domains and subscriptions: the control-plane state, kept in SQLite (moto's backend).

:class:`ResourceRegistry` holds the domains, subscriptions and tags of the emulated
account and raises the model's errors (:mod:`emulator.errors`) about them; the
constraints of the model ``connecthealth-2025-01-29`` on ids, names, ARNs and tags are
here as :class:`~emulator.shapes.TextShape` constants, which :mod:`emulator.control`
applies to requests and :func:`load_resources_file` to the seed file.

Choices the model leaves open, made once here:

- Ids are generated to the model's patterns: ``dom-`` + 20 of ``[a-z0-9]`` (DomainId)
  and ``sub-`` + 21 of ``[a-zA-Z0-9]`` (SubscriptionId). ARNs are
  ``arn:aws:health-agent:<region>:<account>:domain/<domainId>[/subscription/<subId>]``.
- CreateDomain is ``@idempotent`` without a client token, so an identical request
  (name, kmsKeyArn, webAppSetupConfiguration, tags) returns the domain it created before,
  while that domain exists.
- A new subscription is ACTIVE. Activating an active (or deactivating an inactive)
  subscription changes nothing. DeleteDomain deletes the domain, its subscriptions and
  all their tags at once and answers ``DELETED``; the model lists no ConflictException
  for it, so a domain with subscriptions can be deleted.
- Quotas (ServiceQuotaExceededException) are the emulator's: ``max_domains`` and
  ``max_subscriptions_per_domain``.
- Lists are in creation order; ``nextToken`` is opaque and only valid for the same
  operation with the same filter.

The seed file (``<fixtures>/resources.yaml``) pre-creates resources with fixed ids::

    domains:
      - domainId: dom-0123456789abcdefghij
        name: demo-clinic
        tags: {team: scribe}
        subscriptions:
          - {subscriptionId: sub-0123456789abcdefghijk, status: ACTIVE}

:meth:`ResourceRegistry.load_seed` applies it when the database is new or the seed's
content changed; an unchanged seed never overwrites saved state. :meth:`reset` clears
everything and applies the seed again.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .documents import read_document
from .errors import (
    ConfigError,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    ValidationException,
)
from .ids import id_rng
from .problems import as_written
from .scenario import Checker, FieldPath, ScenarioError, describe
from .shapes import JAVA_DOT, TextShape, validation_error
from .shapes import pattern as _pattern

__all__ = [
    "ACCOUNT_ID",
    "REGION",
    "DEFAULT_MAX_RESULTS",
    "DOMAIN_ID",
    "SUBSCRIPTION_ID",
    "DOMAIN_NAME",
    "KMS_KEY_ARN",
    "WEB_APP_SETUP_MEMBERS",
    "TAG_KEY",
    "TAG_VALUE",
    "TAG_KEYS_MAX",
    "DOMAIN_STATUS",
    "MAX_RESULTS",
    "ARN_PATTERN",
    "ARN_FORM",
    "Domain",
    "Subscription",
    "Page",
    "SeedSubscription",
    "SeedDomain",
    "ResourcesError",
    "ResourceRegistry",
    "load_resources_file",
    "state_database_problem",
]

#: The emulated account and region that every ARN names.
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"

#: Page size when ``maxResults`` is absent: the model's maximum.
DEFAULT_MAX_RESULTS = 100

#: Bumped when the tables change shape; an older file is refused, not misread.
SCHEMA_VERSION = "1"

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


# --- Constraints of the model's shapes (emulator.shapes words their violations) ----
DOMAIN_ID = _pattern("(hai-|dom-)[a-z0-9]+", min_len=20, max_len=25)
SUBSCRIPTION_ID = _pattern("sub-[a-zA-Z0-9]{21}", min_len=25, max_len=25)
DOMAIN_NAME = TextShape(min_len=1, max_len=64)
KMS_KEY_ARN = _pattern("arn:aws:kms:[a-z0-9-]+:[0-9]{12}:key/[a-f0-9-]+")
_EHR_ROLE = _pattern(
    "arn:aws:iam::[0-9]{12}:role/.+",
    rf"arn:aws:iam::[0-9]{{12}}:role/{JAVA_DOT}+",
    min_len=1,
    max_len=2048,
)
#: CreateWebAppConfiguration: all three members are required.
WEB_APP_SETUP_MEMBERS: Mapping[str, TextShape] = MappingProxyType(
    {
        "ehrRole": _EHR_ROLE,
        "idcInstanceId": TextShape(min_len=1, max_len=256),
        "idcRegion": TextShape(min_len=1, max_len=64),
    }
)
TAG_KEY = TextShape(min_len=1, max_len=128)
TAG_VALUE = TextShape(min_len=0, max_len=256)
TAG_KEYS_MAX = 50  # TagKeyList: length 1..50
DOMAIN_STATUS = TextShape(enum=("ACTIVE", "DELETING", "DELETED"))
# A seed may not describe a DELETED subscription: no operation could produce one.
_SEED_SUBSCRIPTION_STATUS = TextShape(enum=("ACTIVE", "INACTIVE"))
MAX_RESULTS = (1, 100)  # ListDomains/ListSubscriptionsInputMaxResultsInteger
#: A domain or subscription ARN, as DomainArn and SubscriptionArn constrain them.
ARN_PATTERN = re.compile(
    r"arn:aws:health-agent:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):"
    r"domain/(?P<domain>(?:hai-|dom-)[a-z0-9]+)(?:/subscription/(?P<sub>sub-[a-zA-Z0-9]{21}))?"
)
ARN_FORM = (
    "arn:aws:health-agent:<region>:<account>:domain/<domainId>[/subscription/<subscriptionId>]"
)


def _page_token(operation: str, scope: str, after: int) -> str:
    raw = json.dumps({"op": operation, "scope": scope, "after": after}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")


def _page_start(token: str | None, operation: str, scope: str) -> int:
    """Return the position ``token`` continues after (0 without one).

    Raises ValidationException for a token that is not one ``operation`` returned for the
    same ``scope`` (filter or parent).
    """
    if token is None:
        return 0
    try:
        document = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):  # not base64, not UTF-8 or not JSON
        document = None
    if isinstance(document, dict) and (document.get("op"), document.get("scope")) == (
        operation,
        scope,
    ):
        after = document.get("after")
        if type(after) is int and 0 <= after < 2**63:  # a position SQLite can hold
            return after
    shown = token if len(token) <= 256 else token[:256] + "..."
    rule = f"Member must be a nextToken returned by {operation} with the same parameters"
    raise validation_error([f"Value '{shown}' at 'nextToken' failed to satisfy constraint: {rule}"])


# --- Resources --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class Domain:
    """One domain as the API describes it; ``created_at`` is epoch seconds."""

    domain_id: str
    arn: str
    name: str
    status: str
    created_at: float
    kms_key_arn: str | None = None
    web_app_configuration: Mapping[str, str] | None = None
    web_app_url: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Return the DomainSummary JSON object."""
        return {
            "domainId": self.domain_id,
            "arn": self.arn,
            "name": self.name,
            "status": self.status,
            "createdAt": self.created_at,
        }

    def to_json(self, *, with_tags: bool) -> dict[str, Any]:
        """Return CreateDomainOutput (``with_tags=False``) or GetDomainOutput JSON."""
        out = self.summary()
        if self.kms_key_arn is not None:
            out["kmsKeyArn"] = self.kms_key_arn
            out["encryptionContext"] = {
                "encryptionType": "CUSTOMER_MANAGED_KEY",
                "kmsKeyArn": self.kms_key_arn,
            }
        else:
            out["encryptionContext"] = {"encryptionType": "AWS_OWNED_KEY"}
        if self.web_app_configuration is not None:
            out["webAppConfiguration"] = dict(self.web_app_configuration)
            out["webAppUrl"] = self.web_app_url
        if with_tags:
            out["tags"] = dict(self.tags)
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Subscription:
    """One subscription (SubscriptionDescription); times are epoch seconds."""

    subscription_id: str
    domain_id: str
    arn: str
    status: str
    created_at: float
    last_updated_at: float
    activated_at: float | None = None
    deactivated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the SubscriptionDescription JSON object."""
        out: dict[str, Any] = {
            "domainId": self.domain_id,
            "subscriptionId": self.subscription_id,
            "arn": self.arn,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at,
        }
        if self.activated_at is not None:
            out["activatedAt"] = self.activated_at
        if self.deactivated_at is not None:
            out["deactivatedAt"] = self.deactivated_at
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Page[T]:
    """One page of a list: ``items`` and the token of the next page, if any."""

    items: tuple[T, ...]
    next_token: str | None = None


# --- The seed file ----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class SeedSubscription:
    """A subscription the seed file creates under its domain."""

    subscription_id: str
    status: str = "ACTIVE"
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedDomain:
    """A domain the seed file creates, with its subscriptions."""

    domain_id: str
    name: str
    kms_key_arn: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    subscriptions: tuple[SeedSubscription, ...] = ()


class ResourcesError(ScenarioError):
    """Problems of a resources file; ``problems`` lists them all (file, line, field)."""


_FILE_KEYS = ("domains",)
_DOMAIN_KEYS = ("domainId", "name", "kmsKeyArn", "tags", "subscriptions")
_SUBSCRIPTION_KEYS = ("subscriptionId", "status", "tags")


def _seed_text(
    item: Mapping[str, object],
    key: str,
    path: FieldPath,
    shape: TextShape,
    checker: Checker,
    *,
    required: bool,
) -> str | None:
    if key not in item or item[key] is None:
        if required:
            checker.add(path, f"missing required key {key!r}")
        return None
    value = as_written(item[key])  # 0089: the text YAML 1.1 read
    broken = shape.rules(value)
    for rule in broken:
        checker.add((*path, key), f"{rule}, got {describe(value)}")
    return None if broken else str(value)


def _seed_tags(item: Mapping[str, object], path: FieldPath, checker: Checker) -> dict[str, str]:
    tags = item.get("tags")
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        checker.add((*path, "tags"), f"must be a mapping of strings, got {describe(tags)}")
        return {}
    tags = {as_written(k): as_written(v) for k, v in tags.items()}  # 0089: as written
    for key, value in tags.items():
        for rule in TAG_KEY.rules(key):
            checker.add((*path, "tags", str(key)), f"tag key: {rule}, got {describe(key)}")
        for rule in TAG_VALUE.rules(value):
            checker.add((*path, "tags", str(key)), f"tag value: {rule}, got {describe(value)}")
    return {str(k): str(v) for k, v in tags.items()}


def _seed_domain(
    raw: object, path: FieldPath, checker: Checker, seen: dict[str, FieldPath]
) -> SeedDomain | None:
    item = checker.mapping(raw, path, allowed=_DOMAIN_KEYS, what="a domain")
    if item is None:
        return None
    before = len(checker.problems)
    domain_id = _seed_text(item, "domainId", path, DOMAIN_ID, checker, required=True)
    name = _seed_text(item, "name", path, DOMAIN_NAME, checker, required=True)
    kms = _seed_text(item, "kmsKeyArn", path, KMS_KEY_ARN, checker, required=False)
    tags = _seed_tags(item, path, checker)
    if domain_id is not None:
        _unique(domain_id, (*path, "domainId"), checker, seen)
    subscriptions = []
    raw_subs = item.get("subscriptions") or []
    if not isinstance(raw_subs, list):
        checker.add((*path, "subscriptions"), f"must be a list, got {describe(raw_subs)}")
        raw_subs = []
    for index, raw_sub in enumerate(raw_subs):
        sub_path = (*path, "subscriptions", index)
        sub = checker.mapping(raw_sub, sub_path, allowed=_SUBSCRIPTION_KEYS, what="a subscription")
        if sub is None:
            continue
        sub_id = _seed_text(
            sub, "subscriptionId", sub_path, SUBSCRIPTION_ID, checker, required=True
        )
        status = _seed_text(
            sub, "status", sub_path, _SEED_SUBSCRIPTION_STATUS, checker, required=False
        )
        sub_tags = _seed_tags(sub, sub_path, checker)
        if sub_id is not None:
            _unique(sub_id, (*sub_path, "subscriptionId"), checker, seen)
            subscriptions.append(
                SeedSubscription(subscription_id=sub_id, status=status or "ACTIVE", tags=sub_tags)
            )
    if len(checker.problems) > before or domain_id is None or name is None:
        return None
    return SeedDomain(
        domain_id=domain_id,
        name=name,
        kms_key_arn=kms,
        tags=tags,
        subscriptions=tuple(subscriptions),
    )


def _unique(value: str, path: FieldPath, checker: Checker, seen: dict[str, FieldPath]) -> None:
    if value in seen:
        first = checker.line(seen[value])
        at = f" (first at line {first})" if first is not None else ""
        checker.add(path, f"duplicate id {value!r}{at}")
    else:
        seen[value] = path


def load_resources_file(path: str | Path) -> list[SeedDomain]:
    """Load a resources file: ``{"domains": [...]}`` in YAML, or JSON by ``.json`` suffix.

    Returns the seeded domains in file order; an empty file, or one whose domains are
    all commented out, gives ``[]``. Raises :class:`ResourcesError` (a
    :class:`~emulator.errors.ConfigError`) listing every problem with file, line and field.
    """
    path = Path(path)
    checker = Checker(str(path))
    ok, data = read_document(path, checker)
    if not ok:
        raise ResourcesError(checker.problems)
    top = (
        {}
        if data is None
        else checker.mapping(data, (), allowed=_FILE_KEYS, what="a resources file")
    )
    raw_domains = (top or {}).get("domains") or []
    if not isinstance(raw_domains, list):
        checker.add(("domains",), f"must be a list of domains, got {describe(raw_domains)}")
        raw_domains = []
    seen: dict[str, FieldPath] = {}
    domains = [
        _seed_domain(raw, ("domains", i), checker, seen) for i, raw in enumerate(raw_domains)
    ]
    if checker.problems:
        raise ResourcesError(checker.problems)
    return [d for d in domains if d is not None]


def _seed_digest(domains: Sequence[SeedDomain]) -> str:
    document = [
        {
            "domainId": d.domain_id,
            "name": d.name,
            "kmsKeyArn": d.kms_key_arn,
            "tags": dict(d.tags),
            "subscriptions": [
                {"subscriptionId": s.subscription_id, "status": s.status, "tags": dict(s.tags)}
                for s in d.subscriptions
            ],
        }
        for d in domains
    ]
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


# --- The registry -----------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resource_domains (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    domain_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    kms_key_arn TEXT,
    web_app TEXT,          -- WebAppConfiguration as JSON, or NULL
    request_digest TEXT    -- CreateDomain's input, for its idempotency; NULL when seeded
);
CREATE TABLE IF NOT EXISTS resource_subscriptions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription_id TEXT NOT NULL UNIQUE,
    domain_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_updated_at REAL NOT NULL,
    activated_at REAL,
    deactivated_at REAL
);
CREATE INDEX IF NOT EXISTS resource_subscriptions_domain
    ON resource_subscriptions (domain_id, seq);
CREATE TABLE IF NOT EXISTS resource_tags (
    resource_id TEXT NOT NULL,   -- a domain or subscription id (their prefixes differ)
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (resource_id, key)
);
"""


def state_database_problem(path: object, error: sqlite3.Error) -> str:
    """What to tell the user when the state database cannot be used."""
    reason = str(error)
    where = Path(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    if where is not None and where.is_dir():
        hint = "a directory is at its path: move it aside, or use another --state-dir"
    elif where is not None and where.is_symlink() and not where.exists():
        hint = (
            f"it is a symlink to {os.readlink(where)}, which does not exist: remove it, or "
            "use another --state-dir"
        )
    elif where is not None and where.exists() and not os.access(where, os.R_OK | os.W_OK):
        hint = "this user cannot read and write it: check its owner and permissions"
    elif "disk is full" in reason:  # SQLITE_FULL: not another version's file
        hint = (
            f"the file system holding --state-dir is full{_free_space(where)}: free "
            "space on it, or use another --state-dir"
        )
    elif (
        "unable to open" in reason
        and where is not None
        and os.access(where.parent, os.W_OK | os.X_OK)
    ):
        # Not the permissions, then: SQLite says the same when out of descriptors.
        hint = (
            "the state directory is writable, so not its permissions: is the open-file "
            "limit (ulimit -n) too low?"
        )
    elif "readonly" in reason or "unable to open" in reason:
        hint = "is the state directory writable by this user?"
    elif "not a database" in reason or "malformed" in reason:
        hint = "the file is damaged or not SQLite: move it aside, or use another --state-dir"
    else:
        hint = (
            "it was probably written by another version of the emulator: move it aside, "
            "or use another --state-dir"
        )
    return f"cannot use the state database {path}: {reason} ({hint})"


def _free_space(where: Path | None) -> str:
    """`` (N bytes free)`` on the file system holding ``where``, or nothing: SQLite
    finds a file system full with a few KiB still free, which ``df`` rounds away."""
    if where is None:
        return ""
    try:
        free = shutil.disk_usage(where.parent).free
    except OSError:
        return ""
    return f" ({free:,} bytes free)"


class ResourceRegistry:
    """Domains, subscriptions and tags of the emulated account, in SQLite.

    ``db_path=None`` keeps them in memory; a file keeps them across restarts (its parent
    folder is created). Safe to use from several threads. Arguments are taken as already
    valid for the model (:mod:`emulator.control` checks requests first); the methods
    raise :class:`~emulator.errors.ResourceNotFoundException` naming a missing id and
    :class:`~emulator.errors.ServiceQuotaExceededException` past the quotas. Raises
    :class:`~emulator.errors.ConfigError` when ``db_path`` is not a resource database of
    this version.
    """

    def __init__(
        self,
        *,
        db_path: Path | None,
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
        max_domains: int = 100,
        max_subscriptions_per_domain: int = 1000,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = db_path
        self.region = region
        self.account_id = account_id
        self.max_domains = max_domains
        self.max_subscriptions_per_domain = max_subscriptions_per_domain
        # Ids must not repeat after a restart: emulator.ids says where they come from.
        self._rng = rng if rng is not None else id_rng()
        self._clock = clock
        self._lock = threading.Lock()
        self._seed_path: Path | None = None
        if db_path is not None:
            # 0700 as the server makes the state dir: the sessions are in it.
            Path(db_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                ":memory:" if db_path is None else str(db_path), check_same_thread=False
            )
        except sqlite3.DatabaseError as error:  # a directory there, or no permission
            raise ConfigError(state_database_problem(db_path, error)) from None
        self._db.row_factory = sqlite3.Row
        try:
            with self._db:
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO resource_meta VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
            version = self._meta("schema")
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise ConfigError(state_database_problem(db_path, error)) from None
        if version != SCHEMA_VERSION:
            self._db.close()
            text = str(version)
            newer = text.isascii() and text.isdigit() and int(text) > int(SCHEMA_VERSION)
            raise ConfigError(
                f"{db_path}: resource database version {version}, this emulator reads "
                f"{SCHEMA_VERSION}"
                + (
                    " (a newer medscribe-emulator wrote it): run that release or a newer "
                    "one on this state dir, or give this one another --state-dir"
                    if newer
                    else ": give this emulator another --state-dir"
                )
                + "; the file also holds every session, domain and subscription, so do "
                "not delete it to start afresh unless you mean to lose them"
            )

    def close(self) -> None:
        """Close the database; the registry cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def domain_arn(self, domain_id: str) -> str:
        """Return the DomainArn of ``domain_id``."""
        return f"arn:aws:health-agent:{self.region}:{self.account_id}:domain/{domain_id}"

    def subscription_arn(self, domain_id: str, subscription_id: str) -> str:
        """Return the SubscriptionArn of a subscription of ``domain_id``."""
        return f"{self.domain_arn(domain_id)}/subscription/{subscription_id}"

    # -- Domains ---------------------------------------------------------------------

    def create_domain(
        self,
        *,
        name: str,
        kms_key_arn: str | None = None,
        web_app_setup: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Domain:
        """CreateDomain: return a new ACTIVE domain, or the one an identical request made.

        ``web_app_setup`` is CreateWebAppConfiguration (ehrRole, idcInstanceId,
        idcRegion). Raises ServiceQuotaExceededException past ``max_domains``.
        """
        request = {
            "name": name,
            "kmsKeyArn": kms_key_arn,
            "webAppSetupConfiguration": None if web_app_setup is None else dict(web_app_setup),
            "tags": dict(tags or {}),
        }
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        with self._transaction() as db:
            row = db.execute(
                "SELECT * FROM resource_domains WHERE request_digest = ?", (digest,)
            ).fetchone()
            if row is not None:
                return self._domain(row)
            count = db.execute("SELECT COUNT(*) FROM resource_domains").fetchone()[0]
            if count >= self.max_domains:
                raise ServiceQuotaExceededException(
                    f"Domain quota exceeded: the account has {count} domains and the "
                    f"emulator allows {self.max_domains}"
                )
            domain_id = self._new_id("dom-", _LOWER_ALNUM, 20, "resource_domains", "domain_id")
            web_app = None
            if web_app_setup is not None:
                # The service makes an Identity Center application in the given instance.
                app_id = "apl-" + "".join(self._rng.choice("0123456789abcdef") for _ in range(16))
                web_app = {
                    "ehrRole": web_app_setup["ehrRole"],
                    "idcApplicationId": app_id,
                    "idcRegion": web_app_setup["idcRegion"],
                }
            db.execute(
                "INSERT INTO resource_domains (domain_id, name, status, created_at, kms_key_arn,"
                " web_app, request_digest) VALUES (?, ?, 'ACTIVE', ?, ?, ?, ?)",
                (
                    domain_id,
                    name,
                    self._now(),
                    kms_key_arn,
                    None if web_app is None else json.dumps(web_app),
                    digest,
                ),
            )
            self._set_tags(domain_id, tags or {})
            return self._domain(self._domain_row(domain_id))

    def get_domain(self, domain_id: str) -> Domain:
        """GetDomain: return the domain with its tags; raises ResourceNotFoundException."""
        with self._lock:
            return self._domain(self._domain_row(domain_id))

    def list_domains(
        self,
        *,
        status: str | None = None,
        max_results: int = DEFAULT_MAX_RESULTS,
        next_token: str | None = None,
    ) -> Page[Domain]:
        """ListDomains: return one page of domains, oldest first, of ``status`` if given.

        Raises ValidationException when ``next_token`` is not one this operation
        returned with the same ``status``.
        """
        scope = status or ""
        after = _page_start(next_token, "ListDomains", scope)
        query = "SELECT * FROM resource_domains WHERE seq > ?"
        params: tuple[object, ...] = (after,)
        if status is not None:
            query, params = query + " AND status = ?", (after, status)
        with self._lock:
            rows = self._db.execute(f"{query} ORDER BY seq LIMIT ?", (*params, max_results + 1))
            return self._page(rows.fetchall(), max_results, self._domain, "ListDomains", scope)

    def delete_domain(self, domain_id: str) -> Domain:
        """DeleteDomain: delete the domain, its subscriptions and all their tags.

        Returns the domain as it was, with status DELETED. Raises
        ResourceNotFoundException for an unknown (or already deleted) domain.
        """
        with self._transaction():
            domain = self._domain(self._domain_row(domain_id))
            self._delete_domain(domain_id)
        return dataclasses.replace(domain, status="DELETED")

    # -- Subscriptions ---------------------------------------------------------------

    def create_subscription(self, domain_id: str) -> Subscription:
        """CreateSubscription: return a new ACTIVE subscription of the domain.

        Raises ResourceNotFoundException (unknown domain) or
        ServiceQuotaExceededException past ``max_subscriptions_per_domain``.
        """
        with self._transaction() as db:
            self._domain_row(domain_id)
            count = db.execute(
                "SELECT COUNT(*) FROM resource_subscriptions WHERE domain_id = ?", (domain_id,)
            ).fetchone()[0]
            if count >= self.max_subscriptions_per_domain:
                raise ServiceQuotaExceededException(
                    f"Subscription quota exceeded: domain {domain_id} has {count} subscriptions"
                    f" and the emulator allows {self.max_subscriptions_per_domain}"
                )
            subscription_id = self._new_id(
                "sub-", _ALNUM, 21, "resource_subscriptions", "subscription_id"
            )
            now = self._now()
            db.execute(
                "INSERT INTO resource_subscriptions (subscription_id, domain_id, status,"
                " created_at, last_updated_at, activated_at) VALUES (?, ?, 'ACTIVE', ?, ?, ?)",
                (subscription_id, domain_id, now, now, now),
            )
            return self._subscription(self._subscription_row(domain_id, subscription_id))

    def get_subscription(self, domain_id: str, subscription_id: str) -> Subscription:
        """GetSubscription: return the subscription; raises ResourceNotFoundException."""
        with self._lock:
            return self._subscription(self._subscription_row(domain_id, subscription_id))

    def list_subscriptions(
        self,
        domain_id: str,
        *,
        max_results: int = DEFAULT_MAX_RESULTS,
        next_token: str | None = None,
    ) -> Page[Subscription]:
        """ListSubscriptions: return one page of the domain's subscriptions, oldest first.

        Raises ResourceNotFoundException for an unknown domain and ValidationException
        for a ``next_token`` this operation did not return for this domain.
        """
        after = _page_start(next_token, "ListSubscriptions", domain_id)
        with self._lock:
            self._domain_row(domain_id)
            rows = self._db.execute(
                "SELECT * FROM resource_subscriptions WHERE domain_id = ? AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (domain_id, after, max_results + 1),
            ).fetchall()
            return self._page(rows, max_results, self._subscription, "ListSubscriptions", domain_id)

    def activate_subscription(self, domain_id: str, subscription_id: str) -> Subscription:
        """ActivateSubscription: return the subscription, now ACTIVE (unchanged if it was)."""
        return self._set_status(domain_id, subscription_id, "ACTIVE", "activated_at")

    def deactivate_subscription(self, domain_id: str, subscription_id: str) -> Subscription:
        """DeactivateSubscription: return the subscription, now INACTIVE (unchanged if it was)."""
        return self._set_status(domain_id, subscription_id, "INACTIVE", "deactivated_at")

    # -- Tags ------------------------------------------------------------------------

    def tag_resource(self, resource_arn: str, tags: Mapping[str, str]) -> None:
        """TagResource: add or replace ``tags`` on a domain or subscription.

        Raises ResourceNotFoundException when the ARN names nothing in this account.
        """
        with self._transaction():
            self._set_tags(self._resource_id(resource_arn), tags)

    def untag_resource(self, resource_arn: str, tag_keys: Sequence[str]) -> None:
        """UntagResource: remove ``tag_keys`` (absent keys are ignored).

        Raises ResourceNotFoundException when the ARN names nothing in this account.
        """
        with self._transaction() as db:
            resource_id = self._resource_id(resource_arn)
            db.executemany(
                "DELETE FROM resource_tags WHERE resource_id = ? AND key = ?",
                [(resource_id, key) for key in tag_keys],
            )

    def list_tags_for_resource(self, resource_arn: str) -> dict[str, str]:
        """ListTagsForResource: return the tags of a domain or subscription.

        Raises ResourceNotFoundException when the ARN names nothing in this account.
        """
        with self._lock:
            return self._tags(self._resource_id(resource_arn))

    # -- Streams -----------------------------------------------------------------------

    def check_stream(
        self, *, domain_id: str, subscription_id: str, require_active: bool = True
    ) -> None:
        """Check the resources a stream (or a session look-up) names, for strict mode.

        Returns nothing. Raises ResourceNotFoundException naming the unknown domain, or
        the subscription unknown in that domain; with ``require_active``,
        ValidationException when the subscription is not ACTIVE.
        """
        with self._lock:
            row = self._subscription_row(domain_id, subscription_id)
        if require_active and row["status"] != "ACTIVE":
            raise ValidationException(
                f"Subscription {subscription_id} of domain {domain_id} is {row['status']}: "
                "activate it with ActivateSubscription before starting a session"
            )

    # -- Seeding -----------------------------------------------------------------------

    def load_seed(self, path: str | Path) -> list[SeedDomain]:
        """Apply the resources file at ``path`` if it is new or changed; keep it for reset.

        Returns the seeded domains as read (``[]`` for a missing file). An unchanged
        seed leaves saved state alone (deleted or deactivated resources stay so); a
        changed one replaces the resources with its ids. Raises :class:`ResourcesError`.
        """
        self._seed_path = Path(path)
        seeds = self._read_seed()
        digest = _seed_digest(seeds)
        with self._transaction():
            if self._meta("seed") != digest:
                self._apply_seed(seeds, digest)
        return seeds

    def read_seed(self) -> list[SeedDomain]:
        """The seed file as it reads now (``[]`` without one); raises :class:`ResourcesError`.

        For a caller that checks every file before it resets anything (see
        :meth:`reset`).
        """
        return self._read_seed()

    def reset(
        self,
        seeds: Sequence[SeedDomain] | None = None,
        *,
        keep: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Delete every resource and tag, then apply the seed file again (if one was loaded),
        or ``seeds`` as :meth:`read_seed` returned them.

        ``keep`` names ``(domain id, subscription id)`` pairs whose domain and
        subscription (and their tags) stay as they are, unless the seed names
        them: those of sessions with a stream still open, which a reset keeps.
        Raises :class:`ResourcesError` if the seed file has become invalid;
        nothing is deleted then.
        """
        if seeds is None:
            seeds = self._read_seed()
        kept = list(dict.fromkeys(keep))
        with self._transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS kept_resources (resource_id TEXT)")
            db.execute("DELETE FROM kept_resources")
            db.executemany(
                "INSERT INTO kept_resources VALUES (?)",
                [(resource_id,) for pair in kept for resource_id in pair],
            )
            kept_ids = "SELECT resource_id FROM kept_resources"
            db.execute(f"DELETE FROM resource_tags WHERE resource_id NOT IN ({kept_ids})")
            db.execute(
                f"DELETE FROM resource_subscriptions WHERE subscription_id NOT IN ({kept_ids})"
            )
            db.execute(f"DELETE FROM resource_domains WHERE domain_id NOT IN ({kept_ids})")
            db.execute("DELETE FROM kept_resources")
            self._apply_seed(seeds, _seed_digest(seeds))

    # -- Internals -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:  # commits on success, rolls back on any exception
            yield self._db

    def _now(self) -> float:
        return round(self._clock(), 3)  # epoch seconds with milliseconds, as AWS sends

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM resource_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def _new_id(self, prefix: str, alphabet: str, length: int, table: str, column: str) -> str:
        while True:
            candidate = prefix + "".join(self._rng.choice(alphabet) for _ in range(length))
            query = f"SELECT 1 FROM {table} WHERE {column} = ?"
            if self._db.execute(query, (candidate,)).fetchone() is None:
                return candidate

    def _tags(self, resource_id: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT key, value FROM resource_tags WHERE resource_id = ? ORDER BY key",
            (resource_id,),
        )
        return {row["key"]: row["value"] for row in rows}

    def _set_tags(self, resource_id: str, tags: Mapping[str, str]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO resource_tags VALUES (?, ?, ?)",
            [(resource_id, key, value) for key, value in tags.items()],
        )

    def _domain(self, row: sqlite3.Row) -> Domain:
        domain_id = row["domain_id"]
        web_app = None if row["web_app"] is None else json.loads(row["web_app"])
        return Domain(
            domain_id=domain_id,
            arn=self.domain_arn(domain_id),
            name=row["name"],
            status=row["status"],
            created_at=row["created_at"],
            kms_key_arn=row["kms_key_arn"],
            web_app_configuration=web_app,
            web_app_url=None
            if web_app is None
            else f"https://{domain_id}.health-agent.{self.region}.on.aws/",
            tags=self._tags(domain_id),
        )

    def _subscription(self, row: sqlite3.Row) -> Subscription:
        return Subscription(
            subscription_id=row["subscription_id"],
            domain_id=row["domain_id"],
            arn=self.subscription_arn(row["domain_id"], row["subscription_id"]),
            status=row["status"],
            created_at=row["created_at"],
            last_updated_at=row["last_updated_at"],
            activated_at=row["activated_at"],
            deactivated_at=row["deactivated_at"],
        )

    def _page[T](
        self,
        rows: list[sqlite3.Row],
        limit: int,
        build: Callable[[sqlite3.Row], T],
        operation: str,
        scope: str,
    ) -> Page[T]:
        # One row more than the page was fetched: its presence says a next page exists.
        token = None
        if len(rows) > limit:
            token = _page_token(operation, scope, rows[limit - 1]["seq"])
        return Page(items=tuple(build(row) for row in rows[:limit]), next_token=token)

    def _domain_row(self, domain_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM resource_domains WHERE domain_id = ?", (domain_id,)
        ).fetchone()
        if row is None:
            raise ResourceNotFoundException(f"Domain {domain_id} not found")
        return row

    def _subscription_row(self, domain_id: str, subscription_id: str) -> sqlite3.Row:
        self._domain_row(domain_id)
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM resource_subscriptions WHERE subscription_id = ? AND domain_id = ?",
            (subscription_id, domain_id),
        ).fetchone()
        if row is None:
            raise ResourceNotFoundException(
                f"Subscription {subscription_id} not found in domain {domain_id}"
            )
        return row

    def _resource_id(self, resource_arn: str) -> str:
        """Return the domain or subscription id ``resource_arn`` names, if it exists here."""
        match = ARN_PATTERN.fullmatch(resource_arn)
        try:
            if match is None or (match["region"], match["account"]) != (
                self.region,
                self.account_id,
            ):
                raise ResourceNotFoundException(resource_arn)
            if match["sub"] is None:
                return str(self._domain_row(match["domain"])["domain_id"])
            return str(self._subscription_row(match["domain"], match["sub"])["subscription_id"])
        except ResourceNotFoundException:
            raise ResourceNotFoundException(f"Resource {resource_arn} not found") from None

    def _set_status(
        self, domain_id: str, subscription_id: str, status: str, stamp: str
    ) -> Subscription:
        with self._transaction() as db:
            row = self._subscription_row(domain_id, subscription_id)
            if row["status"] != status:
                now = self._now()
                db.execute(
                    f"UPDATE resource_subscriptions SET status = ?, last_updated_at = ?,"
                    f" {stamp} = ? WHERE subscription_id = ?",
                    (status, now, now, subscription_id),
                )
                row = self._subscription_row(domain_id, subscription_id)
            return self._subscription(row)

    def _delete_domain(self, domain_id: str) -> None:
        self._db.execute(
            "DELETE FROM resource_tags WHERE resource_id = ? OR resource_id IN"
            " (SELECT subscription_id FROM resource_subscriptions WHERE domain_id = ?)",
            (domain_id, domain_id),
        )
        self._db.execute("DELETE FROM resource_subscriptions WHERE domain_id = ?", (domain_id,))
        self._db.execute("DELETE FROM resource_domains WHERE domain_id = ?", (domain_id,))

    def _read_seed(self) -> list[SeedDomain]:
        if self._seed_path is None or not self._seed_path.exists():
            return []
        return load_resources_file(self._seed_path)

    def _apply_seed(self, seeds: Sequence[SeedDomain], digest: str) -> None:
        now = self._now()
        for seed in seeds:
            # A seed replaces whatever has its ids, wherever it lives now.
            self._delete_domain(seed.domain_id)
            for sub in seed.subscriptions:
                self._db.execute(
                    "DELETE FROM resource_tags WHERE resource_id = ?", (sub.subscription_id,)
                )
                self._db.execute(
                    "DELETE FROM resource_subscriptions WHERE subscription_id = ?",
                    (sub.subscription_id,),
                )
            self._db.execute(
                "INSERT INTO resource_domains (domain_id, name, status, created_at, kms_key_arn)"
                " VALUES (?, ?, 'ACTIVE', ?, ?)",
                (seed.domain_id, seed.name, now, seed.kms_key_arn),
            )
            self._set_tags(seed.domain_id, seed.tags)
            for sub in seed.subscriptions:
                active = sub.status == "ACTIVE"
                self._db.execute(
                    "INSERT INTO resource_subscriptions (subscription_id, domain_id, status,"
                    " created_at, last_updated_at, activated_at, deactivated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sub.subscription_id,
                        seed.domain_id,
                        sub.status,
                        now,
                        now,
                        now if active else None,
                        None if active else now,
                    ),
                )
                self._set_tags(sub.subscription_id, sub.tags)
        self._db.execute("INSERT OR REPLACE INTO resource_meta VALUES ('seed', ?)", (digest,))
