"""The journal of one session: every event in and out, and the audio as received.

What a user opens when their CI fails. Files, under the session's directory::

    events.jsonl           one JSON object per event, in arrival order
    audio-<n>.pcm|.flac    the audio of the session's n-th stream, bytes as received

Each entry has ``time`` (arrival, ISO 8601 UTC), ``direction`` (``in`` for the client's
events, ``out`` for the emulator's, ``stream`` for a stream's start, refusal,
input end (``inputClosed``), ``disconnect`` and end), ``type`` and
``audioClock``: the session's audio seconds when the event arrived (before an
input event is applied) or was sent. Input entries have ``size`` (the event's
payload bytes); configuration and session-control events keep their payload.
Output entries carry the event (``transcriptSegment``, or an exception's
``message``).

Appends are buffered in memory and written in batches (open, append, close):
a live session holds no file descriptor and at most about :data:`FLUSH_BYTES`
of journal in memory, however long it runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Journal", "FLUSH_BYTES", "wav_header", "iso_time"]

log = logging.getLogger("medscribe.journal")

#: Buffered bytes that trigger a write: one second of 16 kHz stereo PCM is 64 KiB,
#: so a typical stream writes about once per second of audio.
FLUSH_BYTES = 64 * 1024

_EVENTS = "events.jsonl"


_second_cache: tuple[int, str] = (-1, "")
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def iso_time(ts: float) -> str:
    """Return ``ts`` (epoch seconds) as ISO 8601 UTC with milliseconds."""
    global _second_cache
    second = int(ts)
    cached, text = _second_cache
    if second != cached:  # formatting a datetime costs more than the rest of a journal line
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, text)
    return f"{text}.{int((ts - second) * 1000):03d}Z"


class Journal:
    """The journal files of one session in ``directory`` (created on first write).

    ``audio_suffix`` is the media encoding (``pcm`` or ``flac``).
    """

    def __init__(self, directory: Path, *, audio_suffix: str) -> None:
        self.directory = directory
        self.audio_suffix = audio_suffix
        self._lines: list[str] = []
        self._audio: list[bytes] = []
        self._buffered = 0
        self._audio_name: str | None = None
        self._broken = False
        # The directory is made on the first flush only (mkdir per flush showed
        # in the benchmark profile).
        self._made = False

    # -- writing -----------------------------------------------------------------

    def start_stream(self, number: int) -> None:
        """Send the audio that follows to the ``number``-th stream's audio file."""
        self.flush()
        self._audio_name = f"audio-{number}.{self.audio_suffix}"

    def record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` (JSON-ready) with its arrival ``time``."""
        line = _ENCODE({"time": iso_time(time.time()), **entry})
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def audio(self, chunk: bytes) -> None:
        """Append ``chunk`` to the current stream's audio file."""
        self._audio.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered. A failing disk is logged once; the data is dropped."""
        lines, audio = self._lines, self._audio
        self._lines, self._audio, self._buffered = [], [], 0
        if not lines and not audio:
            return
        try:
            if not self._made:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._made = True
            if lines:
                with open(self.directory / _EVENTS, "a", encoding="utf-8") as file:
                    file.write("\n".join(lines) + "\n")
            if audio and self._audio_name is not None:
                with open(self.directory / self._audio_name, "ab") as file:
                    file.write(b"".join(audio))
        except OSError as error:
            if not self._broken:
                log.warning("cannot write the journal in %s: %s", self.directory, error)
            self._broken = True

    def remove(self) -> None:
        """Drop the buffers and delete the journal's files."""
        self._lines, self._audio, self._buffered = [], [], 0
        self._made = False
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- reading -----------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Flush, then return every entry, oldest first (a line cut by a crash is skipped)."""
        self.flush()
        return list(self.iter_entries())

    def iter_entries(self) -> Iterator[dict[str, Any]]:
        """Yield the entries written to disk, oldest first, reading the file lazily.

        Does not flush, so a worker thread may read while the loop owns the buffers.
        """
        try:
            file = open(self.directory / _EVENTS, encoding="utf-8")
        except FileNotFoundError:
            return
        with file:
            for line in file:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def audio_files(self) -> list[Path]:
        """Return the audio files, one per stream that sent audio, in stream order."""
        self.flush()
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob(f"audio-*.{self.audio_suffix}"):
            number = path.name.split("-", 1)[1].split(".", 1)[0]
            if number.isdigit():
                found.append((int(number), path))
        return [path for _, path in sorted(found)]


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
