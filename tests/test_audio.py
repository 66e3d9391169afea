"""The audio clock: seconds of PCM by byte count, seconds of FLAC by parsed frames."""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Iterator

import numpy as np
import pytest
import soundfile as sf

from emulator.audio import MAX_AUDIO_CHUNK_BYTES, FlacClock, PcmClock, make_clock
from emulator.errors import ValidationException

# -- helpers ------------------------------------------------------------------


@functools.cache
def encode_flac(rate: int, channels: int, frames: int, subtype: str = "PCM_16") -> bytes:
    """A real FLAC file of ``frames`` sample frames of noisy tone, made by libsndfile."""
    rng = np.random.default_rng(rate + channels + frames)
    t = np.arange(frames) / rate
    tone = 8000 * np.sin(2 * np.pi * 440 * t)[:, None]
    noise = rng.normal(0, 2000, (frames, channels))
    samples = np.clip(tone + noise, -32768, 32767).astype(np.int16)
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC", subtype=subtype)
    return out.getvalue()


def metadata_blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of each metadata block; the audio follows the last."""
    blocks, pos = [], 4
    while True:
        block_type, length = data[pos] & 0x7F, int.from_bytes(data[pos + 1 : pos + 4], "big")
        blocks.append((pos, block_type, length))
        last = data[pos] & 0x80
        pos += 4 + length
        if last:
            return blocks


def audio_offset(data: bytes) -> int:
    offset, _, length = metadata_blocks(data)[-1]
    return offset + 4 + length


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ CRC16[(crc >> 8) ^ byte]
    return crc


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def frame_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every audio frame, found by the frame CRC-16 the clock never reads.

    An independent oracle: a frame ends where the CRC-16 over it is zero (its
    footer included) and a sync code or the end of the file follows.
    """
    spans, start, crc = [], audio_offset(data), 0
    for i in range(start, len(data)):
        crc = ((crc << 8) & 0xFFFF) ^ CRC16[(crc >> 8) ^ data[i]]
        end = i + 1
        if crc == 0 and end - start > 4 and (end == len(data) or data[end : end + 2] in SYNCS):
            spans.append((start, end))
            start, crc = end, 0
    assert start == len(data), "oracle lost the frame chain"
    return spans


SYNCS = (b"\xff\xf8", b"\xff\xf9")
BLOCK = 4096  # libsndfile's fixed FLAC block size, checked against STREAMINFO below


def streaminfo_block_sizes(data: bytes) -> tuple[int, int]:
    body = data[8:]
    return int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")


def chunked(data: bytes, how: str) -> Iterator[bytes]:
    if how == "whole":
        yield data
    elif how == "1KiB":
        for i in range(0, len(data), 1024):
            yield data[i : i + 1024]
    elif how == "random":
        rng, i = random.Random(20250129), 0
        while i < len(data):
            size = rng.randint(1, 5000)
            yield data[i : i + size]
            i += size
    elif how == "bytes":
        for i in range(len(data)):
            yield data[i : i + 1]


