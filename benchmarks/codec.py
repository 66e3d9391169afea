"""Codec: decode throughput of the emulator's frame decoder vs ``smithy_aws_event_stream``.

Both decoders get the same bytes in the same process: signed input events as
the SDK sends them (an envelope with ``:date`` and ``:chunk-signature`` around
an inner message). "Decoding" means what the server needs: the envelope's
CRCs checked and headers read, then the inner message decoded (its CRCs and
headers too).

* emulator: :class:`emulator.eventstream.EventStreamDecoder` fed the whole
  buffer, then :func:`~emulator.eventstream.open_envelope` on each message;
  also fed in 16 KiB pieces (HTTP/2 DATA frame size); and, for audio events,
  :func:`~emulator.eventstream.sdk_audio_event` on each frame alone, which
  is how the server reads the SDK's audio events (one per DATA frame);
* smithy: ``Event.decode`` (the AWS SDK's decoder) over a ``BytesIO`` of the
  buffer, then ``Event.decode`` of each envelope payload.

Throughput is bytes of wire input per second (MB = 10^6 bytes), best of
``repeats`` timed loops of at least ``min_seconds`` each.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from .wire import audio_frames, configuration_frame, end_of_session_frame

__all__ = ["measure_codec"]


# Each decoder returns the inner events it decoded (None for an envelope
# without one), which the harness holds until the next decode: a consumer keeps
# what it decoded, and dropping a whole pass's output at once would make glibc
# trim the heap and fault the same pages in again on the next pass, a cost of
# this loop rather than of either decoder (see _best_seconds).


def _emulator_whole(data: bytes) -> list[object]:
    from emulator.eventstream import EventStreamDecoder, open_envelope

    return [open_envelope(message).inner for message in EventStreamDecoder().receive_data(data)]


def _emulator_pieces(data: bytes, piece: int = 16384) -> list[object]:
    from emulator.eventstream import EventStreamDecoder, open_envelope

    decoder = EventStreamDecoder()
    view = memoryview(data)
    out: list[object] = []
    for offset in range(0, len(view), piece):
        for message in decoder.receive_data(view[offset : offset + piece]):
            out.append(open_envelope(message).inner)
    decoder.end_of_data()
    return out


def _emulator_sdk_frames(frames: list[bytes]) -> Callable[[bytes], list[object]]:
    """The server's read of the SDK's audio frames, one per DATA frame:
    :func:`~emulator.eventstream.sdk_audio_event` on each (same checks, no
    message objects). The joined buffer it is handed is ignored."""
    from emulator.eventstream import sdk_audio_event

    def decode(_: bytes) -> list[object]:
        return [sdk_audio_event(frame) for frame in frames]

    return decode


def _smithy(data: bytes) -> list[object]:
    from smithy_aws_event_stream.events import Event

    source = io.BytesIO(data)
    out: list[object] = []
    while (event := Event.decode(source)) is not None:
        payload = event.message.payload
        out.append(Event.decode(io.BytesIO(payload)) if payload else None)
    return out


def _best_seconds(
    decoders: dict[str, Callable[[bytes], list[object]]],
    data: bytes,
    *,
    min_seconds: float,
    repeats: int,
) -> tuple[dict[str, float], dict[str, int]]:
    """Best seconds per decode of ``data`` for each decoder, and how many inner
    events it decoded.

    The decoders take turns within each repeat, so a burst of load from other
    processes hits all of them alike rather than one. Each pass's output is
    held until the next pass has decoded: with the output dropped at once,
    glibc gives the freed top of the heap back to the kernel (its trim
    threshold is 128 KiB; a pass of audio events frees ~1.7 MB) and the next
    pass faults it in again, page by page, which measured the allocator rather
    than the decoder (the emulator's whole-buffer figure moved by a third with
    ``MALLOC_TRIM_THRESHOLD_`` set).
    """
    counts = {
        name: sum(event is not None for event in decode(data)) for name, decode in decoders.items()
    }  # warm-up
    best = dict.fromkeys(decoders, float("inf"))
    for _ in range(repeats):
        for name, decode in decoders.items():
            loops = 0
            held: list[object] = []
            started = time.perf_counter()
            while True:
                held = decode(data)
                loops += 1
                elapsed = time.perf_counter() - started
                if elapsed >= min_seconds:
                    break
            best[name] = min(best[name], elapsed / loops)
            del held
    return best, counts


def measure_codec(*, min_seconds: float = 0.3, repeats: int = 3) -> dict[str, object]:
    """Decode two workloads with both decoders; return MB/s, messages/s and the ratios.

    Workloads: ``audio`` (200 signed 100 ms audioEvents of 16 kHz pcm, ~4.4 KB
    each) and ``small`` (signed configuration and END_OF_SESSION events, a
    few hundred bytes each, where per-message overhead dominates).
    """
    frames = audio_frames(200)
    audio = b"".join(frames)
    small = b"".join(
        configuration_frame(counter=i) if i % 2 else end_of_session_frame(counter=i)
        for i in range(400)
    )
    decoders = {"emulator": _emulator_whole, "pieces": _emulator_pieces, "smithy": _smithy}
    out: dict[str, object] = {}
    for name, data in (("audio", audio), ("small", small)):
        chosen = dict(decoders)
        if name == "audio":
            chosen["sdk_frames"] = _emulator_sdk_frames(frames)
        best, counts = _best_seconds(chosen, data, min_seconds=min_seconds, repeats=repeats)
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"decoders disagree on the message count: {counts}")
        count = counts["emulator"]
        mb = {key: len(data) / seconds / 1e6 for key, seconds in best.items()}
        out[name] = {
            "bytes": len(data),
            "messages": count,
            "emulator_mb_s": round(mb["emulator"], 1),
            "emulator_16k_pieces_mb_s": round(mb["pieces"], 1),
            "smithy_mb_s": round(mb["smithy"], 1),
            "emulator_msgs_s": round(count / best["emulator"]),
            "smithy_msgs_s": round(count / best["smithy"]),
            "ratio": round(mb["emulator"] / mb["smithy"], 2),
            "ratio_16k_pieces": round(mb["pieces"] / mb["smithy"], 2),
        }
        if "sdk_frames" in mb:
            out[name]["emulator_sdk_frames_mb_s"] = round(mb["sdk_frames"], 1)  # type: ignore[index]
            out[name]["ratio_sdk_frames"] = round(mb["sdk_frames"] / mb["smithy"], 2)  # type: ignore[index]
    return out
