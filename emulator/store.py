"""Sessions on disk: one SQLite table in ``<state-dir>/medscribe.sqlite3``.

The file may hold other components' tables (the resource registry's); this
module touches only :data:`TABLE`. Rows are written on state transitions and at
stream end, never per audio frame: a row is the session's identity, order and
status in columns, and the rest as one JSON document.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .logs import get_logger

__all__ = ["SessionStore", "StoredSession", "DATABASE_NAME", "TABLE"]

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

    def load(self) -> list[StoredSession]:
        """Return every stored session, oldest first. A row with unreadable JSON is
        skipped, logged, and its key put in :attr:`unreadable` (the row stays)."""
        rows = self._db.execute(
            f"SELECT domain_id, subscription_id, session_id, seq, status, created_at, data "
            f"FROM {TABLE} ORDER BY seq"
        ).fetchall()
        self.unreadable = []
        return list(_decode(rows, self.unreadable))

    def save_many(
        self, rows: Iterable[StoredSession], *, deleted: Iterable[tuple[str, str, str]] = ()
    ) -> None:
        """Delete the rows of ``deleted``, then insert or replace ``rows``, in one
        transaction (a key in both ends up with its row from ``rows``)."""
        keys = list(deleted)
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
        if not values and not keys:
            return
        with self._db:  # one transaction: one WAL write for the lot
            self._db.execute("BEGIN")
            if keys:
                self._db.executemany(_DELETE, keys)
            self._db.executemany(
                f"INSERT OR REPLACE INTO {TABLE} "
                "(domain_id, subscription_id, session_id, seq, status, created_at, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def max_seq(self) -> int:
        """Return the largest ``seq`` stored, or 0."""
        (value,) = self._db.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {TABLE}").fetchone()
        return int(value)

    def close(self) -> None:
        """Close the connection; the store is unusable afterwards."""
        self._db.close()


def _decode(
    rows: Iterable[tuple[Any, ...]], unreadable: list[tuple[str, str, str]]
) -> Iterator[StoredSession]:
    for domain_id, subscription_id, session_id, seq, status, created_at, data in rows:
        try:
            document = json.loads(data)
        except (TypeError, json.JSONDecodeError) as error:
            problem = str(error)
        else:
            problem = "" if isinstance(document, dict) else "not a JSON object"
        if problem:
            log.warning(
                "session %s: stored record unreadable (%s): it is not served, and its row "
                "and journal are kept (a new session with its ids replaces both)",
                session_id,
                problem,
            )
            unreadable.append((domain_id, subscription_id, session_id))
        else:
            yield StoredSession(
                domain_id=domain_id,
                subscription_id=subscription_id,
                session_id=session_id,
                seq=seq,
                status=status,
                created_at=created_at,
                data=document,
            )