def feed_checked(clock: FlacClock, data: bytes, how: str, frames: int, rate: int) -> float:
    """Feed ``data`` and check every intermediate reading against the oracle; return finish()."""
    spans = frame_spans(data)
    assert len(spans) == -(-frames // BLOCK)
    ends = [end for _, end in spans[:-1]]  # the last frame counts only at finish()
    longest = max(max(end - start for start, end in spans), 34)  # or STREAMINFO
    fed, previous = 0, 0.0
    for chunk in chunked(data, how):
        fed += len(chunk)
        seconds = clock.add(chunk)
        assert seconds == clock.seconds
        assert seconds >= previous, "the clock went backwards"
        complete = sum(1 for end in ends if end <= fed)
        # A frame counts once the whole next header is in: at most 16 bytes later.
        counted_surely = sum(1 for end in ends if end + 16 <= fed)
        assert counted_surely * BLOCK / rate <= seconds <= complete * BLOCK / rate
        # The pending frame (for its CRC-16 at the end) and a next header arriving.
        assert clock.buffered_bytes <= longest + 16, "the clock buffered more than a frame"
        previous = seconds
    assert clock.bytes_received == len(data)
    return clock.finish()


def with_blocks_inserted(data: bytes, *blocks: tuple[int, bytes]) -> bytes:
    """``data`` with metadata blocks (type, body) appended to its chain."""
    chain = metadata_blocks(data)
    last_offset = chain[-1][0]
    head = bytearray(data[: audio_offset(data)])
    head[last_offset] &= 0x7F  # no longer the last block
    for index, (block_type, body) in enumerate(blocks):
        flag = 0x80 if index == len(blocks) - 1 else 0
        head += bytes([flag | block_type]) + len(body).to_bytes(3, "big") + body
    return bytes(head) + data[audio_offset(data) :]


def rewrite_headers(data: bytes, *, variable: bool = False, extensions: bool = False) -> bytes:
    """Re-encode every frame header of a fixed-blocksize stream; the audio is unchanged.

    ``variable`` sets the blocking-strategy bit and codes first sample numbers in
    place of frame numbers; ``extensions`` moves the block size and the sample
    rate to the 16-bit fields at the end of the header (codes 7 and 13). Header
    CRC-8 and frame CRC-16 are recomputed.
    """
    rate = int.from_bytes(data[18:21], "big") >> 4  # STREAMINFO sample rate
    out = bytearray(data[: audio_offset(data)])
    index = sample = 0
    for start, end in frame_spans(data):
        frame = data[start:end]
        size_code, rate_code = frame[2] >> 4, frame[2] & 0x0F
        lead = frame[4]
        width = 1 if lead < 0x80 else 8 - (~lead & 0xFF).bit_length()
        size_len = {6: 1, 7: 2}.get(size_code, 0)
        tail_len = size_len + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
        tail = frame[4 + width : 4 + width + tail_len]
        body = frame[4 + width + tail_len + 1 : -2]
        block = int.from_bytes(tail[:size_len], "big") + 1 if size_len else BLOCK
        codes = frame[2]
        if extensions:
            codes, tail = 0x7D, (block - 1).to_bytes(2, "big") + rate.to_bytes(2, "big")
        number = utf8_number(sample if variable else index)
        header = bytes([0xFF, 0xF9 if variable else 0xF8, codes, frame[3]]) + number + tail
        header += bytes([crc8(header)])
        new = header + body
        out += new + crc16(new).to_bytes(2, "big")
        index, sample = index + 1, sample + block
    return bytes(out)


def utf8_number(value: int) -> bytes:
    if value < 0x80:
        return bytes([value])
    for width in range(2, 8):
        if value < 1 << (5 * width + 1):
            break
    out = []
    for _ in range(width - 1):
        out.append(0x80 | (value & 0x3F))
        value >>= 6
    lead = (0xFF << (8 - width)) & 0xFF
    return bytes([lead | value] + out[::-1])


# -- the chunk limit --------------------------------------------------------------


def test_max_audio_chunk_is_the_services_32000_byte_per_event_limit() -> None:
    assert MAX_AUDIO_CHUNK_BYTES == 32_000


# -- PCM ------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("rate", [8_000, 16_000, 48_000])
def test_pcm_duration_is_bytes_over_two_times_channels_times_rate(rate: int, channels: int) -> None:
    clock = PcmClock(sample_rate=rate, channels=channels)
    frames = rate * 5 // 2  # 2.5 s
    data = bytes(2 * channels * frames)
    fed = 0
    for i in range(0, len(data), 3201):  # odd chunks split samples and sample frames
        chunk = data[i : i + 3201]
        fed += len(chunk)
        assert clock.add(chunk) == (fed // (2 * channels)) / rate
    assert clock.bytes_received == len(data)
    assert clock.seconds == 2.5
    assert clock.finish() == 2.5


def test_pcm_partial_sample_frame_counts_once_completed() -> None:
    clock = PcmClock(sample_rate=16_000, channels=2)
    assert clock.add(b"\x01\x02\x03") == 0.0
    assert clock.add(b"\x04") == 1 / 16_000
    assert clock.add(b"\x05") == 1 / 16_000
    assert clock.add(b"\x06\x07\x08\x09\x0a\x0b") == 2 / 16_000
    assert clock.bytes_received == 11


def test_pcm_clock_refuses_audio_after_finish() -> None:
    clock = PcmClock(sample_rate=8_000, channels=1)
    clock.add(bytes(16_000))
    assert clock.finish() == 1.0
    assert clock.finish() == 1.0
    with pytest.raises(RuntimeError):
        clock.add(b"\x00\x00")


# -- make_clock -------------------------------------------------------------------


def test_make_clock_builds_a_pcm_clock_with_the_session_channels() -> None:
    clock = make_clock(encoding="pcm", sample_rate=16_000, channels=2)
    assert isinstance(clock, PcmClock)
    assert clock.add(bytes(64_000)) == 1.0


def test_make_clock_builds_a_flac_clock_at_the_declared_rate() -> None:
    clock = make_clock(encoding="flac", sample_rate=16_000, channels=1)
    assert isinstance(clock, FlacClock)
    assert clock.sample_rate == 16_000


def test_make_clock_rejects_an_encoding_other_than_pcm_or_flac() -> None:
    with pytest.raises(ValidationException, match="ogg-opus"):
        make_clock(encoding="ogg-opus", sample_rate=16_000, channels=1)


# -- FLAC: durations --------------------------------------------------------------

FLAC_STREAMS = {
    "16k-mono": (16_000, 1, 16_000 * 4 + 1_234, "PCM_16"),
    "44.1k-stereo": (44_100, 2, 44_100 * 3 + 77, "PCM_16"),
    "48k-stereo": (48_000, 2, 48_000 * 3 + 4_095, "PCM_16"),
    "48k-stereo-24bit": (48_000, 2, 48_000 * 2 + 1, "PCM_24"),
}


def test_libsndfile_writes_fixed_4096_sample_blocks_and_a_vorbis_comment() -> None:
    """The premise of the FLAC tests: fixed blocks of BLOCK and a non-STREAMINFO block."""
    data = encode_flac(*FLAC_STREAMS["16k-mono"])
    assert streaminfo_block_sizes(data) == (BLOCK, BLOCK)
    assert all(data[start + 1] == 0xF8 for start, _ in frame_spans(data))
    assert [block_type for _, block_type, _ in metadata_blocks(data)] == [0, 4]


@pytest.mark.parametrize("how", ["whole", "1KiB", "random"])
@pytest.mark.parametrize("stream", FLAC_STREAMS)
def test_flac_duration_is_samples_over_rate_however_the_bytes_are_split(
    stream: str, how: str
) -> None:
    rate, channels, frames, subtype = FLAC_STREAMS[stream]
    data = encode_flac(rate, channels, frames, subtype)
    clock = FlacClock(sample_rate=rate)
    assert feed_checked(clock, data, how, frames, rate) == frames / rate
    assert clock.channels == channels
    assert clock.stream_sample_rate == rate


def test_flac_fed_byte_by_byte_gives_the_exact_duration() -> None:
    frames = 16_000 + 500
    data = encode_flac(16_000, 1, frames)
    clock = FlacClock(sample_rate=16_000)
    assert feed_checked(clock, data, "bytes", frames, 16_000) == frames / 16_000


def assert_same_audio(rewritten: bytes, original: bytes) -> None:
    """libsndfile decodes ``rewritten`` to the same samples: it is valid FLAC."""
    decoded, _ = sf.read(io.BytesIO(rewritten), dtype="int32")
    assert np.array_equal(decoded, sf.read(io.BytesIO(original), dtype="int32")[0])


@pytest.mark.parametrize("how", ["1KiB", "bytes"])
def test_flac_variable_blocksize_frames_follow_sample_numbers(how: str) -> None:
    # 32,999 leaves a last block of 231 (8-bit size extension), 9,000 one of 808 (16-bit).
    frames = 16_000 * 2 + 999 if how != "bytes" else 9_000
    fixed = encode_flac(16_000, 1, frames)
    data = rewrite_headers(fixed, variable=True)
    assert_same_audio(data, fixed)
    assert all(data[start + 1] == 0xF9 for start, _ in frame_spans(data))
    clock = FlacClock(sample_rate=16_000)
    assert feed_checked(clock, data, how, frames, 16_000) == frames / 16_000


@pytest.mark.parametrize("variable", [False, True], ids=["fixed", "variable"])
def test_flac_block_size_and_sample_rate_in_header_extensions_are_read(variable: bool) -> None:
    frames = 44_100 * 2 + 321
    original = encode_flac(44_100, 2, frames)
    data = rewrite_headers(original, variable=variable, extensions=True)
    assert_same_audio(data, original)
    assert all(data[start + 2] == 0x7D for start, _ in frame_spans(data))
    clock = FlacClock(sample_rate=44_100)
    assert feed_checked(clock, data, "random", frames, 44_100) == frames / 44_100


def test_flac_last_frame_counts_only_at_finish() -> None:
    frames = BLOCK * 3 + 100
    data = encode_flac(16_000, 1, frames)
    clock = FlacClock(sample_rate=16_000)
    assert clock.add(data) == BLOCK * 3 / 16_000
    assert clock.finish() == frames / 16_000
    assert clock.finish() == frames / 16_000
    with pytest.raises(RuntimeError):
        clock.add(b"\xff")


def test_flac_streaminfo_total_samples_of_zero_does_not_change_the_clock() -> None:
    """A live encoder writes 0 total samples; the clock counts frames, not STREAMINFO."""
    frames = 16_000 * 2 + 3
    data = bytearray(encode_flac(16_000, 1, frames))
    body = 8  # STREAMINFO body offset: marker + block header
    data[body + 13] &= 0xF0  # total samples: low 4 bits of byte 13 ...
    data[body + 14 : body + 18] = bytes(4)  # ... and bytes 14-17
    data[body + 18 : body + 34] = bytes(16)  # the MD5 is unknown live too
    clock = FlacClock(sample_rate=16_000)
    clock.add(bytes(data))
    assert clock.finish() == frames / 16_000


def test_flac_metadata_blocks_besides_streaminfo_are_skipped() -> None:
    frames = 16_000 * 2 + 17
    data = with_blocks_inserted(
        encode_flac(16_000, 1, frames),
        (2, b"emuL" + bytes(range(256)) * 3),  # APPLICATION, with sync-like 0xff bytes
        (1, bytes(5_000)),  # PADDING
    )
    assert [block_type for _, block_type, _ in metadata_blocks(data)] == [0, 4, 2, 1]
    for how in ("1KiB", "random"):
        clock = FlacClock(sample_rate=16_000)
        assert feed_checked(clock, data, how, frames, 16_000) == frames / 16_000


def test_flac_header_look_alikes_inside_frame_data_are_not_frames() -> None:
    """A candidate header with a wrong CRC-8 or an out-of-sequence number is frame data."""
    frames = BLOCK * 8 + 10
    data = encode_flac(16_000, 1, frames)
    spans = frame_spans(data)
    header_4 = data[spans[4][0] : spans[4][0] + 6]  # frame number 4 < 0x80: a 6-byte header
    header_6 = data[spans[6][0] : spans[6][0] + 6]
    bad_crc_4 = header_4[:-1] + bytes([header_4[-1] ^ 0x01])
    # Inside frame 3's data, where frame 4 is the next one expected.
    cut = (spans[3][0] + spans[3][1]) // 2
    forged = data[:cut] + bad_crc_4 + header_6 + data[cut:]
    clock = FlacClock(sample_rate=16_000)
    # Accepting a look-alike as frame 4 would complete frame 3 here, before its end.
    assert clock.add(forged[: cut + 12 + 16]) == 3 * BLOCK / 16_000
    assert clock.add(forged[cut + 12 + 16 : spans[4][0] + 12 + 6]) == 4 * BLOCK / 16_000
    clock.add(forged[spans[4][0] + 12 + 6 :])
    assert clock.finish() == frames / 16_000


# -- FLAC: rejections -------------------------------------------------------------


def test_flac_streaminfo_rate_contradicting_the_declared_rate_is_a_validation_exception() -> None:
    data = encode_flac(48_000, 2, 48_000)
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException, match="48000") as caught:
        clock.add(data[:1024])
    assert "16000" in caught.value.message


def test_flac_rate_mismatch_is_found_even_when_streaminfo_arrives_byte_by_byte() -> None:
    data = encode_flac(44_100, 2, 44_100)
    clock = FlacClock(sample_rate=48_000)
    with pytest.raises(ValidationException, match=r"44100 Hz.*48000 Hz"):
        for i in range(42):  # marker, block header, STREAMINFO
            clock.add(data[i : i + 1])


@pytest.mark.parametrize(
    "audio",
    [b"RIFF\x24\x00\x00\x00WAVEfmt ", bytes(3200), b"fLaX" + bytes(100), b"OggS\x00\x02"],
    ids=["wav", "pcm-silence", "bad-marker", "ogg"],
)
def test_flac_declared_but_no_flac_marker_is_a_validation_exception(audio: bytes) -> None:
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException, match="fLaC"):
        clock.add(audio)


