"""The journal of one session: every event in and out, and the audio as received.

What a user opens when their CI fails. Files, under the session's directory::

    events.jsonl                  one JSON object per event, in arrival order
    audio-<n>-<k>.pcm|.flac       part k of the n-th stream's audio: raw bytes
                                  (``binaryAudioEvent``)
    audio-<n>-<k>.pcm|.flac.b64   part k of the n-th stream's audio: one line
                                  per ``audioEvent``, its ``audioChunk`` base64
                                  exactly as received

Audio from JSON events is kept as the base64 the client sent, validated but
not decoded: decoding costs more than everything else the emulator does with
an audio event, and only a reader of the audio (``/audio.wav``) needs the
bytes, so :meth:`AudioPart.read` decodes on the way out. A stream's part
changes only when its events switch between the two kinds. (``audio-<n>.pcm``
without a part number, raw, is what earlier versions wrote; it still reads.)

Each entry has ``time`` (arrival, ISO 8601 UTC), ``direction`` (``in`` for the client's
events, ``out`` for the emulator's, ``unsent`` for transcript results made
but never sent in a session that is over (completed or failed): held by a chaos
pause when its stream closed, or cut off by ``--idle-timeout`` from a client
taking no output; ``stream`` for a stream's start, refusal,
input end (``inputClosed``), ``disconnect`` and end), ``type`` and
``audioClock``: the session's audio seconds when the event arrived (before an
input event is applied) or was sent. Input entries have ``size`` (the event's
payload bytes); configuration and session-control events keep their payload.
Output entries carry the event (``transcriptSegment``, or an exception's
``message``).

A ``streamLost`` entry (direction ``stream``) is appended at a start of the
emulator for a stream that its last run never saw end (it was killed): the
session was restored as it was before that stream (see
:meth:`Journal.roll_back`), so the entries since that stream's
``streamStarted`` belong to a stream the session no longer holds, and the next
stream's clock starts again from the entry's ``audioClock``. The lost stream's
audio files are deleted.

Appends are buffered in memory and written in batches (open, append, close)
by one writer thread, off the event loop: a live session holds no file
descriptor and at most about :data:`FLUSH_BYTES` of journal in memory, however
long it runs. Readers call :meth:`Journal.sync` (or, from another thread,
:meth:`Journal.wait_written`) to see everything written so far.
"""

from __future__ import annotations

import binascii
import collections
import errno
import functools
import json
import os
import queue
import re
import shutil
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .files import writev_all
from .jsontext import compact_encoder, compact_json
from .logs import get_logger

__all__ = [
    "run_in_writer",
    "remove_tree",
    "AudioPart",
    "Journal",
    "RollBack",
    "STREAM_LOST",
    "FLUSH_BYTES",
    "SHORTAGE_RETRY",
    "wav_header",
    "journal_damage",
    "iso_time",
    "iso_now",
    # The journal's encoding, defined in emulator.jsontext and re-exported here.
    "compact_json",
    "compact_encoder",
    "clock_text",
]

log = get_logger("medscribe.journal")

#: Buffered bytes that trigger a write: one second of 16 kHz mono PCM is 42 KiB
#: of base64, so a typical stream writes about every 1.5 s of audio. Writes
#: happen in the writer thread, but each batch still costs the event loop: the
#: writer takes the GIL back after each of its system calls. Halving the
#: batches (32 -> 64 KiB) raised bulk ingest by a fifth (four alternating runs,
#: 122-130 -> 155-162 sessions/s). It is what a live session holds at most,
#: 32 KiB more than before; idle sessions hold none.
FLUSH_BYTES = 64 * 1024

#: Errors of a process or system short of descriptors or memory for a moment (a
#: burst of connections under a low ``ulimit -n``), not of a failing disk: the
#: data is still in memory and a write a little later succeeds. A full or
#: read-only disk (ENOSPC, EROFS, EACCES...) is not waited for.
_SHORTAGE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})

#: Seconds a shortage (see :data:`_SHORTAGE`) is waited out, counted from its
#: start across batches: the writer thread waits for every journal meanwhile,
#: so a lasting one drops writes as a failing disk does, after this (at once
#: when the event loop waits for the writer, see :meth:`_Shortage.pause`).
#: Fifty sessions at a ``ulimit -n`` of 64 were short for about a second.
SHORTAGE_RETRY = 5.0

#: The first pause before a write is tried again in a shortage; each next one
#: doubles, up to :data:`_LONGEST_PAUSE`.
_FIRST_PAUSE = 0.01
_LONGEST_PAUSE = 0.5

_EVENTS = "events.jsonl"
_BASE64_SUFFIX = ".b64"

