"""The ``stream`` command's client: send an audio file through the real SDK, show results.

Three parts, each usable alone:

* :func:`read_audio` reads a WAV (16-bit PCM, with the stdlib ``wave``), a FLAC
  file (sent as-is; rate and channels from STREAMINFO) or raw 16-bit PCM, and
  :meth:`AudioFile.chunks` cuts it into audio events of ``chunk_ms``.
* :class:`TextRenderer` and :class:`JsonRenderer` show what comes back.
* :func:`stream_audio` drives one StartMedicalScribeListeningSession with
  ``aws-sdk-connecthealth`` (imported only when streaming) and :func:`run`
  wraps it for the command line, returning the exit code.

Nothing here is specific to the emulator: against the real service the same
code runs with the caller's AWS credentials (see :func:`is_aws_endpoint`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import io
import json
import math
import os
import re
import shutil
import signal
import ssl
import struct
import sys
import time
import unicodedata
import uuid
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypedDict
from urllib.parse import urlsplit

from .problems import counted
from .sdk_version import sdk_problem

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_DOMAIN_ID",
    "DEFAULT_SUBSCRIPTION_ID",
    "DEFAULT_OUTPUT_S3_URI",
    "DEFAULT_TEMPLATE",
    "TEMPLATES",
    "ROLES",
    "DEFAULT_ROLES",
    "EXIT_OK",
    "EXIT_SERVICE_ERROR",
    "EXIT_USAGE",
    "UsageError",
    "AudioFile",
    "Chunk",
    "StreamOptions",
    "StreamSummary",
    "StreamReset",
    "Unconfirmed",
    "OutputClosed",
    "OutputFailed",
    "LiveLine",
    "resolve_roles",
    "Renderer",
    "TextRenderer",
    "JsonRenderer",
    "read_audio",
    "default_ca_file",
    "state_ca_file",
    "is_aws_endpoint",
    "format_final",
    "segment_json",
    "stream_audio",
    "run",
]

DEFAULT_ENDPOINT = "https://localhost:8443"
#: Well-formed dummies: the model wants (hai-|dom-)[a-z0-9]+ of 20-25 characters and
#: sub-[a-zA-Z0-9]{21}; the emulator accepts any well-formed id unless told otherwise.
DEFAULT_DOMAIN_ID = "dom-medscribeemulator"
DEFAULT_SUBSCRIPTION_ID = "sub-MedscribeEmulator0001"
DEFAULT_OUTPUT_S3_URI = "s3://medscribe-emulator/output"
DEFAULT_TEMPLATE = "HISTORY_AND_PHYSICAL"
#: The model's managed note templates.
TEMPLATES = (
    "HISTORY_AND_PHYSICAL",
    "GIRPP",
    "DAP",
    "SIRP",
    "BIRP",
    "BEHAVIORAL_SOAP",
    "PHYSICAL_SOAP",
)
#: The model's participant roles for channelDefinitions.
ROLES = ("CLINICIAN", "PATIENT")
#: Roles given to a 2-channel file when ``--channels`` is not.
DEFAULT_ROLES = ("CLINICIAN", "PATIENT")

EXIT_OK = 0
EXIT_SERVICE_ERROR = 1
EXIT_USAGE = 2
#: Standard output closed under us (``stream --json | head -1``): the status of a
#: process that SIGPIPE ends, as ``yes | head`` leaves. The stream stops there.
EXIT_OUTPUT_CLOSED = 128 + 13
#: Stopped by SIGTERM: the status a process that signal ends has.
EXIT_TERMINATED = 128 + 15

#: The sample rates the service takes (the model's MedicalScribeMediaSampleRateHertz).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
#: The service takes at most 32,000 bytes of audio per audio event (service guide).
MAX_CHUNK_BYTES = 32_000
#: After the output stream ends, how long the input side may take to finish. The SDK's
#: input publisher never returns once its stream was reset, so it cannot be awaited
#: without a bound.
INPUT_GRACE_SECONDS = 2.0
#: Redraw the live line at most this often: at --fast speed chunks go out by the thousand.
REDRAW_SECONDS = 0.1

_PCM_WIDTH = 2  # the service's pcm is 16-bit signed little-endian
_FLAC_MARKER = b"fLaC"
_AWS_SUFFIXES = (".amazonaws.com", ".api.aws", ".amazonaws.com.cn")


class UsageError(Exception):
    """A bad file or option combination; the command exits with :data:`EXIT_USAGE`."""


# --------------------------------------------------------------------------- audio


@dataclass(frozen=True, kw_only=True, slots=True)
class Chunk:
    """One audio event's bytes and the audio time (seconds) reached once it is sent.

    The bytes are cut from the file's when asked for, as the event is sent: an
    hour of 16 kHz PCM is 115 MB, and a list of copies held it twice over.
    """

    source: bytes
    start: int
    stop: int
    end_seconds: float

    @property
    def data(self) -> bytes:
        return self.source[self.start : self.stop]


@dataclass(frozen=True, kw_only=True, slots=True)
class AudioFile:
    """Audio ready to stream: ``data`` is what goes on the wire, as ``encoding``."""

    path: Path
    kind: str  # "wav", "flac" or "raw"
    encoding: str  # the media encoding header: "pcm" or "flac"
    sample_rate: int
    channels: int
    seconds: float
    data: bytes
    #: FLAC: each frame's byte offset and the samples before it.
    frames: tuple[tuple[int, int], ...] = ()

    def chunks(self, chunk_ms: int) -> list[Chunk]:
        """Return the audio cut into events of about ``chunk_ms`` milliseconds each.

        PCM chunks hold whole sample frames. FLAC is cut where its audio, as the
        service's clock counts it (complete frames), reaches each ``chunk_ms``
        (its frames need not line up with events: the service parses the
        stream), so ``--realtime`` paces it by audio: cut by bytes in proportion
        to its duration, 10 s of silence, which FLAC shrinks to a few bytes a
        frame, went out in under a second. Raises :class:`UsageError` when
        ``chunk_ms`` would make PCM events larger than the service's 32,000-byte
        limit.
        """
        if chunk_ms < 1:
            raise UsageError(f"--chunk-ms must be at least 1, got {chunk_ms}")
        if self.encoding == "flac":
            return self._flac_chunks(chunk_ms / 1000)
        per_second: float
        if self.encoding == "pcm":
            frame = _PCM_WIDTH * self.channels
            size = max(1, round(self.sample_rate * chunk_ms / 1000)) * frame
            if size > MAX_CHUNK_BYTES:
                longest = MAX_CHUNK_BYTES // frame * 1000 // self.sample_rate
                raise UsageError(
                    f"--chunk-ms {chunk_ms} makes {size}-byte audio events at "
                    f"{self.sample_rate} Hz x {self.channels} channel(s); the service takes "
                    f"at most {MAX_CHUNK_BYTES} bytes per event (use --chunk-ms {longest} or less)"
                )
            per_second = self.sample_rate * frame
        else:
            per_second = len(self.data) / self.seconds if self.seconds > 0 else MAX_CHUNK_BYTES
            size = min(MAX_CHUNK_BYTES, max(1, math.ceil(per_second * chunk_ms / 1000)))
        out = []
        for start in range(0, len(self.data), size):
            end = min(start + size, len(self.data))
            seconds = self.seconds if end == len(self.data) else end / per_second
            out.append(
                Chunk(
                    source=self.data, start=start, stop=end, end_seconds=min(seconds, self.seconds)
                )
            )
        return out

    def starting_at(self, seconds: float) -> AudioFile:
        """The audio from ``seconds`` on, cut at a whole sample frame: what resumes a
        session that holds the file's audio up to there. Raises :class:`UsageError`
        for FLAC (its frames carry their positions: cut the file itself) and for a
        start at or past the audio's end."""
        if seconds <= 0:
            return self
        if self.encoding != "pcm":
            raise UsageError(
                f"--start-at takes WAV or raw PCM; {self.path} is FLAC: cut it first "
                f"(e.g. sox {self.path} rest.flac trim {seconds:g})"
            )
        frame = _PCM_WIDTH * self.channels
        offset = round(seconds * self.sample_rate) * frame
        if offset > len(self.data):
            raise UsageError(
                f"--start-at {seconds}: {self.path} holds {self.seconds:.3f} s of audio"
            )
        # At the very end no audio is left: the stream sends its configuration and
        # END_OF_SESSION, which completes a session that already holds it all.
        rest = self.data[offset:]
        return dataclasses.replace(self, data=rest, seconds=len(rest) / (frame * self.sample_rate))

    def _flac_chunks(self, every: float) -> list[Chunk]:
        """FLAC cut at the first frame start each ``every`` seconds of audio, each
        chunk ending where its whole frames' audio does, and within the service's
        event size (a single frame longer than that is cut inside)."""
        data, rate = self.data, self.sample_rate
        out: list[Chunk] = []
        start, reached = 0, 0.0  # the last cut, and the audio before it
        last, last_seconds = 0, 0.0  # the frame start seen before this one
        for offset, samples in (*self.frames[1:], (len(data), round(self.seconds * rate))):
            seconds = min(samples / rate, self.seconds)
            if offset - start > MAX_CHUNK_BYTES and last > start:
                out.append(Chunk(source=data, start=start, stop=last, end_seconds=last_seconds))
                start, reached = last, last_seconds
            while offset - start > MAX_CHUNK_BYTES:
                out.append(
                    Chunk(
                        source=data, start=start, stop=start + MAX_CHUNK_BYTES, end_seconds=reached
                    )
                )
                start += MAX_CHUNK_BYTES
            if seconds - reached >= every or offset == len(data):
                out.append(Chunk(source=data, start=start, stop=offset, end_seconds=seconds))
                start, reached = offset, seconds
            last, last_seconds = offset, seconds
        return out