def test_flac_marker_mismatch_is_reported_on_the_first_wrong_byte() -> None:
    clock = FlacClock(sample_rate=16_000)
    clock.add(b"f")
    clock.add(b"L")
    with pytest.raises(ValidationException, match="not a FLAC stream"):
        clock.add(b"x")


def test_flac_first_metadata_block_must_be_streaminfo() -> None:
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException, match="STREAMINFO"):
        clock.add(b"fLaC" + b"\x04\x00\x00\x08" + bytes(8))


def test_flac_bytes_after_metadata_that_are_not_a_frame_are_a_validation_exception() -> None:
    data = encode_flac(16_000, 1, 16_000)
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException, match="not a frame header"):
        clock.add(data[: audio_offset(data)] + b"\x00" * 64)


def test_flac_stream_ending_inside_its_metadata_is_a_validation_exception() -> None:
    data = encode_flac(16_000, 1, 16_000)
    clock = FlacClock(sample_rate=16_000)
    clock.add(data[:20])
    with pytest.raises(ValidationException, match="ended inside"):
        clock.finish()


def test_flac_session_without_audio_finishes_at_zero_seconds() -> None:
    clock = FlacClock(sample_rate=16_000)
    assert clock.channels is None and clock.stream_sample_rate is None
    assert clock.finish() == 0.0


