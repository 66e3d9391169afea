"""The sessions kept in the state directory: their rows, loaded and saved, and
their journals' folders, swept.

:class:`SessionSaver` owns the writing of :class:`~emulator.record.SessionRecord`
rows to the state database (:mod:`emulator.store`): a changed record's row waits
:data:`SAVE_DELAY` to share a transaction with the others changed meanwhile, and
is written by the journal's writer thread; a failed write (a full disk) is
retried every :data:`SAVE_RETRY_DELAY` seconds. At a start it loads the rows,
rolls a session back over the streams a crash lost, and removes the journal
folders no session has (see :meth:`SessionSaver.sweep`). The backend
(:class:`~emulator.backend.Backend`) holds one and shares its sessions with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from .journal import STREAM_LOST, Journal, iso_time, remove_tree, run_in_writer
from .lifecycle import StreamStatus
from .logs import get_logger
from .record import ScenarioText, SessionKey, SessionRecord
from .store import SessionStore, StoredSession
from .validation import id_constraints_broken

__all__ = ["SessionSaver", "SAVE_DELAY", "SAVE_RETRY_DELAY", "FORGOTTEN"]

log = get_logger("medscribe.sessions")

#: Seconds a changed session's row waits to be written with the others changed meanwhile.
SAVE_DELAY = 0.05

#: Seconds before rows whose write failed (a full disk) are written again.
SAVE_RETRY_DELAY = 2.0

#: The ``reason`` of a ``streamLost`` journal entry (see SessionSaver._roll_back).
_LOST_REASON = (
    "the emulator stopped without saving this stream's end (killed, or its machine went "
    "down): the session was restored as it was before this stream, whose audio was dropped"
)

#: What a forgotten session's journal folder has after its name (then its seq).
FORGOTTEN = ".forgotten-"


class SessionSaver:
    """The rows of the sessions in ``sessions`` (the backend's own dict, by key,
    oldest first), in ``store``; their journals are under ``journal_root``.

    :attr:`closing` and :attr:`closed` are set by the backend's ``close``: from
    the first, rows that fail to be written are said to be lost; from the
    second, nothing is written.
    """

    def __init__(
        self,
        *,
        store: SessionStore,
        sessions: dict[SessionKey, SessionRecord],
        journal_root: str,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self._journal_root = journal_root
        #: Sessions whose stored row this version cannot read (another release's):
        #: their journals are kept for a release that can (see sweep).
        self.unreadable: set[SessionKey] = set()
        # Records whose rows wait for the next flush (see save).
        self._dirty: dict[SessionKey, SessionRecord] = {}
        # Rows of dropped sessions, deleted in the same transaction.
        self._deleted: dict[SessionKey, None] = {}
        # How many sessions kept name each stored script (see name_script), and
        # the scripts the last of them, dropped, named: deleted with its row
        # unless named again meanwhile (else --retention bounded the rows, not them).
        self._naming: dict[str, int] = {}
        self._unnamed: set[str] = set()
        self._save_handle: asyncio.TimerHandle | None = None
        self._saves_failing = False  # the last write of rows failed (see _write_rows)
        self.closing = False  # the backend's close() has begun
        self.closed = False

    def save(self, record: SessionRecord) -> None:
        """Write ``record``'s row within :data:`SAVE_DELAY` (at once outside a loop).

        The rows changed meanwhile (a stream's start and end, every other
        session's) share one transaction: a commit per change was the costliest
        part of starting and ending a stream.
        """
        if self.closed or self.sessions.get(record.key) is not record:
            return
        self._dirty[record.key] = record
        self._schedule_saves()

    def _schedule_saves(self) -> None:
        if self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._save_handle = loop.call_later(SAVE_DELAY, self._save_in_background)

    def _save_in_background(self) -> None:
        """The timer's write: the rows are encoded here, in the loop, from the
        records as they are now, and written by the journal's writer thread.

        SQLite releases the GIL while it works, and with the writer busy the
        loop then waited to take it back: when 1,000 sessions ended within a
        second, a fifth of the loop's time went to these writes.
        """
        self._save_handle = None
        rows, deleted, unnamed = self._take_changes()
        if rows or deleted:
            size = sum(len(row.data) for row in rows if isinstance(row.data, str))
            loop = asyncio.get_running_loop()
            run_in_writer(lambda: self._write_rows(rows, deleted, unnamed, loop), size)

    def flush(self) -> None:
        """Write every row changed (or delete every row dropped) since the last
        write, in one transaction, before returning: after whatever the
        writer thread still has to write, in this thread.
        """
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        rows, deleted, unnamed = self._take_changes()
        Journal.wait_written(loop=True)
        if rows or deleted:
            try:
                self.store.save_many(rows, deleted=deleted, unnamed_scripts=unnamed)
            except sqlite3.Error as error:
                log.warning(
                    "cannot save %d session rows in %s: %s; their last changes are lost",
                    len(rows) + len(deleted),
                    self.store.path,
                    error,
                )

    def _take_changes(self) -> tuple[list[StoredSession], list[SessionKey], list[str]]:
        """The rows changed, the keys dropped and the stored scripts no session
        names any more since the last write, as of now."""
        dirty, self._dirty = self._dirty, {}
        deleted, self._deleted = self._deleted, {}
        candidates, self._unnamed = self._unnamed, set()
        if self.closed:
            return [], [], []
        unnamed = [digest for digest in candidates if digest not in self._naming]
        rows = [
            StoredSession(
                domain_id=key.domain_id,
                subscription_id=key.subscription_id,
                session_id=key.session_id,
                seq=record.seq,
                status=record.status.value,
                created_at=record.created_at,
                data=record.to_data_json(),
                script=record.stored_script(),
            )
            for key, record in dirty.items()
            if self.sessions.get(key) is record
        ]
        return rows, list(deleted), unnamed

    def _write_rows(
        self,
        rows: list[StoredSession],
        deleted: list[SessionKey],
        unnamed: list[str],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # In the writer thread; close() waits for it before closing the store.
        try:
            self.store.save_many(rows, deleted=deleted, unnamed_scripts=unnamed)
        except sqlite3.Error as error:
            if self.closing:  # no retry will come: said, even within a failing streak
                log.warning(
                    "cannot save %d session rows in %s at shutdown: %s; their last changes "
                    "are lost",
                    len(rows) + len(deleted),
                    self.store.path,
                    error,
                )
                return
            if not self._saves_failing:
                log.warning(
                    "cannot save %d session rows in %s: %s; retried every %g s",
                    len(rows) + len(deleted),
                    self.store.path,
                    error,
                    SAVE_RETRY_DELAY,
                )
            self._saves_failing = True
            keys = [SessionKey(r.domain_id, r.subscription_id, r.session_id) for r in rows]
            with contextlib.suppress(RuntimeError):  # the loop has closed: shutdown
                loop.call_soon_threadsafe(self._retry_saves, keys, deleted, unnamed)
            return
        if self._saves_failing:
            self._saves_failing = False
            log.warning("session rows saved again in %s", self.store.path)

    def _retry_saves(
        self, keys: list[SessionKey], deleted: list[SessionKey], unnamed: list[str]
    ) -> None:
        """Write again the rows a failed write held (a full disk), as the records
        are now, unless written or dropped since: otherwise a session completed
        while the disk was full came back after a restart as it was before, or
        not at all, though the disk had room again by then."""
        if self.closed:  # closed before this ran: no write will come
            log.warning(
                "cannot save %d session rows in %s at shutdown; their last changes are lost",
                len(keys) + len(deleted),
                self.store.path,
            )
            return
        for key in keys:
            record = self.sessions.get(key)
            if record is not None:
                self._dirty.setdefault(key, record)
        for key in deleted:
            if key not in self.sessions:
                self._deleted[key] = None
        self._unnamed.update(unnamed)
        if self._save_handle is None:
            self._save_handle = asyncio.get_running_loop().call_later(
                SAVE_RETRY_DELAY, self._save_in_background
            )

    def load(self, *, journal: Callable[[SessionRecord], Journal]) -> None:
        """Put the stored sessions in :attr:`sessions`, each with its ``journal``
        (its record given), rolled back over the streams a crash lost; note the rows
        this version cannot read in :attr:`unreadable`. Raises
        :class:`sqlite3.DatabaseError` when the database cannot be read."""
        rows = self.store.load()
        self.unreadable.update(SessionKey(*key) for key in self.store.unreadable)
        for row in rows:
            key = SessionKey(row.domain_id, row.subscription_id, row.session_id)
            # store.load decodes each row's document, and leaves out one that is not
            # a JSON object (logged there): only write_rows' callers pass text.
            data = cast(dict[str, Any], row.data)
            try:
                record = SessionRecord.from_data(
                    key, seq=row.seq, status=row.status, created_at=row.created_at, data=data
                )
            except (KeyError, TypeError, ValueError) as error:
                log.warning(
                    "session %s: its stored row cannot be read by this version (%s): it is "
                    "not served, and its row and journal are kept for a release that reads "
                    "them (a new session with its ids replaces both)",
                    key[2],
                    error,
                )
                self.unreadable.add(key)
                if row.script is not None:  # kept for that release, with its script
                    self.store.keep_script(row.script[0])
                continue
            if row.script is not None:  # its spec, shared by the sessions naming it
                digest, text = row.script
                record.scenario_text = ScenarioText(data["scenario"], text, digest)
            kept = record.journal = journal(record)
            self.sessions[key] = record
            self.name_script(record)
            if record.status is StreamStatus.IN_PROGRESS:
                # The emulator stopped while a stream ran, without ending it (a
                # SIGKILL, a power loss: a SIGTERM ends streams and saves their
                # rows). The connection is gone, and the row is as that stream
                # started: the session is PAUSED there, and the stream lost.
                record.status = StreamStatus.PAUSED
                record.roll_back()  # its counts, errors and configuration as it started
                self._roll_back(record, first_lost=max(record.streams, 1), live=True)
                self.save(record)
            elif record.status is StreamStatus.PAUSED and kept.has_lost_traces(record.streams + 1):
                # A stream started after this row was written, and the crash came
                # before its own row was (a fast client, within SAVE_DELAY); or the
                # crash cut the journal's last line.
                if self._roll_back(record, first_lost=record.streams + 1, live=False):
                    self.save(record)
        # Trimmed by Backend.start(), once the post-stream actions the last run left are
        # scheduled: trimmed here, nothing protected them, and a restart dropped
        # sessions with their artifacts still to write (and their journals).

    def _roll_back(self, record: SessionRecord, *, first_lost: int, live: bool) -> bool:
        """Make what ``record``'s journal serves match its row, restored as it was
        before its stream ``first_lost``: that stream (under way when the emulator
        stopped, with ``live``) and any the journal shows after it were lost.

        Their audio is deleted (``/audio.wav`` holds what ``audioSeconds`` says),
        ``audioBytes`` counts the audio kept, and each gets a ``streamLost`` entry,
        after which the next stream's clock starts again from the row's; the
        post-stream artifacts leave their transcript out. ``streamEndTime``
        becomes when the session was last heard of: its journal's last entry (the
        lost stream's last batch; or, when none of it reached the disk, what came
        before it), never before the row's own end or creation, and never the
        restart's time. Stream numbers go on after the lost ones. Returns whether
        a stream was lost (the record changed).
        """
        journal = record.journal
        assert journal is not None
        try:
            found = journal.roll_back(first_lost)
        except OSError as error:
            log.warning(
                "session %s: cannot roll back its journal in %s over the stream(s) the "
                "emulator lost when it stopped: %s",
                record.key.session_id,
                journal.directory,
                error,
            )
            found = None
        lost = set(found.streams if found is not None else ())
        if live:
            lost.add(first_lost)
        if not lost:
            return False  # a cut last line, removed: nothing else to undo
        ended = max(record.created_at, record.ended_at or record.created_at)
        heard = iso_time(ended)
        if found is not None:
            if found.last_heard is not None and found.last_heard[0] > ended:
                ended, heard = found.last_heard
            # The row's count may hold the lost stream's first audio (its live
            # counts are saved with its start's row); the journal's holds none.
            record.stats.audio_bytes = min(record.stats.audio_bytes, found.kept_audio_bytes)
        record.ended_at = ended
        marked = found.marked if found is not None else frozenset()
        for number in sorted(lost - marked):
            journal.record(
                {
                    "direction": "stream",
                    "type": STREAM_LOST,
                    "stream": number,
                    "reason": _LOST_REASON,
                    "lastHeard": heard,
                    "droppedAudioBytes": 0 if found is None else found.dropped.get(number, 0),
                    "audioClock": record.progress.audio_seconds,
                }
            )
        journal.flush()  # written before the row (the writer's order)
        record.streams = max(record.streams, *lost)
        # Counted from the journal's marks when it could be read: a restart cut off
        # after marking a stream and before saving the row left the row's count short.
        ever = found.ever_marked if found is not None else frozenset()
        record.streams_lost = max(record.streams_lost + len(lost - marked), len(ever | lost))
        log.info(
            "session %s: stream %s lost when the emulator stopped (last heard of at %s); "
            "the session is PAUSED at %.2f s of audio, as before it",
            record.key.session_id,
            ", ".join(map(str, sorted(lost))),
            heard,
            record.progress.audio_seconds,
        )
        return True

    def name_script(self, record: SessionRecord) -> None:
        """Count ``record``, kept, as naming its stored script (if it has one)."""
        digest = _script_digest(record)
        if digest is not None:
            self._naming[digest] = self._naming.get(digest, 0) + 1

    def drop(self, records: list[SessionRecord]) -> None:
        """Forget the rows of the sessions of ``records`` (dropped): deleted with the
        next write, and with them the scripts they named that no session kept names."""
        keys = [record.key for record in records]
        for record in records:
            self._dirty.pop(record.key, None)
            digest = _script_digest(record)
            if digest is not None and digest in self._naming:
                self._naming[digest] -= 1
                if not self._naming[digest]:
                    del self._naming[digest]
                    self._unnamed.add(digest)
        if keys and not self.closed:
            # With the next rows written: a commit per dropped session showed
            # when every new session drops an old one (bulk ingest).
            for key in keys:
                self._deleted[key] = None
            self._schedule_saves()

    def sweep(self) -> None:
        """Remove the journals that a reset moved aside and a shutdown kept from being
        removed (their uploads were cut off, and said to be lost), and those of
        sessions whose row was never saved (a crash or a full disk: the session is
        lost). A new session with those ids would have added to the latter.

        Only folders the emulator made are removed (see :func:`_journal_folders`):
        the sweep deleted every folder three levels down, through symlinks, so a
        ``--state-dir`` holding a user's ``sessions/`` folder, or a link planted
        in it, lost the user's files. What else is there is left, and named."""
        found, foreign = _journal_folders(self._journal_root)
        left = [folder for folder in found if FORGOTTEN in folder[2]]
        for folder in left:
            remove_tree(Path(self._journal_root, *folder))
        if left:
            log.info("removed %d journal(s) of sessions a reset forgot", len(left))
        orphans = [
            folder
            for folder in found
            if FORGOTTEN not in folder[2]
            and folder not in self.sessions
            and folder not in self.unreadable
        ]
        for folder in orphans:
            remove_tree(Path(self._journal_root, *folder))
        if orphans:
            log.warning(
                "removed %d journal(s) of sessions with no row (never saved: the emulator "
                "stopped or its disk was full first): %s",
                len(orphans),
                ", ".join(session for _, _, session in orphans[:5])
                + (", ..." if len(orphans) > 5 else ""),
            )
        if foreign:
            log.warning(
                "left %d %s under %s that the emulator did not write (it removes only "
                "folders <domain id>/<subscription id>/<session id>, none of them a "
                "symlink): %s",
                len(foreign),
                "entry" if len(foreign) == 1 else "entries",
                self._journal_root,
                ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else ""),
            )


