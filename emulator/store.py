"""Sessions on disk: two SQLite tables in ``<state-dir>/medscribe.sqlite3``.

The file may hold other components' tables (the resource registry's); this
module touches only :data:`TABLE` and :data:`SCRIPTS_TABLE`. Rows are written on
state transitions and at stream end, never per audio frame: a row is the
session's identity, order and status in columns, and the rest as one JSON
document. A scripted scenario's spec, which can be megabytes, is stored once in
:data:`SCRIPTS_TABLE` by the SHA-256 of its JSON text, and a session's document
names it as ``{"kind": "script", "name": ..., "ref": digest}`` (:data:`SCRIPT_REF`):
written into every row, it had been read back as a copy per session, so that a
restart multiplied the memory (100 sessions of a 2.8 MB script: 225 MiB before
it, 1,351 after, and 9 s to start). Rows of earlier releases, which hold their
spec, are rewritten so at the first :meth:`SessionStore.load`. (A release before
0.3.0 reads the new rows as a script it cannot rebuild: it serves them, but fails
a resume and the pending artifacts, rather than replay another script.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsontext import compact_json
from .logs import get_logger

__all__ = [
    "SessionStore",
    "StoredSession",
    "DATABASE_NAME",
    "TABLE",
    "SCRIPTS_TABLE",
    "SCRIPT_REF",
    "script_digest",
]

log = get_logger("medscribe.store")

#: The state database's file name inside the state directory.
DATABASE_NAME = "medscribe.sqlite3"

#: This module's table.
TABLE = "scribe_sessions"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    domain_id       TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    status          TEXT NOT NULL,
    created_at      REAL NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (domain_id, subscription_id, session_id)
)
"""

#: The scenario specs sessions share, by the SHA-256 of their JSON text.
SCRIPTS_TABLE = "scribe_scripts"