# -- FLAC: frames cut, missing or at odds with the stream ------------------------------


def with_header_rate_code(data: bytes, frame: int, code: int) -> bytes:
    """``data`` with frame ``frame``'s header saying sample rate code ``code``
    (its CRC-8 recomputed, so it is a well-formed header of another rate)."""
    start, _ = frame_spans(data)[frame]
    out = bytearray(data)
    out[start + 2] = (out[start + 2] & 0xF0) | code
    length = 6  # 4 bytes, a one-byte frame number (< 0x80), the CRC-8
    out[start + length - 1] = crc8(bytes(out[start : start + length - 1]))
    return bytes(out)


@pytest.mark.parametrize(
    "cut", [10, -1], ids=["its-header-and-a-few-bytes", "all-but-its-last-byte"]
)
def test_flac_last_frame_cut_short_is_not_counted(cut: int) -> None:
    """Its samples counted from its header alone: results were sent, and a resumed
    stream started, for audio that never arrived."""
    data = encode_flac(16_000, 1, BLOCK * 3)
    start, end = frame_spans(data)[-1]
    clock = FlacClock(sample_rate=16_000)
    clock.add(data[: start + cut if cut > 0 else end + cut])
    assert clock.finish() == 2 * BLOCK / 16_000


def test_flac_last_frame_followed_by_the_start_of_a_header_counts() -> None:
    data = encode_flac(16_000, 1, BLOCK * 3)
    clock = FlacClock(sample_rate=16_000)
    clock.add(data + b"\xff\xf8")
    assert clock.finish() == 3 * BLOCK / 16_000


