"""The audio clock: how many seconds of audio a session has received.

Sans-IO and push style: the session hands every audio chunk to a clock's
:meth:`~PcmClock.add` and reads :attr:`~PcmClock.seconds`; scenario segments and
faults are placed on this clock.

* ``pcm`` is 16-bit signed little-endian, so a second is
  ``2 bytes x channels x sample rate`` bytes; only whole sample frames count.
* ``flac`` carries no fixed byte rate, so :class:`FlacClock` parses the stream
  incrementally (RFC 9639): the ``fLaC`` marker, the metadata blocks, then frame
  headers. A frame's samples count once the frame is complete, that is when the
  next frame header has arrived, or at :meth:`FlacClock.finish` for the last one
  if its bytes end with their CRC-16 (a frame cut short is not audio received).
  A header out of sequence (a frame missing), or saying another rate, channel
  count or sample size, is an error once the frame before it is known to end
  there (its CRC-16 checks); so are bytes running past the longest the pending
  frame can be. STREAMINFO's total sample count is not used: live encoders
  write 0 there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .errors import ValidationException

__all__ = ["MAX_AUDIO_CHUNK_BYTES", "PcmClock", "FlacClock", "make_clock"]

#: The service accepts at most 32,000 bytes of audio in one audio event (WIRE.md);
#: the session rejects a larger chunk before it reaches a clock.
MAX_AUDIO_CHUNK_BYTES: Final = 32_000

_PCM_SAMPLE_BYTES: Final = 2  # 16-bit signed little-endian

_FLAC_MARKER: Final = b"fLaC"
_METADATA_HEADER_BYTES: Final = 4
_STREAMINFO: Final = 0
_STREAMINFO_BYTES: Final = 34
_INVALID_BLOCK_TYPE: Final = 127
# Longest frame header (RFC 9639 9.1): 4 fixed bytes, a 7-byte coded sample
# number, 2 bytes each of block size and sample rate, 1 byte of CRC-8. The
# frame scanner never holds more than this, whatever the frame sizes.
_MAX_FRAME_HEADER_BYTES: Final = 16

# Frame header sample rate codes 1-11 (RFC 9639 9.1.2); 0 means "see STREAMINFO".
_SAMPLE_RATES: Final = {
    1: 88_200,
    2: 176_400,
    3: 192_000,
    4: 8_000,
    5: 16_000,
    6: 22_050,
    7: 24_000,
    8: 32_000,
    9: 44_100,
    10: 48_000,
    11: 96_000,
}
# Frame header sample size codes (RFC 9639 9.1.4); 0 means "see STREAMINFO", 3 is reserved.
_SAMPLE_SIZES: Final = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}


def _crc8_table() -> tuple[int, ...]:
    # CRC-8 of the frame header: polynomial x^8 + x^2 + x + 1, initial value 0.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8: Final = _crc8_table()


def _crc8(data: bytes | bytearray) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16_table() -> tuple[int, ...]:
    # CRC-16 of a whole frame (its footer): polynomial x^16 + x^15 + x^2 + 1, initial 0.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC16: Final = _crc16_table()


#: What a FLAC file may end with after its last frame: ID3v1, APEv2 and ID3v2 tags.
_TRAILING_TAGS: Final = (b"TAG", b"APETAGEX", b"ID3")


def _frame_ends_at(buf: bytearray | memoryview, header_length: int, ends: set[int]) -> bool:
    """Whether the frame at the start of ``buf`` ends at one of ``ends``: the CRC-16
    of its bytes up to there, its footer included, is 0 (at least a subframe's
    header byte after the frame's header). One pass in Python: run once a stream,
    or on a header out of sequence, never per audio event."""
    crc = 0
    table = _CRC16
    least = header_length + 3
    for position, byte in enumerate(memoryview(buf)[: max(ends)], 1):
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
        if not crc and position >= least and position in ends:
            return True
    return False


class PcmClock:
    """The clock of a 16-bit little-endian PCM stream of ``channels`` channels.

    Raises :class:`ValueError` for a non-positive rate or a channel count other
    than 1 or 2.
    """

    def __init__(self, *, sample_rate: int, channels: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame_bytes = _PCM_SAMPLE_BYTES * channels
        self._bytes = 0
        self._finished = False

    @property
    def bytes_received(self) -> int:
        """Audio bytes added so far."""
        return self._bytes

    @property
    def seconds(self) -> float:
        """Seconds of audio received; a trailing partial sample frame waits for its rest."""
        return (self._bytes // self._frame_bytes) / self.sample_rate

    def add(self, chunk: bytes) -> float:
        """Account for ``chunk`` and return the new :attr:`seconds`.

        Raises :class:`RuntimeError` after :meth:`finish`.
        """
        return self.add_count(len(chunk))

    def add_count(self, count: int) -> float:
        """:meth:`add` for ``count`` bytes of audio the caller need not hand over:
        returns the new :attr:`seconds`; raises :class:`RuntimeError` after
        :meth:`finish`."""
        if self._finished:
            raise RuntimeError("audio clock already finished")
        self._bytes += count
        return (self._bytes // self._frame_bytes) / self.sample_rate  # seconds, inline

    def finish(self) -> float:
        """End the stream and return the total :attr:`seconds`. Calling it again is harmless."""
        self._finished = True
        return self.seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class _FrameHeader:
    length: int
    block_size: int
    variable: bool
    number: int  # frame number (fixed block size) or first sample number (variable)


@dataclass(frozen=True, slots=True)
class _Mismatch:
    """A well-formed frame header (its CRC-8 checks) that does not fit the stream:
    what is wrong with it. An error if the pending frame ends right before it,
    else a look-alike inside frame data."""

    reason: str


class _Stage(StrEnum):
    MARKER = "marker"
    BLOCK_HEADER = "metadata block header"
    STREAMINFO = "STREAMINFO"
    SKIP = "metadata block"
    FRAMES = "frames"
    TRAILER = "trailing tag"  # after the last frame: bytes ignored


_NEED_MORE: Final = object()


class FlacClock:
    """The clock of a FLAC stream declared at ``sample_rate`` Hz.

    :meth:`add` raises :class:`~emulator.errors.ValidationException` when the
    bytes are not FLAC (no ``fLaC`` marker), when the metadata is malformed,
    when STREAMINFO's sample rate differs from ``sample_rate`` or its channel
    count from ``channels`` (when given: 2 for a session with channel
    definitions, else 1), when the bytes after the metadata are not a frame
    header, when a frame header out of sequence or at odds with STREAMINFO
    follows a whole frame, or when the bytes after a frame header run past the
    longest its frame can be with no next header.

    It holds the pending frame's bytes (what its CRC-16 is checked on), at most
    :meth:`_longest_frame` of them.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        channels: int | None = None,
        resumed: bool = False,
        frame_starts: bool = False,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        #: With ``frame_starts``: each frame's byte offset in the stream and the
        #: samples before it (for a client cutting a file where its audio is).
        self.frame_starts: list[tuple[int, int]] | None = [] if frame_starts else None
        self.expected_channels = channels
        #: The stream resumes a session: a missing marker is said to be that.
        self.resumed = resumed
        self._buf = bytearray()
        self._bytes = 0
        self._stage = _Stage.MARKER
        self._skip = 0
        self._last_block = False
        self._metadata_blocks = 0
        self._finished = False
        # From STREAMINFO.
        self._stream_rate: int | None = None
        self._channels: int | None = None
        self._bits_per_sample: int | None = None
        # Frame accounting.
        self._variable: bool | None = None
        self._frames = 0  # frame headers accepted
        self._samples = 0  # samples of completed frames
        # The frame still arriving: once frames begin, the buffer starts at its
        # header, and the scan for the next header goes on from _scan.
        self._pending_header: _FrameHeader | None = None
        self._scan = 0
        self._longest = 0  # the pending frame's longest length in bytes

    @property
    def bytes_received(self) -> int:
        """FLAC bytes added so far."""
        return self._bytes

    @property
    def seconds(self) -> float:
        """Seconds of audio in the complete frames received so far."""
        return self._samples / self.sample_rate

    @property
    def samples(self) -> int:
        """Samples (per channel) in the complete frames received so far."""
        return self._samples

    @property
    def channels(self) -> int | None:
        """STREAMINFO's channel count, or ``None`` before STREAMINFO has arrived."""
        return self._channels

    @property
    def stream_sample_rate(self) -> int | None:
        """STREAMINFO's sample rate in Hz, or ``None`` before STREAMINFO has arrived."""
        return self._stream_rate

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the pending frame's, or those of a header still arriving."""
        return len(self._buf)

    def add(self, chunk: bytes) -> float:
        """Parse ``chunk``, split anywhere in the stream, and return the new :attr:`seconds`.

        Raises :class:`~emulator.errors.ValidationException` as described on the
        class, and :class:`RuntimeError` after :meth:`finish`.
        """
        if self._finished:
            raise RuntimeError("audio clock already finished")
        self._bytes += len(chunk)
        self._buf += chunk
        self._process()
        return self.seconds

    def finish(self) -> float:
        """End the stream, count the last frame, and return the total :attr:`seconds`.

        Raises :class:`~emulator.errors.ValidationException` when some bytes
        arrived but the stream ended before its metadata was complete.
        Calling it again returns the same total.
        """
        if self._finished:
            return self.seconds
        self._finished = True
        if self._stage not in (_Stage.FRAMES, _Stage.TRAILER) and self._bytes:
            raise ValidationException(
                f"FLAC stream ended inside its {self._stage} after {self._bytes} bytes;"
                " no audio frames arrived"
            )
        header = self._pending_header
        if header is not None:
            # The frame ends at the end of the input, before the start of a next
            # header that never came in full, or before a tag a file may end with.
            if self._ends_before_tag({len(self._buf), self._scan}):
                self._samples += header.block_size
            self._pending_header = None
        self._buf.clear()
        return self.seconds

    # -- parsing ------------------------------------------------------------

    def _process(self) -> None:
        while True:
            stage = self._stage
            if stage == _Stage.MARKER:
                if not self._marker():
                    return
            elif stage == _Stage.BLOCK_HEADER:
                if not self._block_header():
                    return
            elif stage == _Stage.STREAMINFO:
                if not self._streaminfo():
                    return
            elif stage == _Stage.SKIP:
                if not self._skip_block():
                    return
            elif stage == _Stage.TRAILER:
                self._buf.clear()
                return
            else:
                self._scan_frames()
                return

    def _marker(self) -> bool:
        head = bytes(self._buf[: len(_FLAC_MARKER)])
        # Reject on the first wrong byte: a client sending PCM or WAV as flac
        # hears about it with its first event.
        if not _FLAC_MARKER.startswith(head):
            if self.resumed:
                # Most likely the earlier stream's bytes, continued by a client
                # resuming after a drop: told as such, not "not a FLAC stream".
                raise ValidationException(
                    "media encoding is flac but this stream, which resumes the session, "
                    f"does not start with the 'fLaC' marker (got {head!r}): each stream of "
                    "a session is a whole FLAC stream, from its marker and STREAMINFO; a "
                    "resumed stream starts a new one and cannot continue an earlier "
                    "stream's bytes"
                )
            raise ValidationException(
                "media encoding is flac but the audio is not a FLAC stream: it must start"
                f" with the 'fLaC' marker, got {head!r}"
            )
        if len(head) < len(_FLAC_MARKER):
            return False
        del self._buf[: len(_FLAC_MARKER)]
        self._stage = _Stage.BLOCK_HEADER
        return True

    def _block_header(self) -> bool:
        if len(self._buf) < _METADATA_HEADER_BYTES:
            return False
        head = self._buf[:_METADATA_HEADER_BYTES]
        del self._buf[:_METADATA_HEADER_BYTES]
        self._last_block = bool(head[0] & 0x80)
        block_type = head[0] & 0x7F
        length = int.from_bytes(head[1:4], "big")
        first = self._metadata_blocks == 0
        self._metadata_blocks += 1
        if block_type == _INVALID_BLOCK_TYPE:
            raise ValidationException("FLAC stream has an invalid metadata block type 127")
        if first != (block_type == _STREAMINFO):
            raise ValidationException(
                "FLAC stream must have exactly one STREAMINFO metadata block, first;"
                f" metadata block {self._metadata_blocks} has type {block_type}"
            )
        if first:
            if length != _STREAMINFO_BYTES:
                raise ValidationException(
                    f"FLAC STREAMINFO block must be {_STREAMINFO_BYTES} bytes, not {length}"
                )
            self._stage = _Stage.STREAMINFO
        else:
            # Other blocks (VORBIS_COMMENT, PADDING, PICTURE...) are skipped by
            # length as they stream past, never buffered.
            self._skip = length
            self._stage = _Stage.SKIP
        return True

    def _streaminfo(self) -> bool:
        if len(self._buf) < _STREAMINFO_BYTES:
            return False
        info = self._buf[:_STREAMINFO_BYTES]
        del self._buf[:_STREAMINFO_BYTES]
        # Bytes 10-12: sample rate (20 bits), channels - 1 (3), bits per sample - 1 (5).
        packed = int.from_bytes(info[10:13], "big")
        rate = packed >> 4
        channels = ((packed >> 1) & 0x7) + 1
        bits = (((packed & 0x1) << 4) | (info[13] >> 4)) + 1
        if rate == 0:
            raise ValidationException("FLAC STREAMINFO sample rate is 0 Hz")
        if rate != self.sample_rate:
            raise ValidationException(
                f"FLAC STREAMINFO sample rate {rate} Hz does not match the declared"
                f" media sample rate {self.sample_rate} Hz (x-amzn-medscribe-sample-rate)"
            )
        expected = self.expected_channels
        if expected is not None and channels != expected:
            described = (
                "the configuration's channelDefinitions describe 2 (ch_0 and ch_1)"
                if expected == 2
                else "without channelDefinitions in the configuration the audio must be mono"
            )
            raise ValidationException(f"FLAC STREAMINFO has {channels} channel(s), but {described}")
        self._stream_rate = rate
        self._channels = channels
        self._bits_per_sample = bits
        self._after_block()
        return True

    def _skip_block(self) -> bool:
        step = min(self._skip, len(self._buf))
        del self._buf[:step]
        self._skip -= step
        if self._skip:
            return False
        self._after_block()
        return True

    def _after_block(self) -> None:
        self._stage = _Stage.FRAMES if self._last_block else _Stage.BLOCK_HEADER

    def _scan_frames(self) -> None:
        buf = self._buf
        if self._frames == 0:
            # The first frame starts right after the metadata (RFC 9639 section 6).
            header = self._frame_header(0)
            if header is _NEED_MORE:
                return
            if isinstance(header, _Mismatch):
                raise ValidationException(f"FLAC stream: frame 0 {header.reason}")
            if header is None:
                raise ValidationException(
                    "FLAC stream: the bytes after the metadata blocks are not a frame header"
                    f" for frame 0, got {bytes(buf[:4]).hex()}"
                )
            assert isinstance(header, _FrameHeader)
            self._accept(header)
            self._scan = header.length
        pos = self._scan
        while (start := buf.find(0xFF, pos)) >= 0:
            header = self._frame_header(start)
            if header is _NEED_MORE:
                pos = start
                break
            if header is None:
                pos = start + 1
                continue
            if isinstance(header, _Mismatch):
                pending = self._pending_header
                assert pending is not None
                if _frame_ends_at(buf, pending.length, {start}):
                    # That frame came in whole: its audio was received.
                    self._samples += pending.block_size
                    self._pending_header = None
                    raise ValidationException(
                        f"FLAC stream: the frame header after frame {self._frames - 1} "
                        f"{header.reason}"
                    )
                pos = start + 1  # a look-alike inside the frame's data
                continue
            assert isinstance(header, _FrameHeader)
            del buf[:start]  # the frame it completes
            self._accept(header)
            pos = header.length
        else:
            pos = len(buf)
        self._scan = pos
        if len(buf) > self._longest:
            pending = self._pending_header
            assert pending is not None
            if self._ends_before_tag(set()):
                # A whole last frame, then a file's tag (cover art and all):
                # counted now, the rest ignored.
                self._samples += pending.block_size
                self._pending_header = None
                self._stage = _Stage.TRAILER
                buf.clear()
                return
            raise ValidationException(
                f"FLAC stream: frame {self._frames - 1} has run to {len(buf)} bytes with no "
                f"next frame header, more than its {pending.block_size} samples can take "
                f"({self._longest} bytes): frames are missing, or the bytes after it are not FLAC"
            )

    def _ends_before_tag(self, ends: set[int]) -> bool:
        """Whether the pending frame (at the start of the buffer) ends at one of
        ``ends`` or where a file's trailing tag begins: ID3v1 (``TAG``, the last
        128 bytes), APEv2 (``APETAGEX``, or found from its footer at the end, its
        header being optional) or ID3v2 (``ID3``, or from a ``3DI`` footer)."""
        buf = self._buf
        header = self._pending_header
        assert header is not None
        ends = set(ends)
        for tag in _TRAILING_TAGS:
            # The first and the last few places it occurs: a tag's own bytes may
            # repeat its name, a frame's seldom do (never thousands to check).
            at = buf.find(tag, header.length)
            if at >= 0:
                ends.add(at)
            at = len(buf)
            for _ in range(8):
                at = buf.rfind(tag, header.length, at)
                if at < 0:
                    break
                ends.add(at)
        end = len(buf)
        if buf[end - 128 : end - 125] == b"TAG":
            end -= 128  # ID3v1, after an APEv2 tag if there is one
        if buf[end - 32 : end - 24] == b"APETAGEX":  # an APEv2 footer
            size = int.from_bytes(buf[end - 20 : end - 16], "little")
            flags = int.from_bytes(buf[end - 12 : end - 8], "little")
            ends.add(end - size - (32 if flags & 0x80000000 else 0))
        if buf[end - 10 : end - 7] == b"3DI":  # an ID3v2 footer
            size = 0
            for byte in buf[end - 4 : end]:
                size = size << 7 | byte & 0x7F
            ends.add(end - 20 - size)
        ends = {at for at in ends if header.length < at <= len(buf)}
        return bool(ends) and _frame_ends_at(buf, header.length, ends)

    def _accept(self, header: _FrameHeader) -> None:
        if self._pending_header is not None:
            self._samples += self._pending_header.block_size
        if self.frame_starts is not None:  # the header is at the buffer's start
            self.frame_starts.append((self._bytes - len(self._buf), self._samples))
        self._pending_header = header
        self._variable = header.variable
        self._frames += 1
        self._longest = self._longest_frame(header.block_size)

    def _longest_frame(self, block_size: int) -> int:
        """Twice a frame's bytes stored verbatim (a side channel takes a bit more per
        sample), and a kilobyte of headers: no encoder writes a longer frame."""
        channels = self._channels or 1
        bits = (self._bits_per_sample or 32) + 1
        return 2 * block_size * channels * ((bits + 7) // 8) + 1024

    def _frame_header(self, start: int) -> _FrameHeader | _Mismatch | None | object:
        """Decode the frame header at ``start``.

        Returns it when its fields agree with STREAMINFO, its CRC-8 matches and its
        number follows the previous frame's; a :class:`_Mismatch` when it is well
        formed (its CRC-8 matches) but one of those does not fit; ``None`` when it
        is not one (a false sync inside frame data); ``_NEED_MORE`` when more
        bytes are needed to tell.
        """
        buf = self._buf
        end = len(buf)
        if start + 4 > end:
            return _NEED_MORE if self._plausible_prefix(start) else None
        b1, b2, b3 = buf[start + 1], buf[start + 2], buf[start + 3]
        # 14-bit sync 0b11111111111110, a reserved 0 bit, the blocking strategy bit.
        if buf[start] != 0xFF or b1 & 0xFE != 0xF8:
            return None
        size_code, rate_code = b2 >> 4, b2 & 0x0F
        channel_code, bits_code = b3 >> 4, (b3 >> 1) & 0x07
        if size_code == 0 or rate_code == 15 or channel_code > 10 or b3 & 0x01 or bits_code == 3:
            return None
        variable = bool(b1 & 0x01)
        # UTF-8-style coded number: frame number (31 bits) or sample number (36 bits).
        pos = start + 4
        if pos >= end:
            return _NEED_MORE
        lead = buf[pos]
        if lead < 0x80:
            width, number = 1, lead
        else:
            width = 8 - (~lead & 0xFF).bit_length()  # count of leading 1 bits
            if width < 2 or width > (7 if variable else 6):
                return None
            number = lead & (0x7F >> width)
        for i in range(1, width):
            if pos + i >= end:
                return _NEED_MORE
            byte = buf[pos + i]
            if byte & 0xC0 != 0x80:
                return None
            number = (number << 6) | (byte & 0x3F)
        pos += width
        size_ext = {6: 1, 7: 2}.get(size_code, 0)
        rate_ext = {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
        length = pos + size_ext + rate_ext + 1 - start
        if start + length > end:
            return _NEED_MORE
        if _crc8(buf[start : start + length - 1]) != buf[start + length - 1]:
            return None
        if size_ext:
            block_size = int.from_bytes(buf[pos : pos + size_ext], "big") + 1
        elif size_code == 1:
            block_size = 192
        elif size_code <= 5:
            block_size = 576 << (size_code - 2)
        else:
            block_size = 256 << (size_code - 8)
        if rate_ext:
            value = int.from_bytes(buf[pos + size_ext : pos + size_ext + rate_ext], "big")
            rate: int | None = {12: value * 1000, 13: value, 14: value * 10}[rate_code]
        else:
            rate = _SAMPLE_RATES.get(rate_code)  # None: STREAMINFO's
        wrong = self._does_not_fit(variable, rate, channel_code, bits_code, number)
        if wrong is not None:
            return _Mismatch(wrong)
        return _FrameHeader(length=length, block_size=block_size, variable=variable, number=number)

    def _does_not_fit(
        self, variable: bool, rate: int | None, channel_code: int, bits_code: int, number: int
    ) -> str | None:
        """What in a well-formed frame header does not fit the stream, or None."""
        if self._variable is not None and variable != self._variable:
            before, now = ("variable", "fixed") if self._variable else ("fixed", "variable")
            return f"switches from {before} to {now} block sizes"
        if rate is not None and rate != self._stream_rate:
            return (
                f"says {rate} Hz, where STREAMINFO and x-amzn-medscribe-sample-rate say "
                f"{self._stream_rate} Hz"
            )
        channels = channel_code + 1 if channel_code < 8 else 2
        if channels != self._channels:
            return f"has {channels} channel(s), where STREAMINFO has {self._channels}"
        if bits_code and _SAMPLE_SIZES[bits_code] != self._bits_per_sample:
            return (
                f"has {_SAMPLE_SIZES[bits_code]}-bit samples, where STREAMINFO has "
                f"{self._bits_per_sample}-bit"
            )
        if variable:
            pending = self._pending_header
            expected = self._samples + (pending.block_size if pending is not None else 0)
            if number != expected:
                return (
                    f"starts at sample {number}, where sample {expected} was due: "
                    "audio is missing from the stream"
                )
        elif number != self._frames:
            return (
                f"is numbered {number}, where frame {self._frames} was due: frames are "
                "missing from the stream"
            )
        return None

    def _plausible_prefix(self, start: int) -> bool:
        # Fewer than 4 bytes: wait only if what is there could begin a header.
        head = self._buf[start : start + 2]
        return head[:1] in (b"", b"\xff") and (len(head) < 2 or head[1] & 0xFE == 0xF8)


def make_clock(
    *, encoding: str, sample_rate: int, channels: int, resumed: bool = False
) -> PcmClock | FlacClock:
    """Return the clock for a session's media encoding (``pcm`` or ``flac``).

    ``channels`` is the audio's channel count (2 with channelDefinitions, else 1):
    PCM is counted by it, and a FLAC stream's STREAMINFO must state it;
    ``resumed``: the stream resumes a session (see :class:`FlacClock`). Raises
    :class:`~emulator.errors.ValidationException` for any other encoding.
    """
    if encoding == "pcm":
        return PcmClock(sample_rate=sample_rate, channels=channels)
    if encoding == "flac":
        return FlacClock(sample_rate=sample_rate, channels=channels, resumed=resumed)
    raise ValidationException(
        f"unsupported media encoding {encoding!r}; valid values are pcm and flac"
    )