def read_audio(
    path: str | Path, *, sample_rate: int | None = None, channels: int | None = None
) -> AudioFile:
    """Read ``path`` as WAV or FLAC (told apart by content), or as raw 16-bit PCM.

    ``sample_rate`` is required for raw PCM (``channels`` defaults to 1 there);
    both, when given for WAV or FLAC, must agree with the file. Returns the
    :class:`AudioFile`. Raises :class:`UsageError` for a missing or unreadable file,
    a WAV that is not 16-bit PCM, a broken FLAC header, or more than 2 channels.
    """
    path = Path(path)
    try:
        data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not an audio file") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        audio = _read_wav(path, data)
    elif data[:4] == _FLAC_MARKER:
        audio = _read_flac(path, data)
    elif not data:
        raise UsageError(f"{path}: is empty")
    elif sample_rate is None and (kind := _compressed_kind(data)) is not None:
        raise UsageError(
            f"{path}: {kind} audio; the service takes PCM or FLAC: convert it first "
            "(e.g. ffmpeg -i IN -ac 1 -ar 16000 OUT.wav)"
        )
    elif sample_rate is None:
        raise UsageError(
            f"{path}: not a WAV or FLAC file; for raw 16-bit little-endian PCM give --sample-rate"
        )
    else:
        count = channels or 1
        frame = _PCM_WIDTH * count
        if len(data) % frame:
            raise UsageError(
                f"{path}: {len(data)} bytes is not a whole number of {count}-channel "
                "16-bit sample frames"
            )
        audio = AudioFile(
            path=path,
            kind="raw",
            encoding="pcm",
            sample_rate=sample_rate,
            channels=count,
            seconds=len(data) / (frame * sample_rate),
            data=data,
        )
    if audio.kind != "raw" and sample_rate is not None and sample_rate != audio.sample_rate:
        raise UsageError(
            f"--sample-rate {sample_rate} disagrees with {path} ({audio.sample_rate} Hz); "
            "--sample-rate is for raw PCM only"
        )
    if audio.kind != "raw" and channels is not None and channels != audio.channels:
        raise UsageError(f"--channels says {channels} channel(s) but {path} has {audio.channels}")
    if audio.channels > 2:
        raise UsageError(f"{path}: {audio.channels} channels; the service takes 1 or 2")
    if not MIN_SAMPLE_RATE <= audio.sample_rate <= MAX_SAMPLE_RATE:
        given = "--sample-rate" if audio.kind == "raw" else str(path)
        raise UsageError(
            f"{given}: {audio.sample_rate} Hz; the service takes {MIN_SAMPLE_RATE}-"
            f"{MAX_SAMPLE_RATE} Hz (resample with e.g. sox IN -r 16000 OUT)"
        )
    if not audio.data or audio.seconds <= 0:
        raise UsageError(f"{path}: holds no audio")
    return audio


def _compressed_kind(data: bytes) -> str | None:
    """``MP3`` or ``Ogg`` when ``data`` starts as such a file does, else None."""
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "MP3"
    if data[:4] == b"OggS":
        return "Ogg"
    return None


#: WAV data chunk sizes that mean "to the end of the file": what a recorder that
#: streams its output writes (0 before it knows; 0xFFFFFFFF, or another size near
#: the format's 4 GiB limit, as "unknown").
_WAV_STREAMING_SIZE = 0x7FFF0000


def _read_wav(path: Path, file: bytes) -> AudioFile:
    """Parse the WAV ``file`` (the bytes of ``path``: a pipe cannot be read twice)."""
    if int.from_bytes(file[4:8], "little") == 0:
        # A recorder that never went back to fill in its sizes leaves the RIFF
        # size 0 too, which the wave module takes for an empty file: to the end.
        file = file[:4] + (len(file) - 8).to_bytes(4, "little") + file[8:]
    try:
        stream = io.BytesIO(file)
        with wave.open(stream, "rb") as wav:
            width, channels = wav.getsampwidth(), wav.getnchannels()
            rate, frames = wav.getframerate(), wav.getnframes()
            if width != _PCM_WIDTH:
                raise UsageError(
                    f"{path}: {8 * width}-bit samples; the service takes 16-bit PCM "
                    "(convert with e.g. sox IN.wav -b 16 OUT.wav)"
                )
            if rate <= 0:
                raise UsageError(f"{path}: its WAV header gives a sample rate of {rate} Hz")
            # The data chunk's size, as its header states it (wave hides it).
            chunk = wav._data_chunk  # type: ignore[attr-defined]
            declared = chunk.chunksize
            if declared == 0:  # a recorder that never wrote the size: to the end
                data = file[stream.tell() :]  # wave stops right after the chunk's header
                frames = len(data) // (_PCM_WIDTH * channels)
            else:
                data = wav.readframes(frames)
    except wave.Error as error:
        raise UsageError(f"{path}: unsupported WAV ({error}); 16-bit PCM WAV is needed") from None
    except EOFError:
        raise UsageError(f"{path}: truncated WAV header") from None
    frame = _PCM_WIDTH * channels
    if 0 < declared < _WAV_STREAMING_SIZE and len(data) < frames * frame:
        raise UsageError(
            f"{path}: truncated: its header announces {frames * frame} bytes of audio "
            f"({frames / rate:.2f} s), the file holds {len(data)} "
            "(repair it, e.g. sox --ignore-length IN.wav OUT.wav)"
        )
    data = data[: len(data) - len(data) % frame]  # a streamed file's last partial frame
    return AudioFile(
        path=path,
        kind="wav",
        encoding="pcm",
        sample_rate=rate,
        channels=channels,
        seconds=len(data) / (_PCM_WIDTH * channels * rate),
        data=data,
    )