#: The ``type`` of the entry that marks a stream a crash cut off (see :meth:`Journal.roll_back`).
STREAM_LOST = "streamLost"

# What the lines of stream entries hold (entries are compact JSON, see compact_json).
_STREAM_LINE = b'"direction":"stream"'
_LOST_LINE = b'"type":"streamLost"'
_LOST_TEXT = _LOST_LINE.decode()
_STARTED_TEXT = '"type":"streamStarted"'


# iso_time's: the last second formatted and its text; iso_now's: the current
# second's first nanosecond and its text. Both start as the epoch's second,
# true text for the times they match (an empty text would be wrong for them).
_second_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")
_now_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _append(path: str, buffers: list[bytes]) -> None:
    """Append ``buffers``, in order, to the file at ``path``, creating it.

    Plain ``os`` calls: a buffered ``open()`` per batch cost five times as much
    (io objects, a text encoder), and a live session keeps no descriptor open.
    """
    fd = os.open(path, _APPEND, 0o644)
    try:
        writev_all(fd, buffers)
    finally:
        os.close(fd)


# ".000Z" to ".999Z": the millisecond part of every journal timestamp, formatted
# once (a format spec per line cost more than the rest of an audio event's line).
_MILLIS_TEXT = tuple(f".{ms:03d}Z" for ms in range(1000))


def iso_time(ts: float) -> str:
    """Return ``ts`` (epoch seconds) as ISO 8601 UTC with milliseconds."""
    global _second_cache
    second = int(ts)
    if second > ts:  # before 1970: int() rounded up
        second -= 1
    cached, text = _second_cache
    if second != cached:  # formatting a datetime costs more than the rest of a journal line
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, text)
    return text + _MILLIS_TEXT[min(int((ts - second) * 1000), 999)]


#: repr() of the audio clocks journaled lately. Every session's audio events
#: pass the same clock values (0.1, 0.2... for 100 ms chunks), and a float's
#: repr (the shortest digits that read back the same) costs more than the rest
#: of an audio event's line.
_CLOCK_TEXT: dict[float, str] = {}
_CLOCK_TEXT_LIMIT = 8192


def clock_text(clock: float) -> str:
    """``repr(clock)``, from :data:`_CLOCK_TEXT` when it was seen lately."""
    text = _CLOCK_TEXT.get(clock)
    if text is None:
        text = repr(clock)
        if clock > 0.0:  # not 0.0: a key equal to -0.0 whose repr differs
            if len(_CLOCK_TEXT) >= _CLOCK_TEXT_LIMIT:
                _CLOCK_TEXT.clear()
            _CLOCK_TEXT[clock] = text
    return text