@pytest.mark.parametrize("variable", [False, True], ids=["fixed", "variable"])
def test_flac_frame_missing_is_a_validation_exception(variable: bool) -> None:
    """Every later frame was taken for a look-alike: the clock stopped without a word."""
    data = rewrite_headers(encode_flac(16_000, 1, BLOCK * 5), variable=variable)
    spans = frame_spans(data)
    gapped = data[: spans[2][0]] + data[spans[3][0] :]
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException) as caught:
        clock.add(gapped)
    expected = (
        f"starts at sample {3 * BLOCK}, where sample {2 * BLOCK} was due"
        if variable
        else "is numbered 3, where frame 2 was due"
    )
    assert caught.value.message == (
        f"FLAC stream: the frame header after frame 1 {expected}: "
        + ("audio is" if variable else "frames are")
        + " missing from the stream"
    )


def test_flac_frame_header_of_another_rate_mid_stream_is_a_validation_exception() -> None:
    data = with_header_rate_code(encode_flac(16_000, 1, BLOCK * 4), 2, 4)  # 4: 8,000 Hz
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException) as caught:
        clock.add(data)
    assert caught.value.message == (
        "FLAC stream: the frame header after frame 1 says 8000 Hz, where STREAMINFO and "
        "x-amzn-medscribe-sample-rate say 16000 Hz"
    )