def _read_flac(path: Path, data: bytes) -> AudioFile:
    # RFC 9639: "fLaC", then a 4-byte metadata block header (type 0 = STREAMINFO,
    # 34 bytes), then STREAMINFO: 10 bytes of block/frame sizes, then 64 bits of
    # sample rate (20), channels - 1 (3), bits per sample - 1 (5), total samples (36).
    if len(data) < 42 or data[4] & 0x7F != 0 or int.from_bytes(data[5:8]) != 34:
        raise UsageError(f"{path}: FLAC file without a STREAMINFO block first")
    (packed,) = struct.unpack(">Q", data[18:26])
    rate = packed >> 44
    channels = ((packed >> 41) & 0x7) + 1
    total = packed & ((1 << 36) - 1)
    if rate == 0:
        raise UsageError(f"{path}: FLAC STREAMINFO gives a sample rate of 0 Hz")
    if total == 0:
        raise UsageError(
            f"{path}: FLAC STREAMINFO has no total sample count; re-encode the file "
            "(e.g. flac -f IN.wav) so its length is known"
        )
    if channels > 2:
        raise UsageError(f"{path}: {channels} channels; the service takes 1 or 2")
    # The frames themselves, counted as the emulator's clock counts them: a file cut
    # short would otherwise be reported, and paced, as its STREAMINFO's length.
    from .audio import FlacClock
    from .errors import ValidationException

    clock = FlacClock(sample_rate=rate, frame_starts=True)
    try:
        clock.add(data)
        counted = clock.finish()
    except ValidationException as error:
        raise UsageError(f"{path}: {error.message}") from None
    if clock.samples < total:  # whole samples: seconds as floats lose the last one
        raise UsageError(
            f"{path}: truncated: its STREAMINFO announces {total} samples "
            f"({total / rate:.3f} s), its frames hold {clock.samples} ({counted:.3f} s); "
            "re-encode what is left (e.g. flac -d then flac)"
        )
    return AudioFile(
        path=path,
        kind="flac",
        encoding="flac",
        sample_rate=rate,
        channels=channels,
        seconds=total / rate,
        data=data,
        frames=tuple(clock.frame_starts or ()),
    )


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamOptions:
    """Everything :func:`stream_audio` needs besides the audio; see ``stream --help``."""

    endpoint_url: str = DEFAULT_ENDPOINT
    ca_file: Path | None = None
    #: Where ``ca_file`` came from, as errors name it.
    ca_given_as: str = "--ca"
    #: The emulator's CA looked for when none was given (:func:`state_ca_file`),
    #: named when ``ca_file`` is None and the endpoint's certificate is refused.
    state_ca_file: Path = Path(".medscribe") / "ca.pem"
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    domain_id: str = DEFAULT_DOMAIN_ID
    subscription_id: str = DEFAULT_SUBSCRIPTION_ID
    region: str = "us-east-1"
    language_code: str = "en-US"
    realtime: bool = False
    chunk_ms: int = 100
    #: Seconds of the file's audio not sent (see :meth:`AudioFile.starting_at`).
    start_at: float = 0.0
    #: The command made the session id up: the stream starts a new session, whose
    #: audio times are then the file's (see :func:`resume_point`).
    new_session: bool = False
    binary: bool = False
    roles: tuple[str, str] | None = None
    template: str = DEFAULT_TEMPLATE
    output_s3_uri: str = DEFAULT_OUTPUT_S3_URI
    #: A key pair to sign with; None: the emulator's dummy pair, or the SDK's
    #: credential chain against AWS.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


def is_aws_endpoint(endpoint_url: str) -> bool:
    """Return whether ``endpoint_url`` is an AWS host (the real service).

    There the caller's AWS credentials are used; anywhere else, the emulator's
    dummy credentials.
    """
    host = (urlsplit(endpoint_url).hostname or "").lower()
    return host.endswith(_AWS_SUFFIXES)


def default_ca_file(endpoint_url: str, environ: dict[str, str] | None = None) -> Path | None:
    """Return the CA file to trust when ``--ca`` is not given, or None for the system store.

    ``MEDSCRIBE_CA_FILE`` if set; else, unless the endpoint is AWS itself, the
    emulator's ``<state dir>/ca.pem`` (``MEDSCRIBE_STATE_DIR``, default
    ``.medscribe``) when that file exists.
    """
    env = os.environ if environ is None else environ
    if env.get("MEDSCRIBE_CA_FILE"):
        return Path(env["MEDSCRIBE_CA_FILE"])
    if is_aws_endpoint(endpoint_url):
        return None
    candidate = state_ca_file(env)
    try:
        return candidate if candidate.is_file() else None
    except PermissionError:  # another user's state directory, 0700: said when it is used
        return candidate


def state_ca_file(environ: Mapping[str, str] | None = None) -> Path:
    """Return where the emulator's CA is when it runs here: ``<state dir>/ca.pem``,
    the state directory being ``MEDSCRIBE_STATE_DIR`` or ``.medscribe``."""
    env = os.environ if environ is None else environ
    return Path(env.get("MEDSCRIBE_STATE_DIR") or ".medscribe") / "ca.pem"


def ca_file_problem(path: Path) -> str | None:
    """Why the CA file ``path`` cannot be used, or None."""
    try:
        if path.is_file():
            if os.access(path, os.R_OK):
                return None
            return "this user cannot read it"
        return "is a directory" if path.is_dir() else "no such file"
    except PermissionError:
        return (
            "this user cannot reach it (the emulator makes its state directory private "
            "to the user running it): give --ca a copy, fetched from the emulator's "
            "GET /_emulator/ca.pem"
        )


# --------------------------------------------------------------------------- output


@dataclass(kw_only=True, slots=True)
class StreamSummary:
    """What one stream did; ``error`` is ``(type name, message)`` when it failed.

    ``answered``: the service answered the stream, so a session was reached.
    ``session_status`` is that session's stream status as Get gave it after a
    failed stream, None when not looked up or when Get failed.
    """

    session_id: str
    request_id: str | None = None
    answered: bool = False
    session_status: str | None = None
    finals: int = 0
    partials: int = 0
    #: Where the last final received ends in the session's audio (its
    #: ``audioEndOffset``): the session holds at least that much.
    heard_to: float | None = None
    #: The file position the session resumes from if it is PAUSED (see
    #: :func:`resume_point`); the JSON's ``resumeAt`` only once Get said PAUSED.
    resume_at: float | None = None
    #: The file position this stream's audio started at (``--start-at``).
    started_at: float = 0.0
    audio_seconds: float = 0.0
    total_seconds: float = 0.0
    wall_seconds: float = 0.0
    error: tuple[str, str] | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "sessionId": self.session_id,
            "requestId": self.request_id,
            "segments": self.finals,
            "partials": self.partials,
            "audioSeconds": round(self.audio_seconds, 3),
            "wallSeconds": round(self.wall_seconds, 3),
            "error": None if self.error is None else self.error[0],
            # After a failure: the session's status as Get gave it (PAUSED: the
            # command with its id and --start-at resumeAt resumes it), else null.
            "sessionStatus": self.session_status,
            # The last final's audioEndOffset (the session's time), and the file
            # position to resume from when known (see resume_point).
            "lastFinalEnd": self.heard_to,
            "resumeAt": self.resume_at if self.session_status == "PAUSED" else None,
        }


class Renderer(Protocol):
    """Where :func:`stream_audio` reports; every method returns None."""

    def started(self, output: Any) -> None: ...
    def segment(self, segment: Any) -> None: ...
    def unknown(self, tag: str) -> None: ...
    def progress(self, sent: float, total: float) -> None: ...
    def finished(self, summary: StreamSummary) -> None: ...


def _clock(seconds: float | None) -> str:
    tenths = round((seconds or 0.0) * 10)
    minutes, rest = divmod(tenths, 600)
    return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def _speaker(segment: Any, roles: Sequence[str] | None) -> str:
    channel = segment.channel_id
    if not channel:
        return ""
    role = ""
    if roles and channel.startswith("ch_") and channel[3:].isdigit():
        index = int(channel[3:])
        role = roles[index] if index < len(roles) else ""
    return f"{channel} {role}".strip()


def format_final(segment: Any, roles: Sequence[str] | None = None) -> str:
    """Return ``[mm:ss.t-mm:ss.t] ch_N ROLE: text`` (channel and role when known)."""
    speaker = _speaker(segment, roles)
    span = f"[{_clock(segment.audio_begin_offset)}-{_clock(segment.audio_end_offset)}]"
    # One line per result: a line break in a text (a scripted one may hold one)
    # is written as its escape, not as a line that looks like another result.
    text = _LINE_BREAK.sub(_escaped_break, segment.content or "")
    return f"{span} {speaker}: {text}" if speaker else f"{span} {text}"


#: What ends a line for a terminal or str.splitlines().
_LINE_BREAK = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def _escaped_break(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char) or f"\\u{ord(char):04x}"


def segment_json(segment: Any) -> dict[str, object]:
    """Return a transcript segment as the service's wire JSON (absent members left out)."""
    members = {
        "segmentId": segment.segment_id,
        "audioBeginOffset": segment.audio_begin_offset,
        "audioEndOffset": segment.audio_end_offset,
        "isPartial": segment.is_partial,
        "channelId": segment.channel_id,
        "content": segment.content,
    }
    return {
        "transcriptEvent": {
            "transcriptSegment": {k: v for k, v in members.items() if v is not None}
        }
    }


def _summary_line(summary: StreamSummary, *, lead: str = "done") -> str:
    return (
        f"{lead}: {counted(summary.finals, 'segment')} ({counted(summary.partials, 'partial')}), "
        f"{summary.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s, "
        f"session {summary.session_id}"
    )


