"""emulator.frame_reader.receive_frames against h2's own receive_data.

Two server connections, twins, are fed the same bytes cut at the same places:
one through ``receive_frames``, the other through ``H2Connection.receive_data``.
After every piece both must have returned the same events (or raised the same
error), want to send the same bytes and hold the same flow-control and stream
state. The bytes come from a real h2 client doing random things (streams with
and without a content-length, DATA of every size, padded, ending the stream,
pings, resets, header blocks split into CONTINUATION frames) and from raw
frames no well-behaved client sends (DATA on unknown, ended or reset streams,
beyond the receive window, over the frame size limit).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.events
import h2.exceptions
import h2.settings
import pytest
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, HeadersFrame
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from emulator import hypercorn_h2
from emulator.frame_reader import receive_frames

#: A SETTINGS frame with the ACK flag.
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"

#: The stream ids a test may use (odd: client-initiated).
STREAM_IDS = (1, 3, 5, 7)


def _server(
    initial_window: int, connection_window: int, bigger_frames: bool = False
) -> H2Connection:
    """A server connection configured as hypercorn and DuplexH2Protocol do; with
    ``bigger_frames`` it also asks for 32 KiB frames, in force once the client has
    acknowledged both its SETTINGS frames."""
    server = H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    server.local_settings = h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        },
    )
    server.initiate_connection()
    if connection_window:
        server.increment_flow_control_window(connection_window)
    if bigger_frames:
        server.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 32_768})
    return server


def _connected(server: H2Connection) -> H2Connection:
    """``server`` after a client's preface and SETTINGS, read on their own as a
    server usually does (until then receive_frames hands everything to h2)."""
    client = H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65_535})
    server.receive_data(client.data_to_send())
    return server


def _state(server: H2Connection) -> Any:
    """Everything receive_frames may touch, comparable between the twins."""
    windows: Any = server
    return (
        server.state_machine.state,
        windows._inbound_flow_control_window_manager.current_window_size,
        bytes(windows.incoming_buffer._data),
        len(windows.incoming_buffer._headers_buffer),
        server.max_inbound_frame_size,
        sorted(
            (
                stream_id,
                stream.state_machine.state,
                stream._inbound_window_manager.current_window_size,
                stream._actual_content_length,
            )
            for stream_id, stream in server.streams.items()
        ),
    )


def _events(events: list[h2.events.Event]) -> list[str]:
    return [f"{type(e).__name__} {e!r} {getattr(e, 'data', None)!r}" for e in events]


def _raw_data(stream_id: int, length: int, *, flags: tuple[str, ...] = ()) -> bytes:
    frame = DataFrame(stream_id)
    frame.data = bytes(length)
    for flag in flags:
        frame.flags.add(flag)
    return frame.serialize()


# One client action: (kind, stream index, size, a flag). Mostly plain DATA on
# open streams, the case receive_frames takes itself; the rest rarer, since
# most of them end the connection.
KINDS = (
    ["open"] * 4
    + ["data"] * 12
    + ["padded", "open-length", "open-length", "end", "ping", "reset", "big-headers"]
    + ["raw-data", "raw-over-window", "raw-oversize", "raw-end", "raw-open-block", "goaway"]
    + ["settings-ack"]
)
actions = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, len(STREAM_IDS) - 1),
        st.integers(0, 20_000),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


def _client_bytes(plan: list[tuple[str, int, int, bool]], initial_window: int) -> bytes:
    """The bytes a client doing ``plan`` writes, after its preface and settings."""
    client = H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65_535})
    # The client believes the server's settings so its own sends stay inside them.
    client.remote_settings.update({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
    client.remote_settings.acknowledge()
    client.data_to_send()  # the preface: see _connected
    out = []
    opened: list[int] = []
    for kind, index, size, flag in plan:
        if kind.startswith("open") or kind in ("big-headers", "raw-open-block"):
            stream_id = 2 * len(opened) + 1  # the next new stream
        elif opened and (flag or not kind.startswith("raw")):
            stream_id = opened[index % len(opened)]
        else:  # raw frames also go to streams never opened
            stream_id = STREAM_IDS[index]
        try:
            if kind in ("open", "open-length", "big-headers"):
                headers = [
                    (":method", "POST"),
                    (":path", "/s"),
                    (":scheme", "http"),
                    (":authority", "localhost"),
                ]
                if kind == "open-length":
                    headers.append(("content-length", str(size)))
                if kind == "big-headers":  # past one frame: HEADERS + CONTINUATION
                    headers.append(("x-padding", "v" * 20_000))
                client.send_headers(stream_id, headers, end_stream=flag and size == 0)
                opened.append(stream_id)
            elif kind in ("data", "padded") and stream_id in opened:
                room = min(
                    client.local_flow_control_window(stream_id),
                    client.max_outbound_frame_size - 256,
                    size,
                )
                client.send_data(
                    stream_id,
                    bytes(room),
                    end_stream=flag,
                    pad_length=(size % 200) if kind == "padded" else None,
                )
            elif kind == "end" and stream_id in opened:
                client.end_stream(stream_id)
            elif kind == "ping":
                client.ping(size.to_bytes(8, "big"))
            elif kind == "reset" and stream_id in opened:
                client.reset_stream(stream_id, ErrorCodes.CANCEL)
            elif kind == "raw-data":
                out.append(client.data_to_send())
                out.append(_raw_data(stream_id, size % 3000))
            elif kind == "raw-over-window":
                out.append(client.data_to_send())
                out.append(_raw_data(stream_id, 16_000) * (1 + size // 4000))
            elif kind == "raw-oversize":
                out.append(client.data_to_send())
                out.append(_raw_data(stream_id, 16_385 + size))
            elif kind == "raw-open-block":  # HEADERS without END_HEADERS, then DATA
                out.append(client.data_to_send())
                block = HeadersFrame(stream_id)
                block.data = b"\x82"  # :method GET, from the static table
                out.append(block.serialize())
                out.append(_raw_data(opened[0] if opened else 1, size % 100))
            elif kind == "settings-ack":  # of the server's SETTINGS, raw
                out.append(client.data_to_send())
                out.append(SETTINGS_ACK)
            elif kind == "goaway":
                client.close_connection()
                out.append(client.data_to_send())
                out.append(_raw_data(stream_id, size % 100))
            elif kind == "raw-end":
                out.append(client.data_to_send())
                out.append(_raw_data(stream_id, size % 100, flags=("END_STREAM",)))
        except h2.exceptions.ProtocolError:
            pass  # not something this client can do now: skip it
        out.append(client.data_to_send())
    return b"".join(out)


MIB16 = 16 * 1024 * 1024


def guard(
    plan: list[tuple[str, int, int, bool]],
    *,
    cuts: list[int] | None = None,
    initial_window: int = 65_535,
    connection_window: int = 0,
    ack: bool = False,
    bigger_frames: bool = False,
) -> Any:
    """One explicit example for the property test below."""
    return example(
        plan=plan,
        cuts=cuts or [],
        initial_window=initial_window,
        connection_window=connection_window,
        ack=ack,
        bigger_frames=bigger_frames,
    )


# Each guard of receive_frames on its own, whatever the random search finds.
OPEN = ("open", 0, 0, False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Past the connection window but inside the stream's, and the other way round.
@guard([OPEN, ("raw-over-window", 0, 20_000, True)], initial_window=MIB16)
@guard([OPEN, ("raw-over-window", 0, 20_000, True)], connection_window=MIB16)
# DATA on a stream never opened, and on one the client ended.
@guard([OPEN, ("raw-data", 3, 10, False)], ack=True)
@guard([OPEN, ("end", 0, 0, False), ("raw-data", 0, 10, True)], ack=True)
# DATA after the client's GOAWAY; over the frame size limit.
@guard([OPEN, ("goaway", 0, 10, True)])
@guard([OPEN, ("raw-oversize", 0, 5, True)], initial_window=MIB16, connection_window=MIB16)
# Inside a header block, and after a cut inside a header block's first frame.
@guard([OPEN, ("raw-open-block", 0, 10, True)])
@guard([OPEN, ("big-headers", 0, 0, False), ("data", 0, 100, False)], cuts=[5_000])
# More than the content-length says.
@guard([("open-length", 0, 10, False), ("data", 0, 100, False)])
# A SETTINGS ACK raising the frame size limit, then a frame over the old limit in
# the same read: h2 still applies the limit it read when the read began.
@guard(
    [
        OPEN,
        ("settings-ack", 0, 0, False),
        ("settings-ack", 0, 0, False),
        ("raw-oversize", 0, 5, True),
    ],
    bigger_frames=True,
)
# An error with more frames behind it in the same read: h2 keeps them.
@guard([OPEN, ("ping", 0, 1, False), ("raw-data", 3, 10, False), ("data", 0, 100, False)])
@given(
    plan=actions,
    cuts=st.lists(st.integers(1, 50_000), max_size=12),
    initial_window=st.sampled_from([65_535, 16 * 1024 * 1024]),
    connection_window=st.sampled_from([0, 16 * 1024 * 1024]),
    ack=st.booleans(),
    bigger_frames=st.booleans(),
)
def test_receive_frames_is_h2_receive_data(
    plan: list[tuple[str, int, int, bool]],
    cuts: list[int],
    initial_window: int,
    connection_window: int,
    ack: bool,
    bigger_frames: bool,
) -> None:
    data = _client_bytes(plan, initial_window)
    fast = _connected(_server(initial_window, connection_window, bigger_frames))
    stock = _connected(_server(initial_window, connection_window, bigger_frames))
    assert fast.data_to_send() == stock.data_to_send()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, stop in zip(points, points[1:], strict=False):
        piece = data[start:stop]
        try:
            expected: Any = stock.receive_data(piece)
        except h2.exceptions.ProtocolError as error:
            expected = error
        try:
            got: Any = receive_frames(fast, piece)
        except h2.exceptions.ProtocolError as error:
            got = error
        if isinstance(expected, Exception):
            assert type(got) is type(expected)
            assert str(got) == str(expected)
            assert fast.data_to_send() == stock.data_to_send()
            assert _state(fast) == _state(stock)
            return
        assert not isinstance(got, Exception), got
        assert _events(got) == _events(expected)
        if ack:  # what DuplexH2Protocol does with each DATA event
            for server, events in ((fast, got), (stock, expected)):
                for event in events:
                    if isinstance(event, h2.events.DataReceived):
                        server.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
        assert fast.data_to_send() == stock.data_to_send()
        assert _state(fast) == _state(stock)


def test_plain_data_on_an_open_stream_skips_h2() -> None:
    """The point of it: plain DATA on an open stream never reaches h2's parser,
    and everything else still does."""
    client = H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "localhost")]
    )
    server = _server(65_535, 0)
    receive_frames(server, client.data_to_send())
    parsed: list[bytes] = []
    original = server.receive_data

    def spy(data: Any) -> list[h2.events.Event]:
        parsed.append(bytes(data))
        return original(data)

    server.receive_data = spy  # type: ignore[method-assign]
    client.send_data(1, b"one")
    client.send_data(1, b"two")
    events = receive_frames(server, client.data_to_send())
    assert [(e.stream_id, e.data) for e in events] == [(1, b"one"), (1, b"two")]  # type: ignore[attr-defined]
    assert parsed == []
    client.ping(b"12345678")
    client.send_data(1, b"end", end_stream=True)
    events = receive_frames(server, client.data_to_send())
    assert [type(e).__name__ for e in events] == ["PingReceived", "DataReceived", "StreamEnded"]
    assert len(parsed) == 1  # both frames in one hand-over to h2


def test_the_installed_h2_gets_the_fast_path() -> None:
    """If an h2 upgrade moves the internals receive_frames uses, the server still
    works (h2 parses everything) but loses the speed: this says so."""
    assert hypercorn_h2._FAST_DATA


def test_data_before_the_response_headers_is_h2s_error_on_a_client_connection() -> None:
    """A stream that is OPEN but has not received its headers (the client side of a
    request) takes no DATA: receive_frames leaves that refusal to h2."""

    def client_with_request() -> H2Connection:
        client = H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "a")]
        )
        client.receive_data(_server(65_535, 0).data_to_send())  # the server's preface
        return client

    frame = _raw_data(1, 10)
    with pytest.raises(h2.exceptions.ProtocolError) as stock:
        client_with_request().receive_data(frame)
    with pytest.raises(h2.exceptions.ProtocolError) as fast:
        receive_frames(client_with_request(), frame)
    assert str(fast.value) == str(stock.value)
