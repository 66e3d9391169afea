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
bytes, so :meth:`Journal.audio_parts` decodes on the way out. A stream's part
changes only when its events switch between the two kinds. (``audio-<n>.pcm``
without a part number, raw, is what earlier versions wrote; it still reads.)

Each entry has ``time`` (arrival, ISO 8601 UTC), ``direction`` (``in`` for the client's
events, ``out`` for the emulator's, ``stream`` for a stream's start, refusal,
input end (``inputClosed``), ``disconnect`` and end), ``type`` and
``audioClock``: the session's audio seconds when the event arrived (before an
input event is applied) or was sent. Input entries have ``size`` (the event's
payload bytes); configuration and session-control events keep their payload.
Output entries carry the event (``transcriptSegment``, or an exception's
``message``).

Appends are buffered in memory and written in batches (open, append, close)
by one writer thread, off the event loop: a live session holds no file
descriptor and at most about :data:`FLUSH_BYTES` of journal in memory, however
long it runs. Readers call :meth:`Journal.sync` (or, from another thread,
:meth:`Journal.wait_written`) to see everything written so far.
"""

from __future__ import annotations

import binascii
import json
import logging
import os
import queue
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .files import writev_all

__all__ = [
    "run_in_writer",
    "remove_tree",
    "AudioPart",
    "Journal",
    "FLUSH_BYTES",
    "wav_header",
    "iso_time",
    "iso_now",
    "compact_json",
    "compact_encoder",
    "clock_text",
]

log = logging.getLogger("medscribe.journal")

#: Buffered bytes that trigger a write: one second of 16 kHz mono PCM is 42 KiB
#: of base64, so a typical stream writes about every 1.5 s of audio. Writes
#: happen in the writer thread, but each batch still costs the event loop: the
#: writer takes the GIL back after each of its system calls. Halving the
#: batches (32 -> 64 KiB) raised bulk ingest by a fifth (four alternating runs,
#: 122-130 -> 155-162 sessions/s). It is what a live session holds at most,
#: 32 KiB more than before; idle sessions hold none.
FLUSH_BYTES = 64 * 1024

_EVENTS = "events.jsonl"
_BASE64_SUFFIX = ".b64"


# iso_time's: the last second formatted and its text; iso_now's: the current
# second's first nanosecond and its text. Both start as the epoch's second,
# true text for the times they match (an empty text would be wrong for them).
_second_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")
_now_cache: tuple[int, str] = (0, "1970-01-01T00:00:00")


def compact_encoder(*, ensure_ascii: bool = True) -> Callable[[Any], str]:
    """``json.JSONEncoder(separators=(",", ":"), check_circular=False,
    ensure_ascii=ensure_ascii).encode``, the same text for the same value.

    No cycle check: what is encoded is parsed JSON and our own plain data,
    never cyclic, and the check (an id() set of every container) was an eighth
    of the cost. ``JSONEncoder.encode`` also builds its C encoder anew for
    every call, which cost as much as encoding a transcript event: this builds
    it once.
    """
    encoder = json.JSONEncoder(
        separators=(",", ":"), check_circular=False, ensure_ascii=ensure_ascii
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the _json accelerator
        return encoder.encode
    strings = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    chunks = make(None, encoder.default, strings, None, ":", ",", False, False, True)
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


#: Compact JSON text, the one encoding of journal lines and session rows (a
#: scripted scenario's text is spliced into rows, so both must agree).
compact_json = compact_encoder()


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

    ``audio_suffix`` is the media encoding (``pcm`` or ``flac``).
    """

    def __init__(self, directory: Path | str, *, audio_suffix: str) -> None:
        self.audio_suffix = audio_suffix
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
        self._broken = False
        # The directory is made on the first flush only (mkdir per flush showed
        # in the benchmark profile).
        self._made = False

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
        try:
            if make:
                os.makedirs(self._path, exist_ok=True)
            if events:
                _append(self._events_path, [events])
            if audio_path is not None:
                _append(audio_path, audio)
        except OSError as error:
            if not self._broken:
                log.warning("cannot write the journal in %s: %s", self.directory, error)
            self._broken = True

    def sync(self) -> None:
        """Flush and wait until everything written so far is on disk (event loop only)."""
        self.flush()
        _WRITER.wait()

    @staticmethod
    def wait_written() -> None:
        """Wait until every flush handed over so far is on disk (any thread; no flush)."""
        _WRITER.wait()

    def remove(self) -> None:
        """Drop the buffers and delete the journal's files (after its pending writes)."""
        self._lines, self._audio, self._buffered = [], [], 0
        self._made = False
        directory = self.directory
        _WRITER.submit(lambda: remove_tree(directory), 0)

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

    def audio_parts(self) -> list[AudioPart]:
        """Sync, then return the audio written so far, every part of every stream in order.

        Each part is a snapshot: audio appended later is not part of it, so a
        live session's audio can be read while it grows.
        """
        self.sync()
        if not self.directory.is_dir():
            return []
        pattern = re.compile(
            rf"audio-(\d+)(?:-(\d+))?\.{re.escape(self.audio_suffix)}({re.escape(_BASE64_SUFFIX)})?"
        )
        found = []
        for path in self.directory.iterdir():
            if match := pattern.fullmatch(path.name):
                stream, part, encoded = match.groups()
                found.append(
                    (
                        (int(stream), int(part or 0)),
                        AudioPart(
                            path=path, length=path.stat().st_size, base64=encoded is not None
                        ),
                    )
                )
        return [part for _, part in sorted(found, key=lambda item: item[0])]


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
            while self._pending > self.max_pending:
                self._hurry.set()
                self._room.wait()
            self._pending += size
        self._jobs.put((job, size))

    def wait(self) -> None:
        """Block until every job submitted so far has run."""
        if self._thread is None:
            return
        done = threading.Event()
        self._jobs.put((done.set, 0))
        self._hurry.set()
        done.wait()

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
    left two empty folders each behind them."""
    shutil.rmtree(directory, ignore_errors=True)
    for parent in (directory.parent, directory.parent.parent):
        try:
            parent.rmdir()  # only when empty; another session's files keep it
        except OSError:
            return


#: Read size for the audio files.
_READ = 256 * 1024


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