def resume_point(heard_to: float | None, options: StreamOptions) -> float | None:
    """The file position a session paused by this stream resumes from: its last
    final's end, cut down to the millisecond (never past audio the session holds),
    when the stream started the session with the file from its start, so that
    the session's times are the file's; else None (not known here)."""
    if heard_to is None or not options.new_session or options.start_at:
        return None
    return math.floor(heard_to * 1000 + 1e-6) / 1000


def _seconds_text(seconds: float) -> str:
    """Seconds to the millisecond, without trailing zeros: ``6``, ``15.9``, ``17999.951``."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def _refused_resume(summary: StreamSummary) -> bool:
    """Whether the stream's error is a resume refused for media other than its
    session's (the validation messages say "a resumed stream must ...")."""
    return summary.error is not None and "a resumed stream must" in summary.error[1]


def _if_paused(summary: StreamSummary) -> str:
    """What resumes a session whose status is not known, if it is PAUSED: said
    when the command started it and a final came back, else nothing."""
    if summary.resume_at is None:
        return ""
    return (
        f"; if PAUSED, the same command with --session-id {summary.session_id} --start-at "
        f"{_seconds_text(summary.resume_at)} resumes it from its last final's end (audio "
        "sent after that may not have reached it)"
    )


def _failure_line(summary: StreamSummary, endpoint_url: str) -> str:
    """Return the summary of a failed stream: what it did, its session, and what
    can be done with that session now (resume it, or how to look up its status).

    The status claimed is the one Get gave (``summary.session_status``); a
    stream the service never answered reached no session.
    """
    session = summary.session_id
    look_up = "GetMedicalScribeListeningSession gives it"
    if not is_aws_endpoint(endpoint_url):
        look_up = (
            f"GET /_emulator/sessions/{session} on the emulator's cleartext port, or "
            "GetMedicalScribeListeningSession, gives it"
        )
    status = summary.session_status
    if summary.error is not None and summary.error[0] == "Interrupted" and not summary.answered:
        what = "interrupted before the service answered"
    elif summary.error is not None and summary.error[0] == "Interrupted":
        what = f"its status not looked up: {look_up}{_if_paused(summary)}"
    elif not summary.answered:
        what = "no stream started"
    elif status == "PAUSED" and _refused_resume(summary):
        # Repeated, the same command fails the same way: the file is not the session's.
        what = (
            f"now PAUSED: it resumes with --session-id {session} and audio like its "
            "first stream's (the channels, sample rate, encoding and language the "
            "error names), not this file as given"
        )
    elif status == "PAUSED":
        # The audio the SDK took after the break never reached the session, and
        # the whole file again would give it the start twice: resume from the
        # last final's end, which the session holds at least.
        if summary.resume_at is not None:
            what = (
                f"now PAUSED: the same command with --session-id {session} --start-at "
                f"{_seconds_text(summary.resume_at)} resumes it from its last final's end "
                "(audio sent after that may not have reached it)"
            )
        elif summary.heard_to is not None:
            # A session this command did not start: its times are the file's only
            # if its streams sent the file from the start, once.
            began = summary.started_at
            this = f" (this stream sent it from {_seconds_text(began)} s)" if began else ""
            what = (
                f"now PAUSED: the same command with --session-id {session} and a --start-at "
                "in the file resumes it; its last final ended at "
                f"{_seconds_text(summary.heard_to)} s of the session's audio, a position in "
                f"the file only if the session's streams sent the file from its start, once{this}"
            )
        else:
            what = (
                f"now PAUSED: the same command with --session-id {session} resumes it; "
                "no final came back, so how much of the audio it holds is not known "
                "(--start-at SECONDS skips what it has)"
            )
    elif status == "FAILED":
        what = "now FAILED: a failed session cannot be resumed"
    elif status == "IN_PROGRESS":  # the service has not yet seen the stream end
        what = f"still IN_PROGRESS to the service: {look_up} later"
    elif status is None:
        what = f"its status unknown (Get failed): {look_up}{_if_paused(summary)}"
    else:
        what = f"now {status}"
    return f"{_summary_line(summary, lead='stopped')}, {what}"


class LiveLine:
    """One line redrawn in place on a terminal (``\\r``, clear to end of line, text).

    ``stream=None`` draws nothing. Lines are cut to the terminal width, because a
    wrapped line can no longer be redrawn in place; redraws are throttled to one
    per :data:`REDRAW_SECONDS` unless forced.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._shown = False
        self._drawn_at = -math.inf

    def show(self, prefix: str, text: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not force and now - self._drawn_at < REDRAW_SECONDS):
            return
        self._drawn_at = now
        width = max(shutil.get_terminal_size().columns - 1, 20)
        room = width - _columns(prefix) - 1
        if _columns(text) > room:  # keep the newest words of a long partial
            text = "..." + _last_columns(text, max(room - 3, 0))
        line = _first_columns(f"{prefix} {text}".strip(), width)
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = bool(line)

    def clear(self) -> None:
        if self.stream is not None and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _column_width(char: str) -> int:
    """Terminal columns ``char`` takes: two for East Asian wide and fullwidth
    letters (CJK), none for combining marks, else one."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _columns(text: str) -> int:
    return sum(_column_width(char) for char in text)


def _first_columns(text: str, columns: int) -> str:
    """The longest start of ``text`` that fits in ``columns`` terminal columns."""
    used = 0
    for index, char in enumerate(text):
        used += _column_width(char)
        if used > columns:
            return text[:index]
    return text


def _last_columns(text: str, columns: int) -> str:
    """The longest end of ``text`` that fits in ``columns`` terminal columns."""
    return _first_columns(text[::-1], columns)[::-1]


def _progress_text(sent: float, total: float) -> str:
    return f"[{sent:5.1f}/{total:.1f} s]"


class TextRenderer:
    """Final lines on ``out``; on a terminal, a live line of progress and partials.

    With ``out`` a terminal, the live line (progress, then the newest partial) is
    redrawn in place on ``out`` and finals print above it. Otherwise ``out`` gets
    only final lines, and the progress alone is drawn on ``err`` if that is a
    terminal. The summary of a completed session goes to ``err``; a failed one's
    is kept in :attr:`failed`, for :func:`run` to print after the error line.
    """

    def __init__(self, *, out: TextIO, err: TextIO, roles: Sequence[str] | None = None) -> None:
        self.out, self.err, self.roles = out, err, roles
        self.failed: StreamSummary | None = None
        self.partials_shown = out.isatty()
        self.live = LiveLine(out if out.isatty() else err if err.isatty() else None)
        self._partials: dict[str, str] = {}  # segment id -> rendered partial, newest last
        self._progress = ""

    def started(self, output: Any) -> None:
        pass

    def segment(self, segment: Any) -> None:
        key = segment.segment_id or ""
        self._partials.pop(key, None)
        if segment.is_partial:
            if self.partials_shown:
                self._partials[key] = format_final(segment, self.roles)
                self._redraw(force=True)
            return
        self.live.clear()
        print(format_final(segment, self.roles), file=self.out, flush=True)
        self._redraw(force=True)

    def unknown(self, tag: str) -> None:
        pass

    def progress(self, sent: float, total: float) -> None:
        self._progress = _progress_text(sent, total)
        self._redraw(force=sent >= total)

    def finished(self, summary: StreamSummary) -> None:
        self.live.clear()
        if summary.error is None:
            print(_summary_line(summary), file=self.err, flush=True)
        else:
            self.failed = summary

    def _redraw(self, *, force: bool) -> None:
        newest = next(reversed(self._partials.values()), "")
        self.live.show(self._progress, newest, force=force)