def iso_now() -> str:
    """Return the time now as :func:`iso_time` does, for the journal's lines.

    Integer nanoseconds (``time.time_ns``): a line per audio event made the
    float arithmetic of :func:`iso_time` (``int()`` of a float alone costs
    1.5k instructions) a tenth of the journal's cost.
    """
    global _now_cache
    ns = time.time_ns()
    start, text = _now_cache
    into = ns - start
    if not 0 <= into < 1_000_000_000:
        second = ns // 1_000_000_000
        text = iso_time(second)[:-5]  # without ".000Z"
        start = second * 1_000_000_000
        _now_cache = (start, text)
        into = ns - start
    return text + _MILLIS_TEXT[into // 1_000_000]


class Journal:
    """The journal files of one session in ``directory`` (created on first write).

    ``audio_suffix`` is the media encoding (``pcm`` or ``flac``). A ``new``
    session's journal removes what ``directory`` holds before its first write:
    the files of an earlier session with these ids whose row was lost.
    """

    def __init__(self, directory: Path | str, *, audio_suffix: str, new: bool = False) -> None:
        self.audio_suffix = audio_suffix
        self._new = new
        # Plain strings: a Path join per flush showed in the benchmark profile,
        # and building the Path itself in the profile of a session's start.
        self._path = os.fspath(directory)
        self._directory: Path | None = None
        self._events_path = os.path.join(self._path, _EVENTS)
        self._lines: list[str] = []
        self._audio: list[bytes] = []
        self._buffered = 0
        #: Where the current audio part goes (joined once per part, not per flush).
        self._audio_path: str | None = None
        self._stream = 0
        self._part = 0
        self._part_base64: bool | None = None  # the kind of the current part
        #: The first write error (the disk's message), once a write failed: what
        #: the journal holds from then on is incomplete (its writes are dropped).
        self.error: str | None = None
        # The directory is made on the first flush only (mkdir per flush showed
        # in the benchmark profile).
        self._made = False
        # Set (in the writer thread) when the directory was found reached through
        # a symlink, or another session's: nothing is written or removed there.
        self._refused = False

    @property
    def directory(self) -> Path:
        """The session's journal directory."""
        if self._directory is None:
            self._directory = Path(self._path)
        return self._directory

    # -- writing -----------------------------------------------------------------

    def start_stream(self, number: int) -> None:
        """Send the audio that follows to the ``number``-th stream's audio files."""
        self.flush()
        self._stream = number
        self._part = 0
        self._part_base64 = None
        self._audio_path = None

    def record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` (JSON-ready) with its arrival ``time``."""
        line = compact_json({"time": iso_now(), **entry})
        self._add_line(line)

    def record_audio_input(self, event_type: str, size: int, clock: float) -> None:
        """Append an audio event's entry: :meth:`record` of ``{"direction": "in",
        "type": event_type, "size": size, "audioClock": clock}``, byte for byte.

        The per-frame path: one f-string instead of a dict and a JSON encode.
        ``event_type`` must be ``audioEvent`` or ``binaryAudioEvent`` (no escaping
        needed) and ``clock`` a finite float, as the session's clock always is.
        """
        line = (
            f'{{"time":"{iso_now()}","direction":"in","type":"{event_type}",'
            f'"size":{size},"audioClock":{clock_text(clock)}}}'
        )
        # _add_line, inline: this runs once per audio event.
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def record_transcript(self, payload: str, clock: float) -> None:
        """Append a sent ``transcriptEvent``'s entry: :meth:`record` of
        ``{"direction": "out", "type": "transcriptEvent", **json.loads(payload),
        "audioClock": clock}``, byte for byte.

        ``payload`` is the event's compact JSON as sent
        (:func:`emulator.events.transcript_payload`), spliced in rather than
        encoded a second time; ``clock`` is a finite float.
        """
        line = (
            f'{{"time":"{iso_now()}","direction":"out","type":"transcriptEvent",'
            f'{payload[1:-1]},"audioClock":{clock_text(clock)}}}'
        )
        self._add_line(line)

    def _add_line(self, line: str) -> None:
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def audio(self, chunk: bytes, base64: bool = False) -> None:
        """Append a chunk to the current stream's audio: raw bytes, or with
        ``base64`` the chunk's standard base64 text (already validated) as the
        client sent it, stored undecoded.
        """
        if base64 is not self._part_base64:
            if self._audio:
                # The buffered audio belongs to the part it was sent for. Lines
                # can wait: a flush here on every stream's first audio event
                # created the session's files while the stream was opening.
                self.flush()
            self._part += 1
            self._part_base64 = base64
            name = f"audio-{self._stream}-{self._part}.{self.audio_suffix}"
            self._audio_path = os.path.join(self._path, name + _BASE64_SUFFIX if base64 else name)
        self._audio.append(chunk)
        if base64:
            self._audio.append(b"\n")
        self._buffered += len(chunk)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand what is buffered to the writer thread (see :class:`_Writer`).

        A failing disk is logged once; the data is dropped.
        """
        lines, audio = self._lines, self._audio
        self._lines, self._audio, self._buffered = [], [], 0
        if not lines and not audio:
            return
        make = not self._made
        self._made = True
        if lines:
            lines.append("")  # the last line's newline
            events = "\n".join(lines).encode()
        else:
            events = b""
        audio_path = None
        size = len(events)
        if audio and self._audio_path is not None:
            audio_path = self._audio_path
            size += sum(map(len, audio))
        # The chunks go to writev() as they are: joining them here copied every
        # byte of audio once more, in the event loop.
        _WRITER.submit(lambda: self._write(make, events, audio_path, audio), size)

    def _write(self, make: bool, events: bytes, audio_path: str | None, audio: list[bytes]) -> None:
        # In the writer thread.
        if self._refused:
            return
        try:
            if make:
                self._make()
            if events:
                _append(self._events_path, [events])
            if audio_path is not None:
                _append(audio_path, audio)
        except OSError as error:
            # What is left of the batch, the step that failed first: an error from
            # opening a file names it (see _Shortage.wait for why only those are
            # tried again), so the steps done before it are not done twice.
            steps: list[Callable[[], None]] = []
            failed = error.filename
            if make and failed not in (self._events_path, audio_path):
                steps.append(self._make)
            if events and failed != audio_path:
                steps.append(functools.partial(_append, self._events_path, [events]))
            if audio_path is not None:
                steps.append(functools.partial(_append, audio_path, audio))
            self._write_again(error, steps)

    def _make(self) -> None:
        """Make the directory on the first write; a ``new`` journal first removes
        what an earlier session with these ids left there, unless the folder is
        not that session's (see :func:`_not_ours`). Nothing is made through a
        symlinked folder: the journal is then refused (nothing written there,
        said once), rather than anything written or removed through a link."""
        if self._new and os.path.lexists(self._path):
            if (problem := _not_ours(self._path)) is not None:
                self._refused = True
                raise OSError(f"{problem}: nothing is written there, and nothing it holds removed")
            log.warning(
                "removed the journal in %s, left by an earlier session with these "
                "ids whose row was never saved or could not be read, before this "
                "session's first write",
                self._path,
            )
            remove_tree(Path(self._path))
        self._new = False
        # In the writer thread, once a journal: makedirs went through a domain or
        # subscription folder linked elsewhere, and wrote outside the state dir.
        if (link := _symlink_in(self._path)) is not None:
            self._refused = True
            raise OSError(
                f"{link} is a symlink, which the emulator never makes: nothing is written "
                "through it"
            )
        os.makedirs(self._path, exist_ok=True)

    def _write_again(self, error: OSError, steps: list[Callable[[], None]]) -> None:
        """Do ``steps``, the rest of a batch that met ``error``, again while a
        shortage of descriptors lasts (see :class:`_Shortage`); otherwise, or
        past its budget, the batch is dropped and the first error of the
        journal logged, as for a failing disk."""
        tries = 0
        while _SHORTAGE_STATE.wait(error, tries):
            tries += 1
            try:
                while steps:
                    steps[0]()
                    del steps[0]
            except OSError as again:
                error = again
            else:
                _SHORTAGE_STATE.over()
                return
        if self.error is None:
            log.warning("cannot write the journal in %s: %s", self.directory, error)
            self.error = str(error)

    def sync(self) -> None:
        """Flush and wait until everything written so far is on disk (event loop only)."""
        self.flush()
        _WRITER.wait(loop=True)

    @staticmethod
    def wait_written(*, loop: bool = False) -> None:
        """Wait until every flush handed over so far is on disk (any thread; no flush;
        ``loop`` for the event loop's thread: a shortage is then not waited out)."""
        _WRITER.wait(loop=loop)

    def remove(self) -> None:
        """Drop the buffers and delete the journal's files (after its pending writes)."""
        self._lines, self._audio, self._buffered = [], [], 0
        self._made = False
        directory = self.directory

        def drop() -> None:
            # Not a refused folder's: it is another session's, or reached through a link.
            if not self._refused:
                remove_tree(directory)

        _WRITER.submit(drop, 0)

    # -- reading -----------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Sync, then return every entry, oldest first (a line cut by a crash is skipped)."""
        self.sync()
        return list(self.iter_entries())

    def iter_entries(self, *, entry_type: str | None = None) -> Iterator[dict[str, Any]]:
        """Yield the entries written to disk, oldest first, reading the file lazily.

        With ``entry_type``, only the entries of that ``type`` (``transcriptEvent``...):
        other lines are skipped unparsed, which matters in a journal that is
        mostly audio-event lines. Does not flush, so a worker thread may read
        while the loop owns the buffers: flush in the loop, then
        :meth:`wait_written` in the thread.
        """
        # Entries are compact JSON (see compact_json), so an entry of this type holds
        # this exact text; a line without it cannot be one.
        marker = None if entry_type is None else compact_json({"type": entry_type})[1:-1]
        try:
            file = open(self.directory / _EVENTS, encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # nothing was ever written
            return
        with file:
            for line in file:
                if marker is not None and marker not in line:
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry_type is None or entry.get("type") == entry_type:
                    yield entry

    def iter_kept_entries(self, *, entry_type: str) -> Iterator[dict[str, Any]]:
        """:meth:`iter_entries` of ``entry_type``, without the entries of the streams
        that a ``streamLost`` entry marks: what the session holds once a restart
        rolled it back over them (the post-stream artifacts read these).

        An entry belongs to the stream of the ``streamStarted`` before it, and a
        ``streamLost`` marks the last stream of its number started before it (a
        later stream with that number, should a restart have been cut off before
        it saved the session, is another). A journal with no lost stream (one
        quick scan of its bytes says so) is read as lazily as :meth:`iter_entries`;
        one with a lost stream holds the matching lines in memory until its end,
        where the last ``streamLost`` may be.
        """
        if not self._holds(_LOST_LINE):
            yield from self.iter_entries(entry_type=entry_type)
            return
        marker = compact_json({"type": entry_type})[1:-1]
        # Streams by the order they started in (0: entries before any), their
        # last by number, and those lost.
        started = 0
        last_of: dict[int, int] = {}
        lost: set[int] = set()
        held: list[tuple[int, str]] = []
        try:
            file = open(self.directory / _EVENTS, encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return
        with file:
            for line in file:
                if _STARTED_TEXT in line or _LOST_TEXT in line:
                    entry = _parse(line)
                    number = _stream_number(entry)
                    kind = entry.get("type")
                    if number is not None and kind == "streamStarted":
                        started += 1
                        last_of[number] = started
                    elif number is not None and kind == STREAM_LOST and number in last_of:
                        lost.add(last_of[number])
                if marker in line:
                    held.append((started, line))
        for stream, line in held:
            if stream in lost:
                continue
            entry = _parse(line)
            if entry.get("type") == entry_type:
                yield entry

    def _holds(self, needle: bytes) -> bool:
        """Whether the events file holds ``needle`` (read in large pieces, not parsed)."""
        try:
            file = open(self._events_path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            return False
        keep = len(needle) - 1
        with file:
            tail = b""
            while chunk := file.read(_READ):
                window = tail + chunk
                if needle in window:
                    return True
                tail = window[-keep:]
        return False

    def audio_streams(self) -> list[list[AudioPart]]:
        """Sync, then return the audio written so far: each stream's parts, streams
        in order.

        Each part is a snapshot: audio appended later is not part of it, so a
        live session's audio can be read while it grows.
        """
        self.sync()
        streams: dict[int, list[AudioPart]] = {}
        for number, part in self._audio_files():
            streams.setdefault(number, []).append(part)
        return list(streams.values())

    def _audio_files(self) -> list[tuple[int, AudioPart]]:
        """``(stream number, part)`` of every audio file on disk, in order (no sync)."""
        try:
            names = os.listdir(self._path)
        except (FileNotFoundError, NotADirectoryError):
            return []
        pattern = _audio_pattern(self.audio_suffix)
        found = []
        for name in names:
            if match := pattern.fullmatch(name):
                stream, part, encoded = match.groups()
                path = self.directory / name
                try:
                    status = path.stat()
                except FileNotFoundError:  # removed meanwhile (a reset)
                    continue
                if not stat.S_ISREG(status.st_mode):  # not the journal's: no audio
                    continue
                length = status.st_size
                found.append(
                    (
                        (int(stream), int(part or 0)),
                        AudioPart(path=path, length=length, base64=encoded is not None),
                    )
                )
        found.sort(key=lambda item: item[0])
        return [(number, part) for (number, _), part in found]

    # -- after a crash -------------------------------------------------------------

    def has_lost_traces(self, first_lost: int) -> bool:
        """Whether the files hold audio of a stream numbered ``first_lost`` or more,
        or end in a line cut short: what a crash leaves of streams that the
        session's saved row does not know of (see :meth:`roll_back`).

        Cheap (a directory listing and the events file's last byte): it is asked of
        every paused session at a start. Files it cannot read show nothing.
        """
        try:
            names = os.listdir(self._path)
        except OSError:  # none (never written), or unreadable
            return False
        pattern = _audio_pattern(self.audio_suffix)
        for name in names:
            match = pattern.fullmatch(name)
            if match is not None and int(match.group(1)) >= first_lost:
                return True
        return _events_cut(self._events_path)

    def roll_back(self, first_lost: int) -> RollBack:
        """Bring the files in line with a session restored as it was before its
        stream numbered ``first_lost``: that stream and any after it (which a crash
        cut off before the session's row recorded their end) lose their audio
        files, and the events file a last line cut short by the crash (so that
        entries appended next read). Their entries stay; the caller marks each lost
        stream with a ``streamLost`` entry (:data:`STREAM_LOST`), which
        :meth:`iter_kept_entries` then leaves out.

        For a session no stream writes to (at a start, before the loop runs).
        Raises :class:`OSError` when the files cannot be read or changed.
        """
        _WRITER.wait(loop=True)  # an earlier Backend of this process may have writes queued
        streams: set[int] = set()
        marked: set[int] = set()
        ever_marked: set[int] = set()
        # The last whole lines but streamLost ones (the time of a restart, not of
        # the stream), a few in case the very last does not parse.
        recent: collections.deque[bytes] = collections.deque(maxlen=8)
        try:
            file = open(self._events_path, "r+b")
        except (FileNotFoundError, NotADirectoryError):
            file = None
        if file is not None:
            with file:
                whole = 0  # bytes of whole lines
                for line in file:
                    if not line.endswith(b"\n"):  # cut short: the crash's, the last one
                        file.truncate(whole)
                        log.info(
                            "journal %s: removed a last line the crash cut short (%d bytes)",
                            self.directory,
                            len(line),
                        )
                        break
                    whole += len(line)
                    if _STREAM_LINE in line:
                        entry = _parse(line)
                        number = _stream_number(entry)
                        if number is not None and entry.get("type") == STREAM_LOST:
                            ever_marked.add(number)
                        if number is not None and number >= first_lost:
                            streams.add(number)
                            if entry.get("type") == STREAM_LOST:
                                marked.add(number)
                        if _LOST_LINE in line:
                            continue
                    recent.append(line)
        last_heard: tuple[float, str] | None = None
        for line in reversed(recent):
            text = _parse(line).get("time")
            if isinstance(text, str) and (when := _epoch(text)) is not None:
                last_heard = (when, text)
                break
        dropped: dict[int, int] = {}
        kept = 0
        for number, part in self._audio_files():
            size = part.size()
            if number < first_lost:
                kept += size
                continue
            part.path.unlink(missing_ok=True)
            streams.add(number)
            dropped[number] = dropped.get(number, 0) + size
        return RollBack(
            streams=tuple(sorted(streams)),
            marked=frozenset(marked),
            ever_marked=frozenset(ever_marked),
            last_heard=last_heard,
            dropped=dropped,
            kept_audio_bytes=kept,
        )


def journal_damage(journal: Journal, *, what: str, held: int, expected: int) -> str | None:
    """Why ``journal`` cannot be trusted for ``what`` (``final results``, ``bytes of
    audio``...), if it cannot: ``held`` of them on disk where the session counted
    ``expected``, for a write that failed (named) or files damaged or removed
    since. A failed write that lost none of them (the audio's, when the results
    are asked for) is no reason.
    """
    if held == expected:
        return None
    if journal.error is not None:
        return (
            f"the session's journal in {journal.directory} could not be written "
            f"({journal.error}): it holds {held} {what} where the session counted "
            f"{expected}, so this is not built from it"
        )
    return (
        f"the session's journal in {journal.directory} holds {held} {what} where the "
        f"session counted {expected}: its files were damaged or removed after they "
        "were written, so this is not built from them"
    )


class _Writer:
    """One daemon thread doing every journal's file writes, in submission order.

    Opening, appending and closing files is most of a journal's cost, and its
    system calls release the GIL: in this thread they overlap the event loop
    instead of stalling it (bulk ingest: 64 -> 86-96 sessions/s). One thread for
    all journals keeps the order of each journal's writes and of a removal after
    them. It runs what is queued, then pauses :attr:`gather` seconds so that
    the next batches arrive together (:meth:`wait` cuts the pause short).
    Memory is bounded: while more than :attr:`max_pending` bytes wait,
    :meth:`submit` blocks until the thread is back under it, which is what
    writing in the loop cost every time.

    The bound is wide enough for a burst. A thousand sessions starting within a
    second create three thousand files and directories; where creating a file
    is slow (0.1-0.7 ms on some file systems, this project's CI machine among
    them), the thread fell two seconds, 78 MB of audio, behind. Under 16 MiB,
    every stream's next write waited for it (0.9 s of stalls in the loop, p99
    latency 0.7 s); at 128 MiB nothing waits and the backlog drains. A disk
    slower than the audio arriving still meets the bound, a few seconds later.
    """

    max_pending = 128 * 1024 * 1024
    gather = 0.01

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._hurry = threading.Event()  # someone waits: skip the next gathering pause
        # The event loop waits for the thread (wait(loop=True), or submit() over
        # max_pending): a shortage is not waited out then, as a loop that waits
        # closes none of the connections whose end would end it.
        self._blocked = 0
        self.loop_blocked = threading.Event()

    def submit(self, job: Callable[[], object], size: int) -> None:
        """Run ``job`` in the writer thread after every job submitted before it."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="medscribe-journal", daemon=True
                )
                self._thread.start()
            # Wait for room (not for the whole queue): the thread is writing,
            # and is told not to pause between batches while someone waits.
            if self._pending > self.max_pending:
                self._block_locked()  # submit is the event loop's
                try:
                    while self._pending > self.max_pending:
                        self._hurry.set()
                        self._room.wait()
                finally:
                    self._unblock_locked()
            self._pending += size
        self._jobs.put((job, size))

    def wait(self, *, loop: bool = False) -> None:
        """Block until every job submitted so far has run; ``loop``: the caller is
        the event loop (see :attr:`loop_blocked`)."""
        if self._thread is None:
            return
        done = threading.Event()
        self._jobs.put((done.set, 0))
        self._hurry.set()
        if not loop:
            done.wait()
            return
        with self._lock:
            self._block_locked()
        try:
            done.wait()
        finally:
            with self._lock:
                self._unblock_locked()

    def _block_locked(self) -> None:
        """Count the event loop as waiting for the thread (:attr:`_lock` held)."""
        self._blocked += 1
        self.loop_blocked.set()

    def _unblock_locked(self) -> None:
        self._blocked -= 1
        if not self._blocked:
            self.loop_blocked.clear()

    def _run(self) -> None:
        jobs = self._jobs
        while True:
            job, size = jobs.get()
            while True:
                try:
                    job()
                except Exception:  # a bug of ours must not stop every later write
                    log.exception("journal writer: a write failed")
                if size:
                    with self._lock:
                        self._pending -= size
                        if self._pending <= self.max_pending:
                            self._room.notify_all()
                try:
                    job, size = jobs.get_nowait()
                except queue.Empty:
                    break
            if self._hurry.wait(self.gather):
                self._hurry.clear()


_WRITER = _Writer()


def run_in_writer(job: Callable[[], object], size: int = 0) -> None:
    """Run ``job`` in the journals' writer thread, after everything handed to it
    before (:meth:`Journal.wait_written` waits for it too); ``size`` is the bytes
    it holds, counted against the writer's memory bound. For other writes off
    the event loop, such as the session rows (see :mod:`emulator.backend`).
    """
    _WRITER.submit(job, size)


def remove_tree(directory: Path) -> None:
    """Delete ``directory``, then its parents (a session's subscription and domain
    folders) while they are left empty: without that, sessions of many domains
    left two empty folders each behind them.

    Nothing is removed when one of the three is a symlink (planted in the state
    directory: the emulator makes none): ``shutil.rmtree`` follows a link in a
    parent, and deleted what it pointed to. It is left, saying so."""
    if (link := _symlink_in(os.fspath(directory))) is not None:
        log.warning(
            "left the journal in %s: %s is a symlink, which the emulator never makes "
            "and removes nothing through",
            directory,
            link,
        )
        return
    shutil.rmtree(directory, ignore_errors=True)
    for parent in (directory.parent, directory.parent.parent):
        try:
            parent.rmdir()  # only when empty; another session's files keep it
        except OSError:
            return


def _symlink_in(directory: str) -> str | None:
    """The first of ``directory`` (``<domain>/<subscription>/<session>`` under the
    journal root) and its two parents that is a symlink, if one is."""
    path = directory
    for _ in range(3):
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return path
        except OSError:  # not there (nor then anything below it), or unreadable
            pass
        path = os.path.dirname(path)
    return None


def _not_ours(directory: str) -> str | None:
    """Why the existing ``directory`` (``<domain>/<subscription>/<session>``) is not
    a journal folder of these ids that a new session may clear, if it is not: one
    of the three is a symlink, or is listed under another name, so that the path
    reaches another session's folder (a case-insensitive file system, macOS's or
    Windows', takes ``sub-ABC...`` for ``sub-abc...``)."""
    if (link := _symlink_in(directory)) is not None:
        return f"{link} is a symlink, which the emulator never makes"
    path = directory
    for _ in range(3):
        parent, name = os.path.split(path)
        names = os.listdir(parent)
        if name not in names:
            same = [other for other in names if other.casefold() == name.casefold()]
            return (
                f"{path} is {os.path.join(parent, same[0])}, another session's folder"
                if same
                else f"{path} reaches a folder of {parent} listed under another name"
            ) + " (the file system folds case or normalizes names)"
        path = parent
    return None


class _Shortage:
    """A shortage of descriptors or memory (:data:`_SHORTAGE`) that the writer
    thread waits out, for :data:`SHORTAGE_RETRY` seconds from its start across
    batches. Writer thread only.

    Not while the event loop waits for the writer (see :meth:`pause`): the batch
    is then dropped as for a failing disk.

    A write that succeeds at once says nothing (no work is added to it), so the
    end of a shortage is known from a write tried again succeeding
    (:meth:`over`), or, after its budget ran out, from none failing for as long
    as the budget: the next failure is a new shortage, logged and waited out anew.
    """

    def __init__(self) -> None:
        self.started: float | None = None
        self.seen = 0.0  # when the last error of the shortage came

    def wait(self, error: OSError, tries: int) -> bool:
        """Whether to try again after ``error``, once a pause (doubling with
        ``tries``, the retries so far) is over, within the budget. Only errors
        naming a path are tried again: those of opening a file or making a
        directory, which wrote nothing (a write cut short would be written twice)."""
        if error.errno not in _SHORTAGE or error.filename is None:
            return False
        now = time.monotonic()
        if self.started is None or now - self.seen > SHORTAGE_RETRY:
            self.started = now
            log.warning(
                "journal writes failed with %s (%s), a shortage of file descriptors or "
                "memory, not a disk error: they are tried again for up to %g s (short of "
                "descriptors, raise ulimit -n for this many connections)",
                errno.errorcode.get(error.errno, error.errno),
                error,
                SHORTAGE_RETRY,
            )
        self.seen = now
        left = self.started + SHORTAGE_RETRY - now
        if left <= 0:
            return False
        return not self.pause(min(_FIRST_PAUSE * 2**tries, _LONGEST_PAUSE, left))

    @staticmethod
    def pause(seconds: float) -> bool:
        """Pause for ``seconds``; True, at once, when the event loop waits for the
        writer (:attr:`_Writer.loop_blocked`): it would wait out the pauses, and a
        loop that waits closes no connection, so the shortage would not end (an
        admin read of a session's events stalled the server for 5 s)."""
        return _WRITER.loop_blocked.wait(seconds)

    def over(self) -> None:
        """A write tried again succeeded: the next error is a new shortage."""
        self.started = None


_SHORTAGE_STATE = _Shortage()


#: Read size for the audio files.
_READ = 256 * 1024


def _audio_pattern(suffix: str) -> re.Pattern[str]:
    """The names of audio files: ``(stream, part or None, ".b64" or None)``."""
    return re.compile(rf"audio-(\d+)(?:-(\d+))?\.{re.escape(suffix)}({re.escape(_BASE64_SUFFIX)})?")


def _parse(line: str | bytes) -> dict[str, Any]:
    """The entry on ``line``, or ``{}`` when it is not one (cut, or not JSON)."""
    try:
        entry = json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return {}
    return entry if isinstance(entry, dict) else {}


def _stream_number(entry: Mapping[str, Any]) -> int | None:
    number = entry.get("stream")
    return number if type(number) is int else None


def _epoch(text: str) -> float | None:
    """Epoch seconds of an entry's ``time`` (see :func:`iso_time`), or None."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _events_cut(path: str) -> bool:
    """Whether the events file at ``path`` ends inside a line."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # none, or unreadable
        return False
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True, kw_only=True, slots=True)
class RollBack:
    """What :meth:`Journal.roll_back` found of the lost streams, and removed."""

    #: The lost streams the files show (an entry naming them, or audio), in order.
    streams: tuple[int, ...] = ()
    #: Those a ``streamLost`` entry marks already: a restart before marked them,
    #: and was cut off before it saved the session's row.
    marked: frozenset[int] = frozenset()
    #: Every stream a ``streamLost`` entry marks, lost in this crash or any before:
    #: the session's count of lost streams, whether or not a row saved it.
    ever_marked: frozenset[int] = frozenset()
    #: The time of the last whole entry but ``streamLost`` ones, if any, as epoch
    #: seconds and as written: when the session, and so its last stream, was last
    #: heard of. (The text: :func:`iso_time` of the seconds may be a millisecond
    #: earlier, a float's rounding.)
    last_heard: tuple[float, str] | None = None
    #: Audio bytes deleted, by stream (decoded, for base64 parts).
    dropped: Mapping[int, int] = field(default_factory=dict)
    #: Audio bytes of the streams kept (decoded, for base64 parts).
    kept_audio_bytes: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class AudioPart:
    """The first ``length`` bytes of one journal audio file (see the module docstring)."""

    path: Path
    length: int
    base64: bool

    def size(self) -> int:
        """Bytes of audio in the part (decoded, for a base64 part)."""
        if not self.base64:
            return self.length
        total = 0
        for line in self._lines():
            padding = len(line) - len(line.rstrip(b"="))
            total += len(line) // 4 * 3 - padding
        return total

    def read(self) -> Iterator[bytes]:
        """Yield the part's audio bytes, in pieces."""
        if self.base64:
            for line in self._lines():
                if line:
                    yield binascii.a2b_base64(line, strict_mode=True)
            return
        left = self.length
        with open(self.path, "rb") as file:
            while left > 0 and (chunk := file.read(min(_READ, left))):
                left -= len(chunk)
                yield chunk

    def _lines(self) -> Iterator[bytes]:
        """The complete base64 lines (without newline) in the part's first ``length`` bytes."""
        left = self.length
        with open(self.path, "rb") as file:
            while left > 0 and (line := file.readline(left)):
                left -= len(line)
                if line.endswith(b"\n"):
                    yield line[:-1]


def wav_header(*, sample_rate: int, channels: int, data_bytes: int) -> bytes:
    """Return the 44-byte RIFF/WAVE header of ``data_bytes`` of 16-bit little-endian PCM."""
    block_align = 2 * channels
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            # fmt chunk: size 16, PCM (1), channels, rate, byte rate, block align, 16 bits
            struct.pack(
                "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )
