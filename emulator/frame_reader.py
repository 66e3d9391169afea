"""Received HTTP/2 frames, plain DATA ones without h2's per-frame machinery.

Nearly every frame a busy server receives is DATA, and h2 spends most of a
DATA frame's cost on what changes nothing for a plain one on an open stream:
frame objects, two state machines, per-frame trace logging.
:func:`receive_frames`, which :class:`emulator.hypercorn_h2.DuplexH2Protocol`
calls for h2's ``receive_data``, takes such a frame itself, with the same
event, the same state and the same errors as h2 (a test feeds twin
connections the same bytes, cut at the same places); every other frame goes
through h2, in order. It reads and writes h2's private state, which
:func:`h2_internals_present` finds out at import.

It also makes a stream's WINDOW_UPDATE of 0 a stream error (RFC 9113 §6.9) on
the emulator's connections: hyperframe's parse error made h2 end the
connection, every session the SDK multiplexes on it with it. No upstream issue
is cited for the rest: h2 is correct, only slow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

import h2.config
import h2.events
import h2.exceptions
from h2.connection import ConnectionState, H2Connection
from h2.stream import StreamState

if TYPE_CHECKING:  # emulator.hypercorn_h2 imports this module
    from .hypercorn_h2 import _StreamCountingConnection

# What emulator.hypercorn_h2, the emulator's HTTP/2 layer, and its tests use.
__all__ = ["receive_frames", "CONNECTION_OPEN", "h2_internals_present"]

_FRAME_HEADER = 9
_DATA = 0  # frame types
_SETTINGS = 4
_WINDOW_UPDATE = 8
_NO_STREAM = b"\0\0\0\0"
_NO_INCREMENT = (b"\0\0\0\0", b"\x80\0\0\0")  # the reserved bit set or not
_STREAM_ID_MASK = 0x7FFF_FFFF
# Connection states in which h2 takes DATA without a transition.
CONNECTION_OPEN = frozenset({ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN})


def _resets_stream_errors(connection: H2Connection) -> TypeGuard[_StreamCountingConnection]:
    """Whether ``connection`` is the emulator's
    (:class:`emulator.hypercorn_h2._StreamCountingConnection`), which resets a
    stream alone for an error RFC 9113 makes the stream's; h2's own ends the
    connection."""
    # At call time: emulator.hypercorn_h2 imports this module. Asked only for a
    # stream's WINDOW_UPDATE of 0, never on the way of a DATA frame.
    from . import hypercorn_h2

    return isinstance(connection, hypercorn_h2._StreamCountingConnection)


def _h2_reads(
    connection: H2Connection, view: memoryview, start: int, pos: int, events: list[Any]
) -> None:
    """h2 reads the whole frames ``view[start:pos]``, a run it must see before the
    frame at ``pos``; their events join ``events``. On its error h2 keeps the
    rest of the read, as if it had been given all of it."""
    try:
        events.extend(connection.receive_data(view[start:pos]))
    except h2.exceptions.ProtocolError:
        incoming: Any = connection.incoming_buffer
        incoming._data += view[pos:]
        raise


def receive_frames(connection: H2Connection, data: bytes) -> list[h2.events.Event]:
    """``connection.receive_data(data)``, cheaper for plain DATA frames.

    Returns the same events in the same order and leaves ``connection`` in the
    same state as h2 would, raising the same :class:`h2.exceptions.ProtocolError`
    for a bad frame. A DATA frame is taken here, without h2's frame objects,
    state machines and trace logging, when h2 would do no more than count it:
    no flags (no END_STREAM, no padding), within the frame size limit, on a
    stream h2 has OPEN, its headers received, with no content-length to check,
    inside both receive windows, on an open connection. Here that means
    decrementing the two windows and the stream's received length, which is
    all h2 changes for such a frame, and making its ``DataReceived`` event.
    Every other frame goes to h2's own ``receive_data``, and so does all of
    ``data`` while h2 is reading the connection preface or a header block,
    and the rest of ``data`` from a SETTINGS frame on;
    frames are handed over whole, so h2 holds a partial frame only at the end
    of a read, and the next read completes it through h2 first.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    incoming: Any = connection.incoming_buffer
    if incoming._preamble_len or incoming._headers_buffer:
        return connection.receive_data(data)
    events: list[h2.events.Event] = []
    view = memoryview(data)
    end = len(data)
    pos = 0
    held = len(incoming._data)
    if held:
        # h2 holds the start of a frame from the last read: complete it there,
        # unless it is SETTINGS (see below) or more than a frame is held (only
        # after an error) or this read does not complete it.
        head = bytes(incoming._data[:_FRAME_HEADER]) + data[: max(_FRAME_HEADER - held, 0)]
        if len(head) < _FRAME_HEADER or head[3] == _SETTINGS:
            return connection.receive_data(data)
        pos = _FRAME_HEADER + int.from_bytes(head[:3]) - held
        if not 0 < pos <= end:
            return connection.receive_data(data)
        _h2_reads(connection, view, 0, pos, events)
    streams = connection.streams
    window = connection._inbound_flow_control_window_manager
    slow = -1  # start of a run of frames for h2, or -1
    while end - pos >= _FRAME_HEADER:
        length = int.from_bytes(data[pos : pos + 3])
        frame_end = pos + _FRAME_HEADER + length
        if frame_end > end:
            break
        kind = data[pos + 3]
        if kind == _SETTINGS:
            # h2 takes its frame size limit once per receive_data call, and a
            # SETTINGS ACK may change it: from here on, h2 reads the lot in one call.
            events.extend(connection.receive_data(view[slow if slow >= 0 else pos :]))
            return events
        if (
            kind == _WINDOW_UPDATE
            and length == 4
            and data[pos + 5 : pos + 9] != _NO_STREAM
            and data[pos + _FRAME_HEADER : frame_end] in _NO_INCREMENT
            and _resets_stream_errors(connection)
        ):
            # A stream's WINDOW_UPDATE of 0: a stream error (RFC 9113 §6.9), where
            # hyperframe's parse error made h2 end the connection.
            if slow >= 0:
                _h2_reads(connection, view, slow, pos, events)
                slow = -1
            stream_id = int.from_bytes(data[pos + 5 : pos + 9]) & _STREAM_ID_MASK
            reset = connection._stream_error(
                stream_id,
                h2.exceptions.ProtocolError(f"WINDOW_UPDATE of 0 on stream {stream_id}"),
            )
            if reset is not None:
                connection._prepare_for_sending(reset[0])
                events.extend(reset[1])
                pos = frame_end
                continue
        # An empty one goes to h2, which charges it (see _receive_data_frame).
        if kind == _DATA and data[pos + 4] == 0 and length:
            if slow >= 0:
                # h2 first takes the frames before this one: they may change
                # anything checked below (a reset, new settings, GOAWAY).
                _h2_reads(connection, view, slow, pos, events)
                slow = -1
            if incoming._headers_buffer:  # DATA inside a header block: h2 refuses it
                events.extend(connection.receive_data(view[pos:]))
                return events
            stream_id = int.from_bytes(data[pos + 5 : pos + 9]) & _STREAM_ID_MASK
            stream: Any = streams.get(stream_id)
            if (
                stream is not None
                and length <= connection.max_inbound_frame_size
                and connection.state_machine.state in CONNECTION_OPEN
                and stream.state_machine.state is StreamState.OPEN
                and stream.state_machine.headers_received
                and stream._expected_content_length is None
                and window.current_window_size >= length
                and stream._inbound_window_manager.current_window_size >= length
            ):
                window.current_window_size -= length
                stream._inbound_window_manager.current_window_size -= length
                stream._actual_content_length += length
                events.append(
                    h2.events.DataReceived(
                        stream_id=stream_id,
                        data=data[pos + _FRAME_HEADER : frame_end],
                        flow_controlled_length=length,
                    )
                )
                pos = frame_end
                continue
        if slow < 0:
            slow = pos
        pos = frame_end
    # The run for h2, if any, and a partial frame at the end, which h2 keeps.
    rest = slow if slow >= 0 else pos
    if rest < end:
        events.extend(connection.receive_data(view[rest:]))
    return events


def h2_internals_present() -> bool:
    """Whether the installed h2 keeps the state :func:`receive_frames` reads and
    writes where h2 4.4 keeps it (checked on a real connection and stream)."""
    try:
        client = H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1,
            [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "localhost")],
        )
        server = H2Connection(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        server.receive_data(client.data_to_send())
        incoming: Any = server.incoming_buffer
        stream: Any = server.streams[1]
        event = h2.events.DataReceived(stream_id=1, data=b"", flow_controlled_length=0)
        return (
            event.stream_ended is None
            and isinstance(incoming._data, bytearray)
            and incoming._preamble_len == 0
            and incoming._headers_buffer == []
            and isinstance(server._inbound_flow_control_window_manager.current_window_size, int)
            and isinstance(stream._inbound_window_manager.current_window_size, int)
            and stream._expected_content_length is None
            and isinstance(stream._actual_content_length, int)
            and stream.state_machine.state is StreamState.OPEN
            and stream.state_machine.headers_received is True
            and server.state_machine.state in CONNECTION_OPEN
        )
    except Exception:  # anything unexpected: h2 does all the parsing
        return False