class JsonRenderer:
    """One JSON object per line on ``out``: ``session``, each event, then ``summary``.

    Events keep the service's wire form (``{"transcriptEvent": {...}}``); a failure
    adds ``{"error": {"type", "message"}}`` before the summary. Progress is drawn
    on ``err`` when that is a terminal.
    """

    def __init__(self, *, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.live = LiveLine(err if err.isatty() else None)
        # Text as it is where the output holds it; where it cannot (a Windows
        # code page), JSON's own escapes (\\u00bf) keep every line valid JSON.
        encoding = getattr(out, "encoding", None) or "utf-8"
        self._ascii = not codecs.lookup(encoding).name.startswith("utf-")

    def _emit(self, obj: dict[str, object]) -> None:
        self.live.clear()
        self.out.write(json.dumps(obj, ensure_ascii=self._ascii) + "\n")
        self.out.flush()

    def started(self, output: Any) -> None:
        self._emit(
            {
                "session": {
                    "sessionId": output.session_id,
                    "domainId": output.domain_id,
                    "subscriptionId": output.subscription_id,
                    "requestId": output.request_id,
                    "languageCode": output.language_code,
                    "mediaSampleRateHertz": output.media_sample_rate_hertz,
                    "mediaEncoding": output.media_encoding,
                }
            }
        )

    def segment(self, segment: Any) -> None:
        self._emit(segment_json(segment))

    def unknown(self, tag: str) -> None:
        self._emit({"unknownEvent": {"tag": tag}})

    def progress(self, sent: float, total: float) -> None:
        self.live.show(_progress_text(sent, total), force=sent >= total)

    def finished(self, summary: StreamSummary) -> None:
        if summary.error is not None:
            self._emit({"error": {"type": summary.error[0], "message": summary.error[1]}})
        self._emit({"summary": summary.to_json()})


# --------------------------------------------------------------------------- streaming


class StreamReset(Exception):
    """The output ended cleanly but the input could not finish: the stream was reset."""


class Unconfirmed(Exception):
    """The stream ended after its last audio, as a completed session's and a reset
    one's do, and the session's status, which tells them apart, could not be looked up."""


#: The message of a stream stopped because its output was closed (``| head -1``).
OUTPUT_CLOSED = "output closed by its reader"


class OutputClosed(BrokenPipeError):
    """The renderer's output was closed under the stream (its reader stopped
    reading), which then stopped: ``summary`` is what it did."""

    def __init__(self, summary: StreamSummary) -> None:
        super().__init__(OUTPUT_CLOSED)
        self.summary = summary


class OutputFailed(Exception):
    """The renderer's output could not be written (a full disk, an I/O error),
    so the stream stopped: ``summary`` is what it did, its error ``OutputError``."""

    def __init__(self, summary: StreamSummary) -> None:
        assert summary.error is not None
        super().__init__(summary.error[1])
        self.summary = summary


class _Unwritable(Exception):
    """A write of the renderer failed with ``error`` (not a closed pipe)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))


def resolve_roles(audio: AudioFile, roles: tuple[str, str] | None) -> tuple[str, str] | None:
    """Return the channel roles to declare: ``roles``, or the default for 2 channels.

    Raises :class:`UsageError` when roles are given for a 1-channel file.
    """
    if audio.channels == 1:
        if roles is not None:
            raise UsageError(f"--channels needs a 2-channel file; {audio.path} has 1 channel")
        return None
    return roles or DEFAULT_ROLES


def _request(
    audio: AudioFile, options: StreamOptions, roles: tuple[str, str] | None
) -> tuple[Any, Any, Callable[[bytes], Any], Any]:
    """Return the SDK input, configuration event, audio event maker and END_OF_SESSION."""
    from aws_sdk_connecthealth import models as m

    config: dict[str, Any] = {}
    if roles is not None:
        config["channel_definitions"] = [
            m.MedicalScribeChannelDefinition(channel_id=index, participant_role=role)
            for index, role in enumerate(roles)
        ]
    configuration = m.MedicalScribeInputStreamConfigurationEvent(
        value=m.MedicalScribeConfigurationEvent(
            post_stream_action_settings=m.MedicalScribePostStreamActionSettings(
                output_s3_uri=options.output_s3_uri,
                clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
                    note_template_settings=m.NoteTemplateSettingsManagedTemplate(
                        value=m.ManagedTemplate(template_type=options.template)
                    )
                ),
            ),
            **config,
        )
    )

    def audio_event(chunk: bytes) -> Any:
        if options.binary:
            return m.MedicalScribeInputStreamBinaryAudioEvent(
                value=m.MedicalScribeBinaryAudioEvent(audio_chunk=chunk)
            )
        return m.MedicalScribeInputStreamAudioEvent(
            value=m.MedicalScribeAudioEvent(audio_chunk=chunk)
        )

    end = m.MedicalScribeInputStreamSessionControlEvent(
        value=m.MedicalScribeSessionControlEvent(type="END_OF_SESSION")
    )
    request = m.StartMedicalScribeListeningSessionInput(
        session_id=options.session_id,
        domain_id=options.domain_id,
        subscription_id=options.subscription_id,
        language_code=options.language_code,
        media_sample_rate_hertz=audio.sample_rate,
        media_encoding=audio.encoding,
    )
    return request, configuration, audio_event, end


class _Credentials(TypedDict, total=False):
    """:func:`~emulator.sdk.make_client`'s credential arguments: all or none."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None


async def _client(options: StreamOptions) -> Any:
    from .sdk import crt_transport, make_client, resolve_config

    try:
        transport = crt_transport(ca_file=options.ca_file)
    except FileNotFoundError as error:
        raise UsageError(f"{options.ca_given_as}: {error}") from None
    except ValueError as error:  # names the file: not a usable PEM CA certificate
        raise UsageError(f"{options.ca_given_as} {error}") from None
    credentials: _Credentials = {}
    if options.access_key_id is not None and options.secret_access_key is not None:
        credentials = {
            "access_key_id": options.access_key_id,
            "secret_access_key": options.secret_access_key,
            "session_token": options.session_token,
        }
    try:
        if credentials or not is_aws_endpoint(options.endpoint_url):
            return await make_client(
                endpoint_url=options.endpoint_url,
                ca_file=options.ca_file,
                region=options.region,
                transport=transport,
                **credentials,
            )
        # The real service: the caller's own credentials, from the SDK's usual chain.
        config = await resolve_config(
            endpoint_uri=options.endpoint_url, region=options.region, transport=transport
        )
    except ValueError as error:  # an AWS_PROFILE naming no profile
        raise UsageError(str(error)) from None
    from aws_sdk_connecthealth.client import AsyncConnectHealthClient

    client = AsyncConnectHealthClient(config=config)
    try:
        await _check_credentials(client, options)
    except UsageError:
        async with client:  # closes its transport
            pass
        raise
    return client


async def _check_credentials(client: Any, options: StreamOptions) -> None:
    """Resolve the caller's AWS credentials before the stream, raising
    :class:`UsageError` when there are none.

    The SDK resolves them inside the stream request's own task, and when that
    fails the call to start the stream waits for ever (aws-sdk-connecthealth
    0.4: its request future is never set): the command hung, silent.
    """
    from smithy_core.exceptions import SmithyError

    ensure_setup = getattr(client, "_ensure_setup", None)  # where the SDK builds its chain
    if ensure_setup is None:
        return
    resolver = getattr(await ensure_setup(), "aws_credentials_identity_resolver", None)
    if resolver is None:
        return
    try:
        await resolver.get_identity(properties={})
    except SmithyError as error:
        raise UsageError(
            f"no AWS credentials for {options.endpoint_url}: {error} (set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or --access-key-id and "
            "--secret-access-key)"
        ) from None


def _failure(
    error: BaseException, options: StreamOptions, *, responded: bool, events: int
) -> tuple[str, str]:
    """Return ``(type, message)`` for a failed stream.

    A service error keeps its shape name and message and a reset stream is
    ``StreamReset``. A transport failure is a ``ConnectionError`` ("cannot reach"
    the endpoint) only when connecting failed: before any response, in the socket,
    DNS or TLS layer, or a timeout. Anything else that broke the exchange (a
    corrupt frame, a connection dropped once connected) is a ``StreamError``
    saying whether the response had started and how many events came before.
    """
    from smithy_core.exceptions import CallError, ClientTimeoutError

    # The transport's own time-out; a 408 answer is also a "timeout error" to
    # smithy, but an answer: a service error like the others.
    timeout = isinstance(error, ClientTimeoutError)
    if isinstance(error, CallError) and not timeout:  # modeled and unmodeled service errors
        return type(error).__name__, str(getattr(error, "message", None) or error)
    if isinstance(error, StreamReset):
        return "StreamReset", str(error)
    if isinstance(error, Unconfirmed):
        return "Unconfirmed", str(error)
    url = options.endpoint_url
    # The SDK wraps transport failures in a bare SmithyError (or a timeout error).
    crt = _crt_cause(error)
    detail = f"{crt.name}: {crt.message}" if crt is not None else str(error) or type(error).__name__
    if responded:
        noun = "event" if events == 1 else "events"
        return (
            "StreamError",
            f"the response stream from {url} broke after {events} {noun}: {detail}",
        )
    # awscrt's socket, DNS and TLS errors are all AWS_IO_*; AWS_ERROR_HTTP_* come later.
    connecting = (
        timeout or isinstance(error, OSError) or crt is not None and _connect_error(crt.name)
    )
    if not connecting:
        return "StreamError", f"the request to {url} failed before any response: {detail}"
    if crt is not None and ("TLS" in crt.name or "PKI" in crt.name):
        detail += _tls_hint(options)
    elif crt is not None and crt.name == "AWS_IO_SOCKET_CLOSED":
        # What a cleartext port does with a TLS handshake.
        detail += " (is it the emulator's TLS port? its cleartext port takes no https://)"
    return "ConnectionError", f"cannot reach {url}: {detail}"


def _tls_hint(options: StreamOptions) -> str:
    """What to check when the endpoint's certificate was refused."""
    from .tls import DEFAULT_HOSTNAMES

    host = urlsplit(options.endpoint_url).hostname or "its host"
    names = (
        f"{host} a name the certificate holds? The emulator's names "
        f"{', '.join(DEFAULT_HOSTNAMES)} and those its --tls-hostname "
        "(MEDSCRIBE_TLS_HOSTNAME) adds"
    )
    if _ca_forgotten(options):
        return (
            f" ({_no_ca_given(options)}, so the system trust store was used: give --ca the "
            f"CA that signs the certificate; the emulator's is {_EMULATOR_CA}. And is {names})"
        )
    return f" (is the endpoint https://, --ca the certificate that signs it, and {names})"


#: Where an emulator's CA is, for a user who gave none.
_EMULATOR_CA = (
    "ca.pem in its state directory (--state-dir; .medscribe where it was started, by "
    "default), or a copy from GET /_emulator/ca.pem on its cleartext port (8080 by default)"
)

#: OpenSSL's verify results for a chain that ends at no trusted CA (x509_vfy.h):
#: unable to get issuer certificate, self-signed leaf, self-signed certificate in
#: the chain, unable to get the local issuer, unable to verify the leaf's signature.
_UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21})


