"""emulator._speedups (the C loops of the audio-event path) answers exactly as the
pure-Python code it stands in for, and the package works the same without it."""

from __future__ import annotations

import base64
import importlib
import os
import struct
import subprocess
import sys
import types
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import emulator
from emulator import eventstream, speedups, validation
from emulator.eventstream import Message, encode_message, sdk_audio_event
from emulator.speedups import python_base64_size
from tests.test_codec_properties import (
    SDK_AUDIO_HEADERS,
    _envelope,
    damages,
    sdk_frame,
)

native = pytest.importorskip("emulator._speedups", reason="the C extension is not built here")

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def test_the_package_uses_the_extension_where_it_is_built() -> None:
    """With the extension built and no MEDSCRIBE_PURE_PYTHON, every loop is the C one."""
    if os.environ.get("MEDSCRIBE_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("MEDSCRIBE_PURE_PYTHON is set for this run")
    assert speedups.NATIVE
    assert speedups.crc32 is native.crc32
    assert eventstream.crc32 is native.crc32
    assert speedups.base64_size is native.base64_size
    assert validation.audio_event_size is native.audio_event_size
    assert eventstream._sdk_audio_frame is native.sdk_audio_frame
    assert speedups.describe().startswith("C (emulator._speedups)")


# -- crc32 --------------------------------------------------------------------

# Around the 64-byte block the folding needs and its 16-byte steps.
crc_lengths = st.one_of(st.integers(0, 300), st.integers(300, 9000))


@given(st.data(), crc_lengths, st.integers(0, 2**32 - 1))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@example(None, 0, 0)
@example(None, 64, 0xFFFFFFFF)
@example(None, 4464, 0)  # an SDK audio frame
def test_crc32_is_zlibs(data, length: int, value: int) -> None:
    """crc32(data, value) == zlib.crc32(data, value), for every length and start value."""
    blob = bytes(length) if data is None else data.draw(st.binary(min_size=length, max_size=length))
    assert native.crc32(blob, value) == zlib.crc32(blob, value)


@given(st.binary(min_size=0, max_size=3000), st.integers(0, 100), st.integers(0, 100))
@settings(max_examples=200)
def test_crc32_reads_any_contiguous_buffer(blob: bytes, start: int, cut: int) -> None:
    """Any contiguous buffer is read: memoryview slices (offset, cut short) and bytearrays."""
    view = memoryview(blob)[start : len(blob) - cut]
    expected = zlib.crc32(view.tobytes())
    assert native.crc32(view, 0) == expected
    assert native.crc32(bytearray(view), 0) == expected


def test_crc32_continues_a_running_value() -> None:
    """Hashing in two calls, the second from the first's result, gives the whole CRC."""
    blob = bytes(range(256)) * 40
    for cut in (0, 1, 15, 16, 63, 64, 65, 1000, len(blob)):
        assert native.crc32(blob[cut:], native.crc32(blob[:cut], 0)) == zlib.crc32(blob)


def test_crc32_refuses_what_zlib_refuses() -> None:
    with pytest.raises(TypeError):
        native.crc32("text", 0)
    with pytest.raises(TypeError, match="2 positional arguments"):
        native.crc32(b"x")


def test_crc32_table_walk_without_pclmul() -> None:
    """MEDSCRIBE_NO_PCLMUL=1 turns the CPU's carry-less multiply off: the table walk
    alone gives the same CRCs (CPUs without PCLMULQDQ run only it)."""
    code = (
        "import zlib, random; from emulator import _speedups as s;"
        "assert not s.crc32_accelerated();"
        "r = random.Random(5);"
        "blobs = [r.randbytes(n) for n in [*range(0, 200), 4464, 10000]];"
        "assert all(s.crc32(b, v) == zlib.crc32(b, v) for b in blobs for v in (0, 7, 2**32 - 1));"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MEDSCRIBE_NO_PCLMUL": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- sdk_audio_frame ------------------------------------------------------------

envelope_layouts = st.sampled_from(
    [
        (b":date", 8, b":chunk-signature"),
        (b":date", 4, b":chunk-signature"),
        (b":datf", 8, b":chunk-signature"),
        (b":date", 8, b":chunk-signaturf"),
    ]
)
inner_messages = st.one_of(
    st.builds(
        lambda headers, payload: encode_message(Message(headers=headers, payload=payload)),
        st.sampled_from([SDK_AUDIO_HEADERS, {":message-type": "event"}, {}]),
        st.binary(max_size=600),
    ),
    st.binary(min_size=1, max_size=100),  # not a message at all
)


@given(
    inner_messages,
    damages,
    st.one_of(
        st.just(1_795_000_000_000),
        st.sampled_from([eventstream._MIN_MILLIS, eventstream._MAX_MILLIS]).flatmap(
            lambda edge: st.integers(edge - 1, edge + 1)
        ),
        st.integers(-(2**63), 2**63 - 1),
    ),
    st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    envelope_layouts,
    damages,
)
@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
def test_sdk_audio_frame_matches_python(
    inner: bytes, inner_damage, millis: int, signature: bytes, layout, damage
) -> None:
    """The C layout check and the Python one agree on SDK frames with any damage:
    to the inner message (CRCs then made right around it), to the envelope, at
    the edges of the :date range, with other header names, types and sizes."""
    frame = sdk_frame(inner, inner_damage, millis, signature, layout, damage)
    assert native.sdk_audio_frame(frame) == eventstream._python_sdk_audio_frame(frame)


def test_sdk_audio_frame_reads_what_the_sdk_sends() -> None:
    from benchmarks.wire import audio_frames

    for binary in (False, True):
        frame = audio_frames(1, binary=binary)[0]
        block, payload = native.sdk_audio_frame(frame)
        assert (block, payload) == eventstream._python_sdk_audio_frame(frame)
        assert native.sdk_audio_frame(bytearray(frame)) == (block, payload)
        assert native.sdk_audio_frame(memoryview(frame)) == (block, payload)
        assert len(payload) == (3200 if binary else 4285)
    with pytest.raises(TypeError):
        native.sdk_audio_frame("text")


def test_the_import_probes_exercise_each_check() -> None:
    """The frames the import-time probe compares on: the SDK's own layout is read,
    every other one refused (each by a different check)."""
    probes = eventstream._sdk_probes()
    read = [eventstream._python_sdk_audio_frame(frame) is not None for frame in probes]
    assert read == [True] + [False] * (len(probes) - 1)
    assert len(set(probes)) == len(probes)


def test_sdk_audio_event_is_the_same_with_either_layout_check() -> None:
    """sdk_audio_event reads a frame alike through the C and the Python check."""
    from benchmarks.wire import audio_frames

    frames = audio_frames(3) + audio_frames(2, binary=True)
    saved = eventstream._sdk_audio_frame
    try:
        answers = []
        for check in (native.sdk_audio_frame, eventstream._python_sdk_audio_frame):
            eventstream._sdk_audio_frame = check
            answers.append([sdk_audio_event(frame) for frame in frames])
    finally:
        eventstream._sdk_audio_frame = saved
    assert answers[0] == answers[1]
    assert [event_type for event_type, _ in answers[0]] == ["audioEvent"] * 3 + [
        "binaryAudioEvent"
    ] * 2


# -- base64_size ------------------------------------------------------------------

base64_texts = st.one_of(
    st.binary(max_size=300).map(base64.b64encode),
    st.lists(st.sampled_from(list(ALPHABET + b'="\\ \x00\x80\xff{}-_:')), max_size=120).map(bytes),
    st.binary(max_size=100),
)


@given(base64_texts)
@settings(max_examples=600)
@example(b"QUI=")
@example(b"Q===")
@example(b"AAAA=")
@example(b"A=AA")
def test_base64_size_matches_python(text: bytes) -> None:
    assert native.base64_size(text) == python_base64_size(text)


def test_base64_size_checks_every_byte_at_every_position() -> None:
    """Each of the 256 byte values, put at each position of a 48-byte text (three
    16-byte steps and the tail), is judged as the alphabet says."""
    for value in range(256):
        for position in range(48):
            text = bytearray(b"A" * 48)
            text[position] = value
            got = native.base64_size(bytes(text))
            assert got == python_base64_size(bytes(text))
            if value != ord("="):  # "=" is padding at the end, refused anywhere else
                assert got == (36 if value in ALPHABET else -1)
            else:
                assert got == (35 if position == 47 else -1)


audio_payloads = st.one_of(
    base64_texts.map(lambda text: b'{"audioChunk":"' + text + b'"}'),
    st.tuples(
        st.sampled_from([b'{"audioChunk":"', b'{"audioChunk": "', b'{"audioChunk":"', b""]),
        base64_texts,
        st.sampled_from([b'"}', b'" }', b'"', b""]),
    ).map(b"".join),
    st.binary(max_size=40),
)


@given(audio_payloads)
@settings(max_examples=600)
@example(b'{"audioChunk":""}')
@example(b'{"audioChunk":"}')
@example(b'{"audioChunk":"QQ=="}')
def test_audio_event_size_matches_python(payload: bytes) -> None:
    """The C read of an audioEvent payload gives the decoded size exactly where the
    Python one (audio_event_base64) does, and -1 where that gives None."""
    assert native.audio_event_size(payload) == validation._python_audio_event_size(payload)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 100, 3200])