def test_flac_first_frame_of_another_rate_names_the_rate() -> None:
    data = with_header_rate_code(encode_flac(16_000, 1, BLOCK * 2), 0, 4)
    clock = FlacClock(sample_rate=16_000)
    with pytest.raises(ValidationException, match="frame 0 says 8000 Hz, where STREAMINFO"):
        clock.add(data)


def test_flac_bytes_past_the_longest_frame_are_a_validation_exception() -> None:
    """Frames then bytes that are not FLAC: the clock stopped at the last frame, and the
    session completed as if the rest were silence."""
    data = encode_flac(16_000, 1, BLOCK * 3)
    spans = frame_spans(data)
    garbage = random.Random(7).randbytes(64 * 1024)
    clock = FlacClock(sample_rate=16_000)
    clock.add(data[: spans[2][0]])
    with pytest.raises(ValidationException) as caught:
        for k in range(0, len(garbage), 4000):
            clock.add(garbage[k : k + 4000])
    message = caught.value.message
    assert message.startswith("FLAC stream: frame 1 has run to ")
    assert "more than its 4096 samples can take" in message
    assert message.endswith("frames are missing, or the bytes after it are not FLAC")
    assert clock.buffered_bytes < 2 * BLOCK * 3 + 1024 + 4000  # bounded, then refused


@pytest.mark.parametrize(
    "tag",
    [b"TAG" + bytes(125), b"APETAGEX" + bytes(24), b"ID3\x04\x00\x00" + bytes(20)],
    ids=["id3v1", "apev2", "id3v2"],
)
def test_flac_last_frame_followed_by_a_files_tag_counts(tag: bytes) -> None:
    """A tag after the last frame made it look cut short: a file with an ID3v1 tag
    lost its last frame, and the stream command called it truncated."""
    frames = BLOCK * 2 + 1000
    data = encode_flac(16_000, 1, frames)
    clock = FlacClock(sample_rate=16_000)
    clock.add(data + tag)
    assert clock.finish() == frames / 16_000


def apev2(items: bytes, *, with_header: bool) -> bytes:
    """An APEv2 tag holding ``items`` (their bytes as they are), its header optional."""

    def block(flags: int) -> bytes:
        size = len(items) + 32  # the items and the footer, not the header
        fields = (2000, size, 1, flags)
        return b"APETAGEX" + b"".join(v.to_bytes(4, "little") for v in fields) + bytes(8)

    has_header = 0x80000000 if with_header else 0
    header = block(has_header | 0x20000000) if with_header else b""
    return header + items + block(has_header)


def id3v2_with_footer(body: bytes) -> bytes:
    size = bytes((len(body) >> shift) & 0x7F for shift in (21, 14, 7, 0))  # syncsafe
    return b"ID3\x04\x00\x10" + size + body + b"3DI\x04\x00\x10" + size


@pytest.mark.parametrize(
    "tag",
    [
        apev2(b"\x05" * 30_000, with_header=True),  # cover art, past the frame's bound
        apev2(b"\x05" * 300, with_header=False),  # only a footer names it
        apev2(b"\x05" * 300, with_header=False) + b"TAG" + bytes(125),
        id3v2_with_footer(b"\x05" * 40_000),
    ],
    ids=["apev2-cover-art", "apev2-footer-only", "apev2-footer-then-id3v1", "id3v2-footer"],
)
def test_flac_last_frame_followed_by_a_tag_known_by_its_layout_counts(tag: bytes) -> None:
    frames = BLOCK * 2 + 1000  # a short last frame: its bound is about 7 KB
    data = encode_flac(16_000, 1, frames)
    for how in ("whole", "32000"):
        clock = FlacClock(sample_rate=16_000)
        stream = data + tag
        step = len(stream) if how == "whole" else 32_000
        for k in range(0, len(stream), step):
            clock.add(stream[k : k + step])
        assert clock.finish() == frames / 16_000, how