def _ca_forgotten(options: StreamOptions) -> bool:
    """Whether no CA was given for an emulator (AWS itself needs none)."""
    return options.ca_file is None and not is_aws_endpoint(options.endpoint_url)


def _no_ca_given(options: StreamOptions) -> str:
    looked = options.state_ca_file
    where = "" if looked.is_absolute() else " in this directory"
    return f"no CA was given (no --ca, no MEDSCRIBE_CA_FILE, no {looked}{where})"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Refusal:
    """Python's TLS check refused the endpoint's certificate: ``message`` says why.

    ``final``: the refusal is certain for the SDK too, and the command stops.
    """

    message: str
    final: bool


async def _untrusted(options: StreamOptions) -> _Refusal | None:
    """Return why Python's own TLS check refuses the endpoint's certificate, or
    None (trusted, or not reached).

    Advice only (a ``note:``), as the SDK's check is not Python's (its trust
    store, intermediates, names) and the SDK decides; except when no CA was
    given and the certificate is one an emulator issued from its local CA,
    which no system trust store holds unless a user put it there: then the
    refusal is ``final``, a ``ConnectionError`` message.

    The SDK's TLS client waits 10-30 s before it reports a refused certificate
    (s2n's "blinding" delay): a CA forgotten, the likeliest first mistake,
    looked like a hang.
    """
    url = options.endpoint_url
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return None
    address = (parts.hostname, parts.port or 443)
    try:
        context = ssl.create_default_context(
            cafile=None if options.ca_file is None else str(options.ca_file)
        )
        await _close(await _handshake(address, context))
    except ssl.SSLCertVerificationError as error:
        reason = error.verify_message or str(error)
        if error.verify_code in _UNTRUSTED_ISSUER and _ca_forgotten(options):
            if await _emulator_issued(address):
                return _Refusal(
                    message=(
                        f"cannot reach {url}: its certificate is the emulator's, whose CA "
                        f"the system trust store does not hold (Python's TLS check: "
                        f"{reason}), and {_no_ca_given(options)}. Give the emulator's CA "
                        f"with --ca: {_EMULATOR_CA}"
                    ),
                    final=True,
                )
        elif (
            error.verify_code in _UNTRUSTED_ISSUER
            and options.ca_file is not None
            and not is_aws_endpoint(url)
            and _only_emulator_cas(options.ca_file)
            and await _emulator_issued(address)
        ):
            # The SDK trusts only that file's CAs too, none of which signs it: it
            # would refuse it after 10-30 s. (A file holding the server's own
            # certificate, which the SDK takes and Python does not, gets the note.)
            given = options.ca_given_as
            ca = (
                f"{given} ({options.ca_file})"
                if given.startswith("the ")
                else f"the CA given with {given} ({options.ca_file})"
            )
            return _Refusal(
                message=(
                    f"cannot reach {url}: its certificate is an emulator's, and {ca} "
                    "does not sign it "
                    f"(Python's TLS check: {reason}): it is another emulator's CA, or an "
                    "older one of this emulator's (started since with another --state-dir, "
                    f"or its state directory removed). Give this emulator's: {_EMULATOR_CA}"
                ),
                final=True,
            )
        return _Refusal(
            message=(
                f"note: Python's TLS check refuses {url}'s certificate ({reason}); if the "
                f"SDK's refuses it too, it says so only after 10-30 s{_tls_hint(options)}"
            ),
            final=False,
        )
    except (OSError, TimeoutError, ValueError):
        return None
    return None


async def _handshake(address: tuple[str, int], context: ssl.SSLContext) -> asyncio.StreamWriter:
    """Return a writer on a TLS connection to ``address``, made within 5 s.

    Raises what :func:`asyncio.open_connection` raises (``TimeoutError`` after 5 s).
    """
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.wait_for(asyncio.open_connection(*address, ssl=context), 5)
    return writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


def _only_emulator_cas(path: Path) -> bool:
    """Whether ``path`` holds certificates, all of them emulators' local CAs."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from .tls import CA_NAME

    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return False
    return bool(certificates) and all(
        [name.value for name in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        == [CA_NAME]
        for cert in certificates
    )


async def _emulator_issued(address: tuple[str, int]) -> bool:
    """Whether the certificate served at ``address`` comes from an emulator's local CA
    (its issuer's name is the one :mod:`emulator.tls` gives that CA)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from .tls import CA_NAME

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read the certificate, never to trust it
    try:
        writer = await _handshake(address, context)
    except (OSError, TimeoutError, ValueError):
        return False
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        await _close(writer)
    if der is None:
        return False
    try:
        issuer = x509.load_der_x509_certificate(der).issuer
    except ValueError:
        return False
    names = issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(name.value == CA_NAME for name in names)


def _crt_cause(error: BaseException) -> Any:
    """Return the first awscrt error in ``error``'s chain of causes, or None."""
    from awscrt.exceptions import AwsCrtError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, AwsCrtError):
            return seen
        seen = seen.__cause__
    return None


def _connect_error(name: str) -> bool:
    """Whether an awscrt error name is a failure to connect: socket, DNS or TLS/PKI."""
    return name.startswith("AWS_IO_") or "TLS" in name or "PKI" in name