def test_base64_size_is_the_decoded_size(size: int) -> None:
    raw = bytes(range(256)) * (size // 256 + 1)
    assert native.base64_size(base64.b64encode(raw[:size])) == size


# -- choosing ---------------------------------------------------------------------


def _load_speedups_with(monkeypatch: pytest.MonkeyPatch, fake: object) -> types.ModuleType:
    """A fresh copy of emulator.speedups that finds ``fake`` as the extension
    (``None``: the import fails)."""
    monkeypatch.setitem(sys.modules, "emulator._speedups", fake)
    if fake is None:
        monkeypatch.delattr(emulator, "_speedups", raising=False)
    else:
        monkeypatch.setattr(emulator, "_speedups", fake, raising=False)
    spec = importlib.util.find_spec("emulator.speedups")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_extension_that_answers_wrong_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the built module disagrees with the Python code on any probe, the
    Python code runs: a miscompiled extension costs speed, never correctness."""
    wrong = types.SimpleNamespace(
        crc32=lambda data, value: zlib.crc32(data, value) ^ (len(data) == 4099),
        sdk_audio_frame=native.sdk_audio_frame,
        base64_size=native.base64_size,
        crc32_accelerated=native.crc32_accelerated,
        __file__=native.__file__,
    )
    chosen = _load_speedups_with(monkeypatch, wrong)
    assert not chosen.NATIVE
    assert chosen.crc32 is None and chosen.sdk_audio_frame is None
    assert chosen.base64_size is chosen.python_base64_size
    assert chosen.describe().startswith("pure Python")


def test_an_extension_from_another_directory_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module answering for emulator._speedups from elsewhere (an editable
    install of another checkout, when this copy has none built) is not taken."""
    elsewhere = types.SimpleNamespace(**{k: getattr(native, k) for k in dir(native)})
    elsewhere.__file__ = "/elsewhere/emulator/" + os.path.basename(native.__file__)
    chosen = _load_speedups_with(monkeypatch, elsewhere)
    assert not chosen.NATIVE
    assert _load_speedups_with(monkeypatch, native).NATIVE


def test_a_missing_extension_means_pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _load_speedups_with(monkeypatch, None)
    assert not chosen.NATIVE
    assert chosen.base64_size is chosen.python_base64_size


def test_pure_python_mode_runs_the_same_frames_the_same_way() -> None:
    """MEDSCRIBE_PURE_PYTHON=1: no C loop runs, and an SDK audio frame, a damaged
    one and its base64 are read exactly as with the extension."""
    code = """
import json, sys
from benchmarks.wire import audio_frames
from emulator import speedups, eventstream
from emulator.validation import audio_event_base64, audio_event_size
native = eventstream._sdk_audio_frame is not eventstream._python_sdk_audio_frame
assert speedups.NATIVE is native is (sys.argv[1] == "0"), (speedups.NATIVE, native)
frame = audio_frames(1)[0]
bad = frame[:-5] + bytes([frame[-5] ^ 1]) + frame[-4:]
event = eventstream.sdk_audio_event(frame)
print(json.dumps([event[0], len(event[1]), audio_event_base64(event[1])[1],
                  audio_event_size(event[1]), eventstream.sdk_audio_event(bad) is None]))
"""
    outputs = []
    for pure in ("1", "0"):
        result = subprocess.run(
            [sys.executable, "-c", code, pure],
            env={**os.environ, "MEDSCRIBE_PURE_PYTHON": pure},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    # 100 ms of 16 kHz PCM: 3,200 bytes, 4,268 as base64 in {"audioChunk":"..."}.
    assert outputs[0].strip() == '["audioEvent", 4285, 3200, 3200, true]'


def test_sdk_frame_layout_used_above() -> None:
    """The frames these tests build are the SDK's layout (a guard on the helpers)."""
    inner = encode_message(Message(headers=SDK_AUDIO_HEADERS, payload=b"{}"))
    frame = _envelope(inner, 1_795_000_000_000, bytes(32))
    assert struct.unpack_from(">I", frame)[0] == len(frame)
    assert sdk_audio_event(frame) == ("audioEvent", b"{}")