def _journal_folders(root: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The journal folders under ``root`` as ``(domain, subscription, session)``
    names, and the entries there the emulator did not write, as paths under
    ``root``, sorted.

    A journal folder is ``<domain id>/<subscription id>/<session id>`` (or a
    session id with :data:`FORGOTTEN` and a number, a reset's), each a valid id
    of the API (which checks every request's before its journal is made) and a
    real directory, not a symlink (lstat: the emulator makes none, and a link
    took the sweep outside the state directory). Anything else is not looked
    into and is named once, at the level it was found.
    """
    found: list[tuple[str, str, str]] = []
    foreign: list[str] = []
    for domain in _folder_entries(root):
        if not _made_folder(domain, "domainId"):
            foreign.append(domain.name)
            continue
        for subscription in _folder_entries(domain.path):
            if not _made_folder(subscription, "subscriptionId"):
                foreign.append(f"{domain.name}/{subscription.name}")
                continue
            for session in _folder_entries(subscription.path):
                session_id, aside, seq = session.name.partition(FORGOTTEN)
                if _made_folder(session, "sessionId", session_id) and (
                    not aside or (seq.isascii() and seq.isdigit())
                ):
                    found.append((domain.name, subscription.name, session.name))
                else:
                    foreign.append(f"{domain.name}/{subscription.name}/{session.name}")
    return found, foreign


def _folder_entries(path: str) -> list[os.DirEntry[str]]:
    """The entries of the directory ``path`` by name, but hidden ones (a name
    starting with a dot: Finder's ``.DS_Store``, NFS's ``.nfs...``, named as not
    the emulator's at every start otherwise; no id starts so); none when it
    cannot be listed (no journal written yet, or ``sessions`` is not a directory)."""
    try:
        with os.scandir(path) as entries:
            return sorted(
                (entry for entry in entries if not entry.name.startswith(".")),
                key=lambda entry: entry.name,
            )
    except OSError:
        return []


def _made_folder(entry: os.DirEntry[str], member: str, name: str | None = None) -> bool:
    """Whether ``entry`` is a directory, not a symlink to one, named by a valid
    ``member`` id (``name``, or the entry's name)."""
    try:
        if not entry.is_dir(follow_symlinks=False):
            return False
    except OSError:
        return False
    return not id_constraints_broken(member, entry.name if name is None else name)


def _script_digest(record: SessionRecord) -> str | None:
    """Return the digest of the stored script ``record`` names, or None."""
    return record.scenario_text.digest if record.scenario_text is not None else None