async def stream_audio(
    audio: AudioFile, options: StreamOptions, *, renderer: Renderer
) -> StreamSummary:
    """Stream ``audio`` as one session and report to ``renderer``; return the summary.

    Failures are not raised but set ``summary.error`` to ``(type, message)``: a
    modeled service error (shape name, before or during the stream), a stream
    that ended before all audio was sent or before END_OF_SESSION took effect
    (``StreamReset``), one that ended after its last audio while Get could not
    say whether its session completed (``Unconfirmed``), an endpoint that
    cannot be reached (``ConnectionError``), or an exchange that broke once
    connected, such as a corrupt frame in the response (``StreamError``). Raises
    :class:`UsageError` for a bad chunk size, channel roles or CA file, and
    :class:`OutputClosed` when the renderer's output was closed under it (its
    summary's error ``OutputClosed``, the session's status looked up).
    """
    from awscrt.exceptions import AwsCrtError
    from smithy_core.exceptions import SmithyError

    roles = resolve_roles(audio, options.roles)
    chunks = audio.chunks(options.chunk_ms)
    request, configuration, audio_event, end = _request(audio, options, roles)
    summary = StreamSummary(
        session_id=options.session_id, total_seconds=audio.seconds, started_at=options.start_at
    )
    started = time.monotonic()
    output_closed = False
    responded = False  # the response has begun: the endpoint was reached
    received = 0  # output events decoded, known or not

    async def send_all(stream: Any) -> None:
        await stream.input_stream.send(configuration)
        renderer.progress(0.0, audio.seconds)
        origin = time.monotonic()  # the audio clock starts with the first audio event
        for chunk in chunks:
            if options.realtime:
                # A live microphone delivers each chunk once it has been recorded.
                delay = origin + chunk.end_seconds - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await stream.input_stream.send(audio_event(chunk.data))
            summary.audio_seconds = chunk.end_seconds
            renderer.progress(chunk.end_seconds, audio.seconds)
        await stream.input_stream.send(end)
        await stream.input_stream.close()

    async def receive_all(stream: Any) -> None:
        try:
            await _receive_all(stream)
        except BrokenPipeError:
            raise
        except OSError as error:  # our output, not the service's stream
            raise _Unwritable(error) from error

    async def _receive_all(stream: Any) -> None:
        nonlocal responded, received
        output, events = await stream.await_output()
        responded = summary.answered = True
        summary.request_id = output.request_id
        renderer.started(output)
        async for event in events:
            received += 1
            # Unknown events have a tag and no value; transcript events carry a segment.
            segment = getattr(getattr(event, "value", None), "transcript_segment", None)
            if segment is not None:
                if segment.is_partial:
                    summary.partials += 1
                else:
                    summary.finals += 1
                    end = segment.audio_end_offset
                    if end is not None and (summary.heard_to is None or end > summary.heard_to):
                        summary.heard_to = end
                renderer.segment(segment)
            elif hasattr(event, "tag"):
                renderer.unknown(event.tag)

    def finish() -> None:
        if not output_closed:
            renderer.finished(summary)
            return
        # Its writes to the closed (or failing) output fail again: it clears its
        # live line, if any.
        with contextlib.suppress(OSError):
            renderer.finished(summary)

    refusal = await _untrusted(options)
    if refusal is not None and refusal.final:
        summary.error = ("ConnectionError", refusal.message)
        summary.wall_seconds = time.monotonic() - started
        renderer.finished(summary)
        return summary
    if refusal is not None:
        print(refusal.message, file=sys.stderr, flush=True)
    client = await _client(options)  # make_client quiets awscrt's completed body writer
    try:
        async with client:
            stream = await client.start_medical_scribe_listening_session(input=request)
            sender = asyncio.create_task(send_all(stream))
            receiver = asyncio.create_task(receive_all(stream))
            try:
                try:
                    await _settle(sender, receiver)
                except StreamReset:
                    if summary.audio_seconds < audio.seconds - 1e-9:
                        raise
                    # Every audio event went, and the END_OF_SESSION or the close
                    # did not: what the session's status says, as below.
                    await _check_completed(client, request)
            finally:
                await _stop(sender, receiver)
            await _check_completed(client, request)
    except BrokenPipeError:  # our own output closed (| head -1): the stream stops here
        summary.error = ("OutputClosed", OUTPUT_CLOSED)
        output_closed = True
    except _Unwritable as error:  # a full disk under --json > events.jsonl
        summary.error = ("OutputError", f"cannot write the output: {error}")
        output_closed = True
    except (SmithyError, AwsCrtError, StreamReset, Unconfirmed, OSError) as error:
        summary.error = _failure(error, options, responded=responded, events=received)
        if not responded:
            # Refused or unreachable: what the SDK had queued never reached a session.
            summary.audio_seconds = 0.0
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
        summary.error = ("Interrupted", "interrupted before the session ended")
        if not responded:
            # What the SDK had queued (while its TLS client waited, say) reached no
            # session that answered: not audio sent.
            summary.audio_seconds = 0.0
        else:
            # Not looked up (the user wants out), so where a PAUSED session would
            # resume is said as such.
            summary.resume_at = resume_point(summary.heard_to, options)
        summary.wall_seconds = time.monotonic() - started
        renderer.finished(summary)
        raise
    summary.wall_seconds = time.monotonic() - started
    if summary.error is not None and responded:
        # Whether the session can be resumed: only Get knows (a reset leaves it
        # PAUSED, an in-stream exception FAILED).
        try:
            summary.session_status = await _session_status(options, request)
        except asyncio.CancelledError:
            summary.error = ("Interrupted", "interrupted before the session ended")
            summary.resume_at = resume_point(summary.heard_to, options)
            finish()
            raise
    summary.resume_at = resume_point(summary.heard_to, options)  # if PAUSED
    finish()
    if output_closed and summary.error is not None and summary.error[0] == "OutputError":
        raise OutputFailed(summary)
    if output_closed:
        raise OutputClosed(summary)
    return summary


#: Error types a service gives a request whose signature or key it refuses.
_SIGNING_ERRORS = frozenset(
    {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}
)


def _dummy_pair_note(options: StreamOptions, error: tuple[str, str]) -> str | None:
    """Return what to do when the dummy key pair was refused, or None.

    The command signs with the emulator's dummy pair when given none; an emulator
    run with --verify-signatures refuses it for a signature that does not match
    or an access key id it does not know (its own messages say which), and the
    dummy pair's id, AKIDEXAMPLE, is also the README's example id: the user saw
    the right id refused and looked for a signing bug.
    """
    from .sdk import DUMMY_ACCESS_KEY_ID

    kind, message = error
    if options.access_key_id is not None or is_aws_endpoint(options.endpoint_url):
        return None
    lowered = message.lower()
    if kind not in _SIGNING_ERRORS or not any(
        word in lowered for word in ("signature", "access key id", "security token")
    ):
        return None
    return (
        f"no key pair was given, so the command signed with its dummy pair (access key id "
        f"{DUMMY_ACCESS_KEY_ID}, a secret of its own): give the pair the emulator verifies "
        "with --access-key-id and --secret-access-key (or MEDSCRIBE_ACCESS_KEY_ID and "
        "MEDSCRIBE_SECRET_ACCESS_KEY)"
    )


def _discard(out: TextIO) -> None:
    """Send whatever ``out`` still holds, and writes to its descriptor, to /dev/null."""
    try:
        fileno = out.fileno()
    except (OSError, ValueError):  # not a file (a test's StringIO)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fileno)
    finally:
        os.close(devnull)