_SCRIPTS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SCRIPTS_TABLE} (
    digest TEXT PRIMARY KEY,
    text   TEXT NOT NULL
)
"""

#: Characters the rewritten rows of an earlier release must free for the
#: database file to be compacted (VACUUM) at once.
VACUUM_AFTER = 16 * 1024 * 1024

#: The one member of a stored session's ``scenario`` that names its spec in
#: :data:`SCRIPTS_TABLE`.
SCRIPT_REF = "ref"

_DELETE = f"DELETE FROM {TABLE} WHERE domain_id = ? AND subscription_id = ? AND session_id = ?"

#: How long a write waits for another connection's lock (another component,
#: or a second emulator on the same state dir) before failing.
BUSY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredSession:
    """One row: ids, creation order, status, creation time and the JSON document."""

    domain_id: str
    subscription_id: str
    session_id: str
    seq: int
    status: str
    created_at: float
    #: The JSON document, or its text when the caller encoded it already.
    data: dict[str, Any] | str
    #: ``(digest, text)`` of the scenario spec the document refers to by
    #: ``{"ref": digest}``: saved with the row when not stored yet; as loaded, the
    #: document's ``scenario`` is that spec, one object for all its sessions.
    script: tuple[str, str] | None = None


class SessionStore:
    """The session table of the state database at ``path`` (created if missing).

    Raises :class:`sqlite3.Error` when the file is not a usable database.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        #: The keys (domain, subscription, session) of the rows the last
        #: :meth:`load` could not read.
        self.unreadable: list[tuple[str, str, str]] = []
        # One connection, used from the event loop's thread; autocommit, so each
        # statement is its own short transaction.
        self._db = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS
        )
        if str(path) != ":memory:":
            # WAL: readers (a second connection, a user's sqlite3 shell) never block
            # writes; NORMAL sync is durable across a crash of the emulator itself.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_SCRIPTS_SCHEMA)
        # The digests in SCRIPTS_TABLE: a row's script is inserted with the first
        # row that names it, not with each save.
        self._scripts_saved: set[str] = set()
        # Scripts rows this version could not read may name: never deleted
        # while it runs (see save_many's unnamed_scripts).
        self._scripts_kept: set[str] = set()

    def load(self) -> list[StoredSession]:
        """Return every stored session, oldest first, each scenario spec read once
        for all the sessions that name it.

        A row with unreadable JSON, or naming a spec missing or damaged (its text
        not of its digest), is skipped, logged, and its key put in
        :attr:`unreadable` (the row stays; such a spec is written again, whole,
        by the next row that names it, so the row is read at the next load).
        Rows holding their spec (earlier releases') are rewritten to name it.
        Specs no row names are deleted, unless a row's JSON was unreadable (it
        may name one).
        """
        rows = self._db.execute(
            f"SELECT domain_id, subscription_id, session_id, seq, status, created_at, data "
            f"FROM {TABLE} ORDER BY seq"
        ).fetchall()
        texts = dict(self._db.execute(f"SELECT digest, text FROM {SCRIPTS_TABLE}").fetchall())
        self.unreadable = []
        decoding = _Decoding(texts)
        sessions = list(decoding.decode(rows, self.unreadable))
        with self._db:
            self._db.execute("BEGIN")
            if decoding.migrated:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {SCRIPTS_TABLE} (digest, text) VALUES (?, ?)",
                    [(digest, decoding.good[digest]) for digest in decoding.new],
                )
                self._db.executemany(
                    f"UPDATE {TABLE} SET data = ? WHERE domain_id = ? AND subscription_id = ? "
                    "AND session_id = ?",
                    decoding.migrated,
                )
            if not decoding.undecodable:
                unnamed = set(texts) - decoding.named
                self._db.executemany(
                    f"DELETE FROM {SCRIPTS_TABLE} WHERE digest = ?", [(d,) for d in unnamed]
                )
        if decoding.freed > VACUUM_AFTER:
            # The file keeps the pages its rows no longer use: given back at once.
            self._db.execute("VACUUM")
        if decoding.migrated:
            log.info(
                "%d session row(s) of an earlier release rewritten to name their scenario's "
                "script, stored once (%.1f MB less)",
                len(decoding.migrated),
                decoding.freed / 1e6,
            )
        # A damaged spec is not counted as stored: the next row naming it replaces it.
        self._scripts_saved = set(decoding.good)
        self._scripts_kept = decoding.named_unread | (set(texts) if decoding.undecodable else set())
        return sessions

    def keep_script(self, digest: str) -> None:
        """Never delete the script ``digest`` while this store is open: a row kept
        for a release that reads it names it (see ``save_many``'s unnamed_scripts)."""
        self._scripts_kept.add(digest)

    def save_many(
        self,
        rows: Iterable[StoredSession],
        *,
        deleted: Iterable[tuple[str, str, str]] = (),
        unnamed_scripts: Iterable[str] = (),
    ) -> None:
        """Delete the rows of ``deleted`` and the stored scripts of
        ``unnamed_scripts`` (no session kept names them: the caller knows), then
        insert or replace ``rows``, with the scripts they name not stored yet, in
        one transaction (a key in both ends up with its row from ``rows``)."""
        keys = list(deleted)
        unnamed = [(digest,) for digest in unnamed_scripts if digest not in self._scripts_kept]
        values = [
            (
                row.domain_id,
                row.subscription_id,
                row.session_id,
                row.seq,
                row.status,
                row.created_at,
                row.data
                if isinstance(row.data, str)
                else json.dumps(row.data, separators=(",", ":")),
            )
            for row in rows
        ]
        if not values and not keys and not unnamed:
            return
        going = {digest for (digest,) in unnamed}
        # Deleted first: a script both named and going (no caller does that) stays.
        scripts = {
            row.script[0]: row.script[1]
            for row in rows
            if row.script is not None
            and (row.script[0] not in self._scripts_saved or row.script[0] in going)
        }
        with self._db:  # one transaction: one WAL write for the lot
            self._db.execute("BEGIN")
            if keys:
                self._db.executemany(_DELETE, keys)
            if unnamed:
                self._db.executemany(f"DELETE FROM {SCRIPTS_TABLE} WHERE digest = ?", unnamed)
            if scripts:
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {SCRIPTS_TABLE} (digest, text) VALUES (?, ?)",
                    scripts.items(),
                )
            self._db.executemany(
                f"INSERT OR REPLACE INTO {TABLE} "
                "(domain_id, subscription_id, session_id, seq, status, created_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        self._scripts_saved -= going
        self._scripts_saved.update(scripts)

    def max_seq(self) -> int:
        """Return the largest ``seq`` stored, or 0."""
        (value,) = self._db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {TABLE}").fetchone()
        return int(value)

    def close(self) -> None:
        """Close the connection; the store is unusable afterwards."""
        self._db.close()


def script_digest(text: str) -> str:
    """The name a spec's JSON ``text`` is stored under: its SHA-256, in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


class _Decoding:
    """One :meth:`SessionStore.load`'s reading of the rows, given the stored
    specs' ``texts`` by digest: each spec read once, and checked against its
    digest; what is to be written back is noted."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = texts
        #: The texts of the specs found whole (read, or from rows holding theirs).
        self.good: dict[str, str] = {}
        #: Specs found in rows holding theirs, not yet stored.
        self.new: list[str] = []
        #: ``(data, domain, subscription, session)`` of rows rewritten to name their spec.
        self.migrated: list[tuple[str, str, str, str]] = []
        #: Every digest a row names (readable or not).
        self.named: set[str] = set()
        #: The digests named by rows unreadable for their script.
        self.named_unread: set[str] = set()
        #: Whether a row's JSON could not be read (it may name a spec).
        self.undecodable = False
        #: Characters the rows rewritten no longer hold.
        self.freed = 0
        self._specs: dict[str, dict[str, Any] | None] = {}

    def decode(
        self, rows: Iterable[tuple[Any, ...]], unreadable: list[tuple[str, str, str]]
    ) -> Iterator[StoredSession]:
        for domain_id, subscription_id, session_id, seq, status, created_at, data in rows:
            script = None
            try:
                document = json.loads(data)
            except (TypeError, json.JSONDecodeError) as error:
                problem = str(error)
            else:
                problem = "" if isinstance(document, dict) else "not a JSON object"
            if problem:
                self.undecodable = True
            else:
                named = document.get("scenario")
                if isinstance(named, dict) and named.get("kind") == "script":
                    if SCRIPT_REF in named and "script" not in named:
                        script, problem = self._named(str(named[SCRIPT_REF]))
                    elif "script" in named:  # an earlier release's row: rewritten
                        script = self._held(named)
                        rewritten = _with_ref(document, script[0])
                        self.freed += len(data) - len(rewritten)
                        self.migrated.append((rewritten, domain_id, subscription_id, session_id))
                    if script is not None:
                        document["scenario"] = self._specs[script[0]]
            if problem:
                log.warning(
                    "session %s: stored record unreadable (%s): it is not served, and its row "
                    "and journal are kept (a new session with its ids replaces both)",
                    session_id,
                    problem,
                )
                unreadable.append((domain_id, subscription_id, session_id))
                continue
            yield StoredSession(
                domain_id=domain_id,
                subscription_id=subscription_id,
                session_id=session_id,
                seq=seq,
                status=status,
                created_at=created_at,
                data=document,
                script=script,
            )

    def _named(self, digest: str) -> tuple[tuple[str, str] | None, str]:
        """``((digest, text), "")`` for a spec found whole, else ``(None, why not)``."""
        self.named.add(digest)
        if digest not in self._specs:
            self._specs[digest] = None
            text = self.texts.get(digest)
            if text is not None and script_digest(text) == digest:
                with contextlib.suppress(json.JSONDecodeError):
                    spec = json.loads(text)
                    if isinstance(spec, dict):
                        self._specs[digest], self.good[digest] = spec, text
        if self._specs[digest] is not None:
            return (digest, self.good[digest]), ""
        self.named_unread.add(digest)
        state = "missing from" if digest not in self.texts else "damaged in"
        return None, (
            f"its scenario's script {digest} is {state} {SCRIPTS_TABLE}; the next session "
            "of that scenario stores it again, and this one is read at the next start"
        )

    def _held(self, spec: dict[str, Any]) -> tuple[str, str]:
        """``(digest, text)`` of a spec a row holds (one object per digest kept)."""
        text = compact_json(spec)
        digest = script_digest(text)
        self.named.add(digest)
        if self._specs.get(digest) is None:
            self._specs[digest], self.good[digest] = spec, text
            if self.texts.get(digest) != text:
                self.new.append(digest)
        return digest, self.good[digest]


def _with_ref(document: dict[str, Any], digest: str) -> str:
    """``document``'s JSON text, its ``scenario`` named by ``digest``."""
    spec = document["scenario"]
    named = {"kind": "script", "name": spec.get("name"), SCRIPT_REF: digest}
    return compact_json({**document, "scenario": named})