def _quiet_crt_cancel(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """Return an unraisable-exception hook that drops awscrt's report of a cancelled read.

    On Ctrl-C the pending read of the output is cancelled; awscrt's I/O thread then
    resolves that future anyway and Python reports the InvalidStateError it raises.
    """

    def quiet(unraisable: Any) -> object:
        from concurrent.futures import InvalidStateError

        if isinstance(unraisable.exc_value, InvalidStateError):
            return None
        return hook(unraisable)

    return quiet


#: How long a session may still read IN_PROGRESS once its stream ended cleanly.
SETTLE_SECONDS = 2.0
#: How long, beyond that, looking up a failed stream's session may take.
LOOK_UP_SECONDS = 5.0


async def _check_completed(client: Any, request: Any) -> None:
    """Raise :class:`StreamReset` unless Get says the session completed, and
    :class:`Unconfirmed` when Get fails.

    A stream reset or closed after the last audio event ends its output just as
    a whole session does, and its input may all have gone (into the
    connection's window): only the session's status tells them apart (a PAUSED
    session wrote no artifacts). A Get that fails leaves the end unknown, which
    is no completion: the endpoint may have gone (the emulator stopped
    mid-stream) or, refusing the look-up, may hold the session PAUSED.
    """
    from smithy_core.exceptions import SmithyError

    try:
        status = await _look_up_settled(client, request)
    except SmithyError as error:
        kind = type(error).__name__
        said = f"{kind}: {getattr(error, 'message', None) or error}"
        hint = (
            ": allow the identity GetMedicalScribeListeningSession to have it confirmed"
            if kind == "AccessDeniedException"  # the identity may stream, not look up
            else ""
        )
        raise Unconfirmed(
            "the stream ended after the last audio as a completed session's does, and as "
            "one reset before END_OF_SESSION took effect does; looking up the session to "
            f"tell which failed ({said}){hint}"
        ) from error
    if status != "COMPLETED":
        raise StreamReset(
            f"the stream ended after the last audio with the session {status}, not "
            "COMPLETED: it was reset or closed before END_OF_SESSION took effect"
        )


async def _settled_status(client: Any, request: Any) -> str | None:
    """Return the stream status Get gives for ``request``'s session once it is no
    longer IN_PROGRESS, or still IN_PROGRESS after :data:`SETTLE_SECONDS`; None
    when Get fails (an SDK error: refused, or unreachable)."""
    from smithy_core.exceptions import SmithyError

    try:
        return await _look_up_settled(client, request)
    except SmithyError:
        return None


async def _look_up_settled(client: Any, request: Any) -> str:
    """:func:`_settled_status`, raising the SDK's error when Get fails."""
    from aws_sdk_connecthealth import models as m

    ids = m.GetMedicalScribeListeningSessionInput(
        session_id=request.session_id,
        domain_id=request.domain_id,
        subscription_id=request.subscription_id,
    )
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        got = await client.get_medical_scribe_listening_session(input=ids)
        status = str(got.medical_scribe_listening_session_details.stream_status)
        if status != "IN_PROGRESS" or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def _session_status(options: StreamOptions, request: Any) -> str | None:
    """Return the status of the session a failed stream left (see
    :func:`_settled_status`), asked on a client of its own, or None when it
    cannot be asked."""
    from awscrt.exceptions import AwsCrtError

    try:
        # Bounded: the SDK retries a Get it cannot send, and the command is on its way out.
        async with asyncio.timeout(SETTLE_SECONDS + LOOK_UP_SECONDS):
            client = await _client(options)
            async with client:
                return await _settled_status(client, request)
    except (UsageError, AwsCrtError, OSError, TimeoutError):
        return None


async def _settle(sender: asyncio.Task[None], receiver: asyncio.Task[None]) -> None:
    """Wait for the receiver to finish and the sender to finish or become hopeless.

    Returns when the session completed. Raises the receiver's exception (the
    service's error) if it failed, else the sender's, and :class:`StreamReset`
    when the output ended cleanly but the input could not finish within
    :data:`INPUT_GRACE_SECONDS` (the SDK's input publisher hangs on a reset stream).
    A failed sender first gives the receiver that long to deliver the service's
    own, more telling, error.
    """
    done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    if sender in done and sender.exception() is not None:
        await asyncio.wait({receiver}, timeout=INPUT_GRACE_SECONDS)
        if receiver.done() and receiver.exception() is not None:
            raise receiver.exception()  # type: ignore[misc]
        raise sender.exception()  # type: ignore[misc]
    if receiver not in done:
        await asyncio.wait({receiver})
    if receiver.exception() is not None:
        raise receiver.exception()  # type: ignore[misc]
    finished, _ = await asyncio.wait({sender}, timeout=INPUT_GRACE_SECONDS)
    if not finished:
        raise StreamReset("the service ended the stream before all audio was sent")
    if sender.exception() is not None:
        raise sender.exception()  # type: ignore[misc]


#: How often :func:`_stop` cancels a task that is still running.
STOP_RETRY_SECONDS = 0.05


async def _stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel ``tasks`` and wait for them to end.

    One cancel does not stop the SDK's input publisher in ``close()``: cancelled
    while it writes the end frame (its buffer full, as on a stream reset that
    came after the last audio), it flushes that buffer in a ``finally``, which
    waits for ever. A task still running is therefore cancelled again (a second
    cancel ends that wait) until it has ended; no task here ignores every
    cancel, so this ends.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_RETRY_SECONDS)
    await asyncio.gather(*tasks, return_exceptions=True)


def run(
    path: str | Path,
    options: StreamOptions,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    json_lines: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Stream the file at ``path`` and print the results; return the exit code.

    :data:`EXIT_OK` when the session completed; :data:`EXIT_SERVICE_ERROR` after a
    service error, a stream reset, an unreachable endpoint or a broken response
    stream; :data:`EXIT_USAGE` for a bad file or option (130 on Ctrl-C,
    :data:`EXIT_OUTPUT_CLOSED` when ``out`` is a pipe its reader closed). Every
    failure is one ``error: ...`` line on ``err``; nothing is raised for them.
    A failed stream's error line is followed by a ``note:`` when the dummy key
    pair was refused and, without ``json_lines`` or when ``out`` was closed, by
    the ``stopped: ...`` summary naming the session and what can be done with it.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err

    def fail(code: int, message: str) -> int:
        print(f"error: {message}", file=err, flush=True)
        return code

    try:
        audio = read_audio(path, sample_rate=sample_rate, channels=channels)
        audio = audio.starting_at(options.start_at)
        if not audio.data and options.new_session:
            raise UsageError(
                f"--start-at {options.start_at} leaves none of {path}'s audio: that completes "
                "a paused session given by --session-id, and would start an empty one"
            )
        roles = resolve_roles(audio, options.roles)
        audio.chunks(options.chunk_ms)  # refuse an oversized chunk before connecting
        if options.ca_file is not None and (what := ca_file_problem(options.ca_file)):
            raise UsageError(f"{options.ca_given_as} {options.ca_file}: {what}")
    except UsageError as error:
        return fail(EXIT_USAGE, str(error))
    try:
        import aws_sdk_connecthealth  # noqa: F401
    except ImportError:
        return fail(
            EXIT_USAGE,
            "the stream command needs the AWS SDK: pip install 'medscribe-emulator[sdk]' "
            "(or aws-sdk-connecthealth)",
        )
    if (problem := sdk_problem("the stream command")) is not None:
        return fail(EXIT_USAGE, problem)

    renderer: Renderer
    if json_lines:
        renderer = JsonRenderer(out=out, err=err)
    else:
        renderer = TextRenderer(out=out, err=err, roles=roles)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_crt_cancel(previous_hook)

    def stopped(
        code: int, message: str, summary: StreamSummary | None, *, output_gone: bool = False
    ) -> int:
        fail(code, message)
        if summary is None or summary.error is None:
            return code
        if (note := _dummy_pair_note(options, summary.error)) is not None:
            print(f"note: {note}", file=err, flush=True)
        # --json printed its summary, unless its output is gone.
        if isinstance(renderer, TextRenderer) or output_gone:
            print(_failure_line(summary, options.endpoint_url), file=err, flush=True)
        return code

    # SIGTERM (a CI job's timeout, timeout(1), docker stop) stops the stream as
    # Ctrl-C does, with its summary naming the session: it ended the process
    # with neither (exit 143).
    terminated = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    try:
        previous_sigterm: Any = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (an embedding test): left alone
        previous_sigterm = None
    try:
        summary = asyncio.run(stream_audio(audio, options, renderer=renderer))
    except KeyboardInterrupt:
        interrupted = renderer.failed if isinstance(renderer, TextRenderer) else None
        if terminated:
            return stopped(EXIT_TERMINATED, "terminated (SIGTERM)", interrupted)
        return stopped(130, "interrupted", interrupted)
    except UsageError as error:
        return fail(EXIT_USAGE, str(error))
    except OutputClosed as closed:
        # The reader of our output has gone: point the output at /dev/null so
        # that the interpreter's last flush does not complain, and name the
        # session it left on stderr, as Ctrl-C does.
        _discard(out)
        try:
            return stopped(EXIT_OUTPUT_CLOSED, OUTPUT_CLOSED, closed.summary, output_gone=True)
        except BrokenPipeError:  # stderr went with it (2>&1 | head -1)
            _discard(err)
            return EXIT_OUTPUT_CLOSED
    except BrokenPipeError:
        # Closed after the stream had ended (--json's summary line): nothing left to say.
        _discard(out)
        return EXIT_OUTPUT_CLOSED
    except OutputFailed as failed:
        # The output cannot be written (a full disk): the session is named on
        # stderr, as for a closed output, and the interpreter's last flush of
        # what is left is not tried.
        _discard(out)
        return stopped(EXIT_SERVICE_ERROR, str(failed), failed.summary, output_gone=True)
    except OSError as error:
        # Written after the stream had ended (--json's summary line).
        _discard(out)
        return fail(EXIT_SERVICE_ERROR, f"cannot write the output: {error.strerror or error}")
    finally:
        sys.unraisablehook = previous_hook
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
    if summary.error is None:
        return EXIT_OK
    return stopped(EXIT_SERVICE_ERROR, f"{summary.error[0]}: {summary.error[1]}", summary)
