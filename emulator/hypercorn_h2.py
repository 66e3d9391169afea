"""HTTP/2 for full-duplex streams that end early: a fix to hypercorn 0.18.

Our streaming API answers while the client is still sending: a 400 before the
body is read, or an in-stream exception and then the end of the response. Stock
hypercorn 0.18 (``hypercorn/protocol/h2.py``) mishandles that in three ways,
each of which :class:`DuplexH2Protocol` fixes:

1. **DATA after the response** (upstream issue pgjones/hypercorn#329). Once
   the app completes its response, ``H2Protocol._close_stream`` forgets the
   stream, and the next DATA frame for it raises ``KeyError`` in
   ``_handle_events``, which kills the whole connection with every other
   stream on it (the AWS SDK multiplexes all sessions of an app on one
   connection). Such data is now acknowledged, so the *connection* flow
   window keeps refilling (without that every other stream stalls once 64 KiB
   have been dropped), and then discarded.
2. **A client that keeps sending.** After a complete response while the
   client's side is still open, the rest of the request is drained: read,
   acknowledged and dropped, until the client ends its side. RFC 9113 §8.1
   would also allow RST_STREAM NO_ERROR here, but the AWS SDK's CRT client
   then fails every later write on that stream with
   AWS_ERROR_HTTP_STREAM_HAS_COMPLETED and its event publisher never returns
   from ``send``/``close``: a user's app would hang after any in-stream
   error. A client that drains more than :attr:`DuplexH2Protocol.max_drain_bytes`
   into a finished stream is reset with NO_ERROR after all, so a runaway
   sender still cannot hold a stream open for ever. While a stream drains its
   connection is not idle (:meth:`DuplexH2Protocol.defer_idle`): hypercorn
   counted only the streams its app holds, and its keep-alive timer closed a
   connection with no other stream under the client still sending, whose
   ``send`` then never returned either.
3. **An unfinished response.** An app that returns or raises after
   ``http.response.start`` without the final ``more_body: False`` body left
   the stream open for ever: the client hung. The stream is now reset with
   :attr:`DuplexH2Protocol.unfinished_response_error` (INTERNAL_ERROR) once
   the body bytes the app did send have been written, so an app simulates a
   mid-stream disconnect just by returning early.

A fourth fault sits under the first: hypercorn feeds request bodies to the app
through a bounded queue (``config.max_app_queue_size``, 10) and reads the
socket only when the queue has room, so one app that stops reading stalls
every stream on the connection. A stream whose queue is full now has its events
held, unacknowledged (``DuplexH2Protocol._hold``): HTTP/2 flow control stops
that stream's client and the connection's other streams go on. With stock
hypercorn, an app that answers without reading the body could also leave the
queue full with the connection's reader waiting on it; the ``http.disconnect``
that hypercorn queues when the stream closes then waited for ever too. A closing HTTP
stream's unread request messages are therefore dropped first, which the ASGI
spec allows ("http.disconnect: sent to the application if receive is called
after a response has been sent"). That leaves room for the disconnect and the
reader's one pending message if the queue holds at least two (asyncio only;
under trio the queue is a memory channel and is left alone).

More faults cost a connection, the server or its memory for one stream's sake:

* **A malformed request** (an upper-case or connection-specific header name, a
  NUL in a value...) makes h2 raise ProtocolError, and the whole connection
  goes with it. RFC 9113 §8.1.1 makes it a stream error: the stream it opened
  is reset with PROTOCOL_ERROR and the connection's other sessions carry on.
  So is a method, path, scheme or authority with a byte outside ASCII, which
  hypercorn's ``decode("ascii")`` raised on in the connection's task.
* **Other stream errors** on a stream already open (a body that does not match
  its content-length, bad trailers, a stream depending on itself, a stream's
  WINDOW_UPDATE of 0: RFC 9113 §8.1.1, §5.3.1, §6.9) also made h2 end the
  connection. That stream alone is reset, its app told as of a client's reset.
* **A costly header block**: HPACK table size updates, one Python call a byte
  and no header for a list limit to stop, stalled the loop a second a
  megabyte. A block with more than two, or longer than the header list limit
  allows, ends its connection before it is decoded.
* **A client allowing a huge HPACK table** had hpack's encoder keep every
  response's unique ids for the connection's life; the server's table is
  held to 4 KiB (:class:`CappedEncoder`, in :mod:`emulator.hpack_codec`).
* **A stream past MAX_CONCURRENT_STREAMS** made h2 raise TooManyStreamsError,
  which ends the connection; RFC 9113 §5.1.2 lets a server refuse that stream
  alone. It is reset with REFUSED_STREAM (not processed: the client may retry).
* **A client's graceful GOAWAY** (NO_ERROR) made h2 close its side and
  hypercorn the socket, cutting off every open session on the connection; by
  RFC 9113 §6.8 those streams finish, and the client closes the connection.
  After the server's own graceful GOAWAY (a chaos rule's, through
  :class:`ConnectionControl`) the streams under way finish too, streams the
  client opens after it are refused, and the server closes the connection as
  soon as the last one ends: left open until the keep-alive timeout, it was
  still the AWS SDK's pick for new requests, each failing with
  AWS_ERROR_HTTP_GOAWAY_RECEIVED.
* **The keep-alive timer** closed an idle connection with no GOAWAY, and with it
  a stream the client opened the same instant, whose CRT client then waited for
  ever. It now retires the connection as a graceful GOAWAY does
  (:meth:`DuplexH2Protocol.retire_idle`, through ``hypercorn_tcp``).
* **Streams still open when a shutdown's grace period ends** went with the
  connection, unanswered; they are reset, and one whose response had not
  started gets a 500 (:meth:`DuplexH2Protocol.reset_open_streams`).
* **A flood of control frames** (PING, SETTINGS, PRIORITY...: 200,000 held every
  connection up for a second), or of streams the client opens and resets at once
  ("rapid reset"), has no limit in h2 or hypercorn. Past
  :attr:`DuplexH2Protocol.control_burst` at once the connection is closed with
  GOAWAY ENHANCE_YOUR_CALM, as nginx and h2o do.
* **A client that reads nothing** (grants its response no flow-control
  window) kept the app sending: hypercorn's send task pops an empty chunk from
  a stream with no window, and an empty pop released the app's wait at the
  buffer's high-water mark, so the server held the session's whole output.
  :class:`BoundedBuffer` (:mod:`emulator.flow_control`, with the stream's
  other flow pieces) releases it only once the buffer is drained below its
  low-water mark; a client reset closes the buffer, ending the wait.
* **A connection that closes under an open response** stops the send task
  but leaves the stream buffers open, so an app ending its response after the
  disconnect waits in ``drain()`` for ever and the server cannot shut down. The
  buffers are closed with the connection.

WebSocket streams (extended CONNECT) keep stock behaviour for the queue:
hypercorn ends their side before the WebSocket closing handshake completes,
and their unread messages are the client's last words.

Received DATA frames, nearly every frame under load, are also parsed more
cheaply (:func:`receive_frames`, in :mod:`emulator.frame_reader`): h2 spends
most of a DATA frame's cost on machinery that changes nothing for a plain DATA
frame on an open stream (frame objects, two state machines, per-frame trace
logging). Every other frame, and every DATA frame that is not plain, still goes
through h2 in order.

h2 also walks every stream of the connection each time a client opens one,
to count the open ones against ``MAX_CONCURRENT_STREAMS``: O(n^2) for a
connection's n streams. :class:`_StreamCountingConnection` walks only when
the count could matter, with the same decisions.

An app waiting in ``receive()`` may also take a stream's DATA in the
connection's task instead of being woken for each frame (:class:`InlineBody`,
a scope extension): the emulator's streams take the SDK's audio events so,
and send the transcript events those make from there too. An app busy
elsewhere may take the DATA queued meanwhile in fewer messages
(``InlineBody.merge``).

Header blocks, one per stream each way, are cheaper too. Response headers go
out without Huffman coding, found in the encoder's table through dicts
(:class:`LiteralEncoder`). Request headers that repeat the client's earlier
ones are read inline (:class:`QuickDecoder`), and h2's byte-by-byte check of
their characters runs in C loops (:func:`reject_illegal_characters`), as does
the decoding of their Huffman strings (:func:`fast_decode_huffman`). hpack and h2
do all of this in Python; it cost over 1M instructions a stream. h2's
pipelines that normalize and check each block (seven generators per header)
take one pass for a plain request received and a plain response sent
(:func:`plain_request`, :func:`plain_response`): about 45 us a stream of the
300 us h2 spent on its two header blocks. The coders are
:mod:`emulator.hpack_codec`'s, the checks :mod:`emulator.header_checks`'.

Call :func:`install` before serving. It patches process-wide names in hypercorn,
h2, hpack and hyperframe, so any hypercorn app served in the same process (a
pytest plugin user's own, say) gets them too. :data:`PATCHED` lists those it
made; each is made only where the stock code is the one the patch was written
against (otherwise the stock code stays). What install() patches, and why:

===========================================================  =======================================
Patched name                                                 Why
===========================================================  =======================================
``hypercorn.protocol.H2Protocol``                            :class:`DuplexH2Protocol`, the fixes
                                                             above
``hyperframe.frame._raw_data_repr``                          no hex dump of each DATA payload for
                                                             h2's trace log, which logs nothing
``hyperframe.frame.DataFrame._body_repr``                    nor a copy of the payload to measure it
``h2.utilities._reject_illegal_characters``                  ``header_checks``: header bytes checked
                                                             in C loops
``hpack.hpack.decode_huffman``                               ``hpack_codec``: Huffman strings
                                                             decoded in C (speedups)
``h2.stream.normalize_inbound_headers``                      ``header_checks``: one pass for a plain
                                                             request's headers, not seven generators
                                                             a header
``h2.stream.validate_headers``                               (the same)
``h2.stream.normalize_outbound_headers``                     ``header_checks``: one pass for a plain
                                                             response's headers
``h2.stream.validate_outbound_headers``                      (the same)
``hypercorn.asyncio.run.TCPServer``                          ``hypercorn_tcp.QuietTCPServer``: quiet
                                                             TLS teardown, larger reads, coalesced
                                                             writes
``hypercorn.protocol.h11.H11Protocol._send_error_response``  ``hypercorn_h11``: HTTP/1.1 refusals in
                                                             the service's error shape
``hypercorn.protocol.h11.H11Protocol.__init__``              the 16 KiB request-head limit, however
                                                             the head arrives
``hypercorn.protocol.h11.H11Protocol._maybe_recycle``        a body still arriving after its answer
                                                             is read and dropped, not reset
===========================================================  =======================================
"""

from __future__ import annotations

import asyncio
import collections
import functools
import sys
import time
from collections.abc import Callable
from typing import Any

import h2.events
import h2.exceptions
import h2.stream
import h2.utilities
import hpack
import hpack.hpack
import hypercorn.asyncio.run
import hypercorn.protocol
import hyperframe.frame
from h2.connection import ConnectionInputs, H2Connection
from h2.errors import ErrorCodes
from h2.stream import StreamState
from h2.windows import WindowManager
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import Body, EndBody
from hypercorn.protocol.h2 import H2Protocol, StreamBuffer
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.utils import suppress_body
from hyperframe.frame import GoAwayFrame

from . import hypercorn_h11, hypercorn_tcp, speedups
from .errors import InternalServerException, http_error
from .extensions import CONNECTION_EXTENSION, INLINE_BODY_EXTENSION, MORE_BODIES
from .flow_control import (
    MERGE_LIMIT,
    BoundedBuffer,
    RoundRobin,
    WideningWindow,
    app_queue,
    drop_unread_messages,
    merge_into_last,
    queue_internals_present,
    stream_buffer_internals_present,
)
from .frame_reader import CONNECTION_OPEN, h2_internals_present, receive_frames
from .header_checks import (
    FAST_PIPELINES,
    STOCK_PIPELINES,
    STOCK_REJECT_ILLEGAL_CHARACTERS,
    check_ascii_pseudo_headers,
    reject_illegal_characters,
)
from .hpack_codec import (
    HUFFMAN_DECODE_TABLE,
    STOCK_DECODE_HUFFMAN,
    CappedEncoder,
    GuardedDecoder,
    LiteralEncoder,
    QuickDecoder,
    fast_decode_huffman,
    hpack_internals_present,
)
from .logs import Throttle, get_logger, left_out_text

# The scope-extension names are emulator.extensions' (the ASGI adapter's side),
# re-exported beside the classes that provide the extensions; MERGE_LIMIT
# (emulator.flow_control's) and receive_frames (emulator.frame_reader's) beside
# the protocol that uses them.
__all__ = [
    "DuplexH2Protocol",
    "ConnectionControl",
    "CONNECTION_EXTENSION",
    "INLINE_BODY_EXTENSION",
    "InlineBody",
    "MERGE_LIMIT",
    "MORE_BODIES",
    "PATCHED",
    "install",
    "receive_frames",
]

log = get_logger("medscribe.h2")

# States in which the app has started a response it never completed.
_UNFINISHED = frozenset({ASGIHTTPState.RESPONSE, ASGIHTTPState.TRAILERS})

# The pieces of the modules imported above rest on private state of hpack,
# hypercorn, h2 or asyncio, which each module's *_internals_present checks; the
# flags below, read by DuplexH2Protocol at call time, keep the stock piece where
# that state differs (a test turns one off on this module).

#: Whether :class:`DuplexH2Protocol` swaps in :class:`LiteralEncoder` and
#: :class:`QuickDecoder`; false with an hpack whose internals differ.
_QUICK_HPACK = hpack_internals_present()

#: Whether :class:`DuplexH2Protocol` swaps in :class:`BoundedBuffer`.
_BOUNDED_BUFFER = stream_buffer_internals_present()

#: Whether :class:`DuplexH2Protocol` merges DATA into a waiting message (:func:`merge_into_last`).
_MERGE_QUEUED = queue_internals_present()

#: Whether :class:`DuplexH2Protocol` uses :func:`receive_frames`; false with an h2
#: whose internals differ, which then parses every frame itself as before.
_FAST_DATA = h2_internals_present()


def protocol_error_reason(error: BaseException) -> str:
    """What a connection's ProtocolError says, without the bytes h2 quotes (a
    header's, which may be a credential), at most 200 characters."""
    reason = str(error).split(" b'", 1)[0].split(' b"', 1)[0].strip().rstrip(".")
    return (reason or type(error).__name__)[:200]


class _StreamCountingConnection(H2Connection):
    """h2's connection, walking its streams on fewer new streams.

    For every stream a client opens, h2 counts the open ones against
    ``MAX_CONCURRENT_STREAMS`` by walking every stream it holds, and forgets
    the closed ones on the way: 40 us a stream with 375 open on the connection,
    so a connection's n streams cost O(n^2), and the AWS SDK puts every session
    of an application on one connection. The count is used for that check
    alone, and while the streams held (open or closed, at most that many open)
    stay under the limit it cannot fail. The walk is then done only once the
    streams held double since the last one (64 at least) or near the limit: the
    check decides as h2's does, its message has the true count, and closed
    streams are forgotten a little later. Read it as an upper bound otherwise.
    """

    def _terminate_connection(self, error_code: ErrorCodes) -> None:
        """h2's, its GOAWAY saying why in its debug data.

        h2 calls this while handling the ProtocolError a client's frames raised
        (an oversized header list, a CONTINUATION flood, an HPACK decoding
        error...): the client was told only a bare code. The messages, such as
        :mod:`emulator.hpack_codec`'s, name the limit it broke.
        """
        error = sys.exc_info()[1]
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.highest_inbound_stream_id
        frame.error_code = error_code
        if error is not None:
            frame.additional_data = protocol_error_reason(error).encode("ascii", "replace")
        self.state_machine.process_input(ConnectionInputs.SEND_GOAWAY)
        self._prepare_for_sending([frame])

    _walk_from = 0
    #: The connection's send window at its highest (see _receive_window_update_frame).
    _peak_window = 65_535
    #: Set by a client's graceful GOAWAY (see _receive_goaway_frame).
    peer_going_away = False
    #: Streams refused (see _refuse), and frames that raise no event the
    #: budget counts (see _receive_window_update_frame): :class:`DuplexH2Protocol`
    #: counts them against the connection's control-frame budget.
    refusals = 0
    refused_any = False
    #: Whether a malformed request was reset yet (logged once a connection).
    malformed_any = False
    #: Set while a stream over the limit is taken only to be refused.
    _refusing = False

    @property
    def open_inbound_streams(self) -> int:
        if self._refusing:
            # Room for exactly the stream being refused, even at a limit of 0
            # (hypercorn's, once shutdown starts): h2's own check then passes.
            return self.local_settings.max_concurrent_streams - 1
        held = len(self.streams)
        if held < self._walk_from and held < self.local_settings.max_concurrent_streams:
            return held
        count = super().open_inbound_streams
        self._walk_from = max(2 * len(self.streams), _MIN_STREAM_WALK)
        return count

    def _receive_headers_frame(
        self, frame: hyperframe.frame.HeadersFrame
    ) -> tuple[list[Any], list[Any]]:
        """h2's, with a malformed request refused as a stream error.

        h2 checks a request's header block (names in lower case, no
        connection-specific fields, pseudo-headers first and once, no NUL, CR
        or LF in a value...) and raises ProtocolError, which ends the whole
        connection: every other session the SDK multiplexes on it would die
        with the one bad request. RFC 9113 §8.1.1 makes a malformed request a
        stream error of type PROTOCOL_ERROR, so a stream that this HEADERS
        frame opened is reset instead. The block was decoded before the check,
        so the connection's HPACK state stays in step. Any other failure, and
        any failure on a stream already open, still ends the connection.

        A request whose ``:method``, ``:path``, ``:scheme`` or ``:authority``
        holds a byte outside ASCII is malformed too (no URI or method has one):
        h2 lets it through, and hypercorn's ``decode("ascii")`` of it raised in
        the connection's task, which closed the connection without a GOAWAY.
        """
        opened = frame.stream_id not in self.streams
        if opened and frame.stream_id % 2:  # a client's new stream
            limit = self.local_settings.max_concurrent_streams
            count = self.open_inbound_streams
            if count + 1 > limit:
                return self._refuse(frame, f"Max inbound streams is {limit}, {count} open")
        try:
            frames, events = super()._receive_headers_frame(frame)
            if opened:
                check_ascii_pseudo_headers(events)
            return frames, events
        except h2.exceptions.ProtocolError as error:
            stream = self.streams.get(frame.stream_id)
            if not opened:  # trailers, say: the app under way is told of the reset
                reset = self._stream_error(frame.stream_id, error)
                if reset is None:
                    raise
                return reset
            if (
                stream is None
                or type(error) is not h2.exceptions.ProtocolError
                or isinstance(error.__cause__, _HPACK_FAILURES)
                or stream.state_machine.state not in _RESETTABLE
            ):
                raise
            # h2's messages quote the offending bytes, which may be a credential.
            reason = protocol_error_reason(error)
            # Logged once a connection, as refusals are.
            (log.debug if self.malformed_any else log.info)(
                "stream %d: malformed request reset (%s)", frame.stream_id, reason
            )
            self.malformed_any = True
            self.refusals += 1  # counted against the control budget, as a refusal
            return stream.reset_stream(ErrorCodes.PROTOCOL_ERROR), []

    def _stream_error(self, stream_id: int, error: Exception) -> tuple[list[Any], list[Any]] | None:
        """Reset ``stream_id`` alone for a client's frame h2 refused with a
        connection error that RFC 9113 makes a stream error: a body that does
        not match its content-length, trailers with a pseudo-header or without
        END_STREAM (§8.1.1), a stream depending on itself (§5.3.1), a
        WINDOW_UPDATE of 0 on a stream (§6.9). h2 ends the whole connection for
        each, and with it every session the SDK multiplexes on it.

        Returns the RST_STREAM to send and a ``StreamReset`` event, which ends the
        stream's app in hypercorn as a client's reset does; None when the stream
        is in no state of :data:`_RESETTABLE`, or the error is not one of those (an HPACK failure, a
        flow-control error, too many streams): the caller re-raises it.
        """
        stream = self.streams.get(stream_id)
        if (
            stream is None
            or type(error) not in _STREAM_LEVEL_ERRORS
            or isinstance(error.__cause__, _HPACK_FAILURES)
            or stream.state_machine.state not in _RESETTABLE
        ):
            return None
        reason = str(error).split(" b'", 1)[0].split(' b"', 1)[0]
        (log.debug if self.malformed_any else log.info)(
            "stream %d: reset for a malformed frame (%s)", stream_id, reason
        )
        self.malformed_any = True
        frames = stream.reset_stream(ErrorCodes.PROTOCOL_ERROR)
        event = h2.events.StreamReset(
            stream_id=stream_id, error_code=ErrorCodes.PROTOCOL_ERROR, remote_reset=False
        )
        return frames, [event]

    def _receive_rst_stream_frame(
        self, frame: hyperframe.frame.RstStreamFrame
    ) -> tuple[list[Any], list[Any]]:
        """h2's, with a RST_STREAM on a stream never opened a connection error
        (RFC 9113 §6.4; h2 ignores it), and one on a stream gone a charge
        against the control budget: neither raises an event, and a client
        sending them as fast as it could held up every other connection."""
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            highest = (
                self.highest_inbound_stream_id
                if frame.stream_id % 2
                else self.highest_outbound_stream_id
            )
            if frame.stream_id > highest:
                raise h2.exceptions.ProtocolError(
                    f"RST_STREAM on stream {frame.stream_id}, which was never opened"
                )
        if stream is None or stream.closed:
            self.refusals += 1
        return super()._receive_rst_stream_frame(frame)

    def _receive_window_update_frame(
        self, frame: hyperframe.frame.WindowUpdateFrame
    ) -> tuple[list[Any], list[Any]]:
        """h2's, with a WINDOW_UPDATE that gives more than the server's output
        used (its window above the highest it was) charged against the control
        budget, as is one for a stream gone. A client returns what the server
        sent, many times a second under load, and is not charged for that; one
        sending WINDOW_UPDATEs of 1 as fast as it could held up every other
        connection."""
        if frame.stream_id:
            stream = self.streams.get(frame.stream_id)
            if stream is None or stream.closed:
                self.refusals += 1
                return super()._receive_window_update_frame(frame)
            window = stream.outbound_flow_control_window + frame.window_increment
            if window > getattr(stream, "_peak_window", self.remote_settings.initial_window_size):
                # Our mark on h2's stream object, which declares no such attribute.
                stream._peak_window = window  # type: ignore[attr-defined]
                self.refusals += 1
        else:
            window = self.outbound_flow_control_window + frame.window_increment
            if window > self._peak_window:
                self._peak_window = window
                self.refusals += 1
        return super()._receive_window_update_frame(frame)

    def _receive_data_frame(self, frame: hyperframe.frame.DataFrame) -> tuple[list[Any], list[Any]]:
        """h2's, with a body longer or shorter than its content-length a stream
        error (see :meth:`_stream_error`). The frame's bytes, which h2 counted
        against the connection's window, are given back. An empty frame that
        does not end its stream is charged against the control budget: it
        carries nothing, and a flood of them held up every other connection."""
        if not frame.flow_controlled_length and "END_STREAM" not in frame.flags:
            self.refusals += 1
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.ProtocolError as error:
            reset = self._stream_error(frame.stream_id, error)
            if reset is None:
                raise
            frames, events = reset
            manager = self._inbound_flow_control_window_manager
            increment = manager.process_bytes(frame.flow_controlled_length)
            if increment:
                update = hyperframe.frame.WindowUpdateFrame(0)
                update.window_increment = increment
                frames = [*frames, update]
            return frames, events

    def _receive_priority_frame(
        self, frame: hyperframe.frame.HeadersFrame | hyperframe.frame.PriorityFrame
    ) -> tuple[list[Any], list[Any]]:
        """h2's, with an open stream that depends on itself a stream error."""
        try:
            return super()._receive_priority_frame(frame)
        except h2.exceptions.ProtocolError as error:
            # In a HEADERS frame, _receive_headers_frame decides.
            if not isinstance(frame, hyperframe.frame.PriorityFrame):
                raise
            reset = self._stream_error(frame.stream_id, error)
            if reset is None:
                raise
            return reset

    def _receive_goaway_frame(
        self, frame: hyperframe.frame.GoAwayFrame
    ) -> tuple[list[Any], list[Any]]:
        """h2's, except that a client's GOAWAY with NO_ERROR lets open streams finish.

        h2 closes its side of the connection on any GOAWAY, dropping what it had
        yet to send, and hypercorn then closes the socket: every session open on
        the connection was cut off. By RFC 9113 §6.8 a graceful GOAWAY only says
        the client takes no new streams from the server, which never opens any;
        the client closes the connection once its streams are done. So the
        connection stays open: h2's state does not change, :attr:`peer_going_away`
        is set, and :class:`DuplexH2Protocol` does not pass the event on to
        hypercorn. A GOAWAY with an error code still ends the connection at once.
        """
        if (
            frame.error_code != ErrorCodes.NO_ERROR
            or self.state_machine.state not in CONNECTION_OPEN
        ):
            return super()._receive_goaway_frame(frame)
        self.peer_going_away = True
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def _refuse(
        self, frame: hyperframe.frame.HeadersFrame, reason: str
    ) -> tuple[list[Any], list[Any]]:
        """Refuse a stream past ``MAX_CONCURRENT_STREAMS`` with REFUSED_STREAM.

        h2 raises TooManyStreamsError, which ends the connection and every
        session on it, for a client one stream ahead of the SETTINGS it has
        read; RFC 9113 §5.1.2 lets the server refuse that stream alone, and
        REFUSED_STREAM tells the client it was not processed, so it may retry.
        The stream is taken as any other first (its header block must be
        decoded to keep HPACK in step, and h2 then knows its id and ignores the
        rest of it) and reset at once; the app never sees it.
        """
        self._refusing = True
        try:
            frames, _ = self._receive_headers_frame(frame)
        finally:
            self._refusing = False
        stream = self.streams.get(frame.stream_id)
        if frames or stream is None or stream.state_machine.state not in _RESETTABLE:
            return frames, []  # malformed as well: reset already
        # Logged once a connection: a client past the limit may keep trying.
        (log.debug if self.refused_any else log.info)(
            "stream %d: refused (%s)", frame.stream_id, reason
        )
        self.refused_any = True
        self.refusals += 1
        return stream.reset_stream(ErrorCodes.REFUSED_STREAM), []


#: The streams held a walk waits for at least: without a floor, a connection
#: holding few (none, once its streams all closed: twice 0) would walk again at
#: nearly every new stream; 64 closed streams kept until then cost little memory,
#: and one walk over them little time.
_MIN_STREAM_WALK = 64

#: Errors h2 raises for a client's frame that are a stream's, not the
#: connection's, by RFC 9113 (see _StreamCountingConnection._stream_error).
_STREAM_LEVEL_ERRORS = frozenset(
    {h2.exceptions.ProtocolError, h2.exceptions.InvalidBodyLengthError}
)

#: What h2 wraps a header block's failed decoding in: the connection's HPACK
#: state is then lost, and only ending the connection is safe.
_HPACK_FAILURES = (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError)

#: States from which a stream that a malformed request opened, or a stream error
#: (RFC 9113 §8.1.1: a body that does not match its content-length) can be reset;
#: from others (an informational status sent to a server, say) h2's error stands.
#: HALF_CLOSED_LOCAL is a stream answered while its client still sends (a 400 for
#: a Content-Length over the limit), which curl then ends short.
_RESETTABLE = frozenset(
    {StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE, StreamState.HALF_CLOSED_LOCAL}
)

#: States of a stream whose client has not ended its side.
_CLIENT_SENDING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})


class DuplexH2Protocol(H2Protocol):
    """hypercorn's ``H2Protocol`` for streams whose response ends before the request.

    Constructed by hypercorn exactly as ``H2Protocol`` is; see the module
    docstring for the behaviour it changes. An ASGI app triggers a stream reset
    by returning (or raising) after ``http.response.start`` and before the body
    message with ``more_body: False``; the rest of a request whose response is
    complete is drained until the client ends it.
    """

    #: Request bytes drained into a stream whose response is complete before the
    #: stream is reset with NO_ERROR: about 17 minutes of 16 kHz mono pcm, far more
    #: than a client that noticed the end of the response still sends.
    max_drain_bytes: int = 32 * 1024 * 1024

    #: Seconds after which a drained stream whose client sent nothing no longer
    #: keeps its connection from idling (0: it always does); the server sets it
    #: from ``config.drain_quiet`` (its ``--idle-timeout``). A client that sent
    #: one HEADERS frame and went silent held its connection, a file
    #: descriptor, for ever. A client that sends on keeps it.
    drain_quiet: float = 15.0

    #: RST_STREAM code for a response the app left unfinished. INTERNAL_ERROR,
    #: not CANCEL: RFC 9113 §7 gives CANCEL to an endpoint that no longer needs
    #: the stream, INTERNAL_ERROR to one that failed; here the server failed to
    #: finish a response the client still wants. nginx does the same
    #: (``ngx_http_v2_close_stream``: INTERNAL_ERROR if the response is not
    #: finished, NO_ERROR if only the request is).
    unfinished_response_error: ErrorCodes = ErrorCodes.INTERNAL_ERROR

    #: Extra receive window for the whole connection. h2's default 64 KiB caps a
    #: connection at 64 KiB per round trip shared by all its streams, and the real
    #: SDK puts every session of an application on one connection.
    connection_window: int = 16 * 1024 * 1024

    #: Control frames (PING, SETTINGS, PRIORITY, GOAWAY; refused HEADERS) a
    #: client may send at once, and per second after that, before its
    #: connection is closed with GOAWAY ENHANCE_YOUR_CALM: each costs the
    #: server's one loop a few microseconds,
    #: and 200,000 of them held every other connection up for a second. A real
    #: client sends a handful (the AWS SDK: its SETTINGS, the odd PING).
    control_burst: int = 10_000
    control_rate: float = 1_000.0

    #: Whether the client's broken frames (a header list over the limit, a
    #: CONTINUATION flood...) were logged: once a connection.
    _said_protocol_error = False

    #: Receive window of each stream whose app reads (0 keeps h2's 64 KiB).
    #: With 64 KiB a client sending faster than real time (a file replayed, a
    #: bulk load) waited for a WINDOW_UPDATE every 32 KiB and cut an event at
    #: the window's edge into two DATA frames, which the emulator then reads
    #: the slow way; a 10 s session's input (450 KB of JSON audio events) now
    #: fits in one window. A real-time stream gets a WINDOW_UPDATE every 12 s
    #: of audio instead of every 0.75 s. The window widens once a DATA frame
    #: finds everything sent before it taken by the app (:meth:`_receive_data`),
    #: with the next WINDOW_UPDATE h2 sends (:class:`WideningWindow`); not by
    #: SETTINGS_INITIAL_WINDOW_SIZE: the AWS SDK's CRT client kept its stream
    #: at 64 KiB after a SETTINGS frame raised it, and stalled there. A stream
    #: whose app stops before reading (a chaos delay) keeps 64 KiB, as before:
    #: 256 of them fill the connection's 16 MiB window. One that stops after
    #: reading (a delay before an output) can hold up to 1 MiB, and 16 of
    #: those would fill it; a real-time client takes 24 s to send that much.
    stream_window: int = 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._control_tokens = float(self.control_burst)
        self._control_at = time.monotonic()
        if type(self.connection) is H2Connection:
            # hypercorn built and configured it: only the stream count, the
            # refusal of a malformed request, the stream errors and the frames
            # charged to the control budget change. h2
            # dispatches frames through a table of methods bound when it was
            # built: rebind those it reads them in.
            connection = self.connection
            connection.__class__ = _StreamCountingConnection
            table = connection._frame_dispatch_table
            table[hyperframe.frame.HeadersFrame] = connection._receive_headers_frame
            table[hyperframe.frame.GoAwayFrame] = connection._receive_goaway_frame
            table[hyperframe.frame.DataFrame] = connection._receive_data_frame
            table[hyperframe.frame.PriorityFrame] = connection._receive_priority_frame
            table[hyperframe.frame.RstStreamFrame] = connection._receive_rst_stream_frame
            table[hyperframe.frame.WindowUpdateFrame] = connection._receive_window_update_frame
        # Before any SETTINGS arrive: h2 sets the peer's table size on these.
        self.connection.encoder = LiteralEncoder() if _QUICK_HPACK else CappedEncoder()
        decoder = QuickDecoder() if _QUICK_HPACK else GuardedDecoder()
        decoder.max_header_list_size = self.connection.decoder.max_header_list_size
        decoder.max_allowed_table_size = self.connection.decoder.max_allowed_table_size
        self.connection.decoder = decoder
        # hypercorn's PriorityTree scans every blocked stream on each send (13-30%
        # of server time with 500-1000 live streams); we use no priorities.
        self.priority = RoundRobin()  # type: ignore[assignment]
        # Streams to reset once their send buffer has drained.
        self._unfinished: set[int] = set()
        # Bytes drained so far per stream whose response is complete.
        self._drained: dict[int, int] = {}
        # Streams whose response is complete and whose client is still sending
        # (drained by _receive_data until it ends them), each with when its
        # client last sent (or its response ended): see defer_idle.
        self._draining: dict[int, float] = {}
        self._idle_recheck: asyncio.TimerHandle | None = None
        quiet = getattr(self.config, "drain_quiet", None)
        self.drain_quiet = self.drain_quiet if quiet is None else float(quiet)
        # The app queue of each open HTTP stream, for _receive_data (asyncio only).
        self._app_queues: dict[int, asyncio.Queue[Any]] = {}
        # The InlineBody of each of those streams.
        self._inline: dict[int, InlineBody] = {}
        # Request events held, unacknowledged, for a stream whose app queue was
        # full, and the task handing them over as the app reads (see _hold).
        self._held: dict[int, collections.deque[h2.events.Event]] = {}
        self._feeders: dict[int, asyncio.Task[None]] = {}
        # Set when its stream closes, for ConnectionControl.wait_closed.
        self._closing: dict[int, asyncio.Event] = {}
        # Streams whose window widens once their app is seen reading (see
        # _receive_data), each with whether it has had DATA yet.
        self._narrow: dict[int, bool] = {}
        # Batches of events under way in _handle_events, each of which ends
        # with a flush.
        self._batches = 0
        # The last stream id of the graceful GOAWAY this server sent on the
        # connection (ConnectionControl.goaway), None before one: streams above
        # it are refused, and the connection closes once the rest have ended.
        self._goaway_last: int | None = None
        # Set by the PING ACK that shows the client read an idle retirement's
        # GOAWAY (see retire_idle).
        self._retire_acked: asyncio.Event | None = None

    async def initiate(
        self, headers: list[tuple[bytes, bytes]] | None = None, settings: bytes | None = None
    ) -> None:
        await super().initiate(headers, settings)
        if self.connection_window > 0:
            self.connection.increment_flow_control_window(self.connection_window)
            await self._flush()
        if self.idle:
            # A cleartext connection starts as HTTP/1.1, whose first bytes (the
            # HTTP/2 preface) stopped the keep-alive timer; nothing restarted it
            # until a stream ended, so a client that sent only the preface held
            # its connection, a file descriptor, for ever (20,000 of them
            # exhausted the server's). Over TLS this restarts the same timer.
            await self.send(Updated(idle=True))

    async def handle(self, event: Event) -> None:
        if type(event) is RawData and _FAST_DATA:
            # The base class's RawData branch, with receive_frames for h2's
            # receive_data: plain DATA skips h2's parser.
            try:
                events = receive_frames(self.connection, event.data)
            except h2.exceptions.ProtocolError as error:
                # Said once, naming the client (data read before the close raises
                # again): on a shared emulator the team whose client broke it, and
                # whoever runs it, see why.
                if not self._said_protocol_error:
                    self._said_protocol_error = True
                    if (left_out := _BROKEN_FRAMES.take()) is not None:
                        host, port = (self.client or ("?", 0))[:2]
                        log.warning(
                            "client %s:%s: %s: connection closed with GOAWAY %s%s",
                            host,
                            port,
                            protocol_error_reason(error),
                            _code_name(error.error_code),
                            left_out_text(left_out, _BROKEN_FRAMES.interval),
                        )
                await self._flush()
                await self.send(Closed())
            else:
                await self._handle_events(events)
        elif type(event) is Closed:
            if self._idle_recheck is not None:
                self._idle_recheck.cancel()
                self._idle_recheck = None
            self._draining.clear()
            await super().handle(event)
            # The base class stops its send task here but leaves the stream
            # buffers open: an app that ends its response after the disconnect
            # (as ours does, once its pump returns) then waits in drain() for a
            # task that is gone, and the server never shuts down. A closed
            # buffer lets drain() return and refuses later pushes. They stay in
            # the dict: the send task may be inside _send_data (this can run
            # from its flush) and looks its stream's buffer up again.
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()
            self._unfinished.clear()
        else:
            await super().handle(event)

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        # Events are handled one at a time because the app can close a stream
        # while an earlier event of the same batch awaits: whether the stream is
        # still known must be decided just before each DATA event. DATA, nearly
        # every event under load, skips the base class; the rest go to it.
        self._batches += 1  # a flush follows: _send_now leaves its frames to it
        try:
            flush = await self._handle_batch(events)
        finally:
            # Before the flush, which may wait for the socket after taking h2's
            # bytes: a frame made meanwhile needs a flush of its own.
            self._batches -= 1
        if flush:
            await self._flush()

    async def _handle_batch(self, events: list[h2.events.Event]) -> bool:
        """Handle ``events``; False if that closed the connection (flushed)."""
        connection: Any = self.connection
        refused = getattr(connection, "refusals", 0)
        if refused:  # streams refused while h2 read these frames
            connection.refusals = 0
            if not self._control_frame(refused):
                await self._calm_down()
                return False
        # Streams the client opened and reset in this same read ("rapid reset"):
        # never handed to hypercorn, so no app starts for them. Each had cost an
        # app's start and end, about 260 us, and a few connections each under
        # the control budget froze the server for seconds.
        cancelled: set[int] = set()
        if any(type(event) is h2.events.StreamReset for event in events):
            opened = {e.stream_id for e in events if type(e) is h2.events.RequestReceived}
            cancelled = {
                e.stream_id
                for e in events
                if type(e) is h2.events.StreamReset and e.stream_id in opened
            }
        for event in events:
            if cancelled and type(event) is not h2.events.DataReceived:
                stream_id = getattr(event, "stream_id", None)
                if stream_id in cancelled:
                    if type(event) is h2.events.StreamReset:
                        self._drained.pop(stream_id, None)  # its DATA, drained as unknown
                        if not self._control_frame():
                            await self._calm_down()
                            return False
                    continue
            if self._held and isinstance(event, (h2.events.DataReceived, h2.events.StreamEnded)):
                held = self._held.get(event.stream_id)
                if held is not None:  # behind what is held already, in order
                    held.append(event)
                    continue
            if isinstance(event, h2.events.DataReceived):
                await self._receive_data(event)
            else:
                draining = False
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    self._drained.pop(event.stream_id, None)
                    draining = self._draining.pop(event.stream_id, None) is not None
                    if draining and not self._draining and self._idle_recheck is not None:
                        self._idle_recheck.cancel()  # nothing left to look at again
                        self._idle_recheck = None
                if isinstance(event, h2.events.StreamEnded) and self._queue_full(event.stream_id):
                    self._hold(event)
                    continue
                if type(event) in _CONTROL_EVENTS and not self._control_frame():
                    await self._calm_down()
                    return False
                if (
                    type(event) is h2.events.PingAckReceived
                    and self._retire_acked is not None
                    and event.ping_data == _RETIRE_PING
                ):
                    self._retire_acked.set()
                if (
                    type(event) is h2.events.RequestReceived
                    and self._goaway_last is not None
                    and event.stream_id > self._goaway_last
                ):
                    # Opened after this server's GOAWAY (the client had not read
                    # it yet, or ignores it): never processed, so REFUSED_STREAM
                    # (RFC 9113 §8.7: safe to retry elsewhere). Counted against
                    # the control budget, as any refused stream.
                    log.debug(
                        "stream %d: refused, opened after this server's GOAWAY", event.stream_id
                    )
                    self.connection.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                    if not self._control_frame():
                        await self._calm_down()
                        return False
                    continue
                if type(event) is h2.events.RequestReceived and self.context.terminated.is_set():
                    # Shutting down: refused (REFUSED_STREAM says nothing of it was
                    # processed, so a client may retry it elsewhere), where hypercorn
                    # resets with NO_ERROR, which says nothing.
                    self.connection.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                    self.connection.update_settings(
                        {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0}
                    )
                    continue
                if (
                    isinstance(event, h2.events.ConnectionTerminated)
                    and self.connection.state_machine.state in CONNECTION_OPEN
                ):
                    # A client's graceful GOAWAY (see _StreamCountingConnection):
                    # its open streams finish, and it closes the connection.
                    log.debug("client GOAWAY (NO_ERROR): %d streams finish", len(self.streams))
                    await self._close_if_gone_away()
                    continue
                await super()._handle_events([event])
                if isinstance(event, h2.events.StreamReset):
                    await self._discard_output(event.stream_id)
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    await self._close_if_gone_away()  # a request drained to its end
                    if draining:
                        await self._report_idle()
        return True

    async def shutdown_notice(self) -> None:
        """The server is stopping: send GOAWAY (NO_ERROR) naming the last stream it
        takes, so that the client opens no more on this connection; the streams
        under way go on for the grace period (see ``hypercorn_tcp``)."""
        if self.connection.state_machine.state not in CONNECTION_OPEN:
            return
        frame = GoAwayFrame(stream_id=0)
        frame.last_stream_id = self._goaway_last_stream_id()
        frame.error_code = ErrorCodes.NO_ERROR
        frame.additional_data = b"server shutting down"
        await self.send(RawData(data=frame.serialize()))

    def reset_open_streams(self) -> bytes:
        """The server is dropping the connection (its shutdown's grace period is
        over): end every stream still open, and return the frames to write.

        A stream whose response has not started (a chaos delay holding it) is
        answered :data:`SHUTDOWN_ERROR` (a 500 ``InternalServerException``): dropped
        with no answer, or reset, it left the SDK waiting for ever, as the CRT
        client waits for a response it never gets. The others are reset: their
        output ends as after any reset.
        """
        connection = self.connection
        if self.closed or connection.state_machine.state not in CONNECTION_OPEN:
            return b""
        status, headers, body = SHUTDOWN_ERROR
        for stream_id, stream in list(connection.streams.items()):
            if stream.closed:
                continue
            try:
                if not stream.state_machine.headers_sent and len(body) <= min(
                    connection.local_flow_control_window(stream_id),
                    connection.max_outbound_frame_size,
                ):
                    connection.send_headers(stream_id, [(b":status", b"%d" % status), *headers])
                    connection.send_data(stream_id, body, end_stream=True)
                else:
                    connection.reset_stream(stream_id, self.unfinished_response_error)
            except h2.exceptions.ProtocolError:
                continue  # the client closed it meanwhile
        return connection.data_to_send()

    def release(self) -> None:
        """The connection has ended: drop h2's table of bound methods, a cycle
        through its connection object (and so its streams) that only a full
        collection would free."""
        self.connection.__dict__.pop("_frame_dispatch_table", None)

    async def goaway(self) -> None:
        """Send a graceful GOAWAY (NO_ERROR) and retire the connection: the streams
        under way (up to the GOAWAY's last stream id) finish, later ones are
        refused (:meth:`_handle_batch`), and the connection is closed once the
        last has ended (:meth:`_close_if_gone_away`), as RFC 9113 §6.8 has a
        graceful shutdown end. The stream calling this is one of those under way.

        The frame is written directly: h2's ``close_connection`` would also move
        its own state machine to CLOSED and refuse the rest of the streams' data.
        """
        if self.closed or self.connection.state_machine.state not in CONNECTION_OPEN:
            return
        await self._send_goaway()
        await self._close_if_gone_away()

    async def _send_goaway(self) -> None:
        """Write a graceful GOAWAY (NO_ERROR) naming the last stream taken, which
        retires the connection: later streams are refused (:meth:`_handle_batch`)."""
        self._goaway_last = self._goaway_last_stream_id()
        frame = GoAwayFrame(stream_id=0)
        frame.last_stream_id = self._goaway_last
        frame.error_code = ErrorCodes.NO_ERROR
        await self.send(RawData(data=frame.serialize()))

    async def retire_idle(self) -> None:
        """The keep-alive timer's end: retire the connection gracefully.

        hypercorn closed it at once, with no GOAWAY: a stream the client opened as
        the timer fired was dropped just after it started, or never reached the
        server, and the CRT client then waited for ever for its response (a CI
        job pausing about the keep-alive timeout between sessions on one client
        hung on 1 in 10-15 of them). Now a GOAWAY (NO_ERROR) names the last
        stream taken, a stream that raced the timer finishes, one opened after
        the GOAWAY is refused (REFUSED_STREAM) and fails at the client, and the
        connection closes once the client acknowledges a PING sent with the
        GOAWAY, and :data:`RETIRE_GRACE` more (:data:`IDLE_LINGER` seconds at
        most), or once the streams under way have ended.
        """
        if self.closed:
            return
        if self.connection.state_machine.state not in CONNECTION_OPEN:
            await self.send(Closed())
            return
        # A PING with the GOAWAY (just ahead of it: an h2 client takes no frame
        # after a GOAWAY): its ACK shows the client has the GOAWAY too, and the
        # connection closes then, not IDLE_LINGER later. The CRT client keeps
        # opening streams on a connection until it is closed, its GOAWAY read or
        # not: each session started in those 0.5 s failed, and every retry too.
        acked = self._retire_acked = asyncio.Event()
        started = time.monotonic()
        try:
            self.connection.ping(_RETIRE_PING)
            await self._flush()
            if self._goaway_last is None:  # not retired already (a chaos GOAWAY)
                await self._send_goaway()
            await asyncio.wait_for(acked.wait(), IDLE_LINGER)
            # The client may write a stream it queued before it read the GOAWAY
            # after its PING ACK (control frames first): taken, and refused,
            # before the close, which would leave it unanswered (the CRT client
            # then waits for ever).
            await asyncio.sleep(min(RETIRE_GRACE, IDLE_LINGER - (time.monotonic() - started)))
        except (TimeoutError, h2.exceptions.ProtocolError):
            pass
        finally:
            self._retire_acked = None
        if self.closed:
            return
        if self.streams:
            # A stream that raced the timer is under way: the connection closes
            # once it ends (_close_if_gone_away), or at the next idle timeout.
            await self._close_if_gone_away()
            return
        # Idle for hypercorn: a stream left is one its app has finished, whose
        # client went quiet (see defer_idle); it goes with the connection, as the
        # timer always closed it.
        await self._flush()
        await self.send(Closed())

    def _goaway_last_stream_id(self) -> int:
        """The last stream id for a GOAWAY now: the highest the client opened,
        but never above an earlier GOAWAY's (RFC 9113 §6.8: it must not grow;
        the streams refused since count in h2's highest id)."""
        last = self.connection.highest_inbound_stream_id
        return last if self._goaway_last is None else min(last, self._goaway_last)

    async def _discard_output(self, stream_id: int) -> None:
        """Close the response buffer of a stream reset (by the client, or by
        :meth:`_abort`), dropping what it holds.

        Nothing more can be sent on it, but hypercorn leaves the buffer open: an
        app waiting in send() for window the client will never grant now (see
        :class:`BoundedBuffer`) would wait for ever, its session open. A closed
        buffer returns that send and refuses later ones. It is closed, not
        dropped: the send task, woken for the stream (it may be inside
        _send_data now), then forgets it as for any stream that failed.
        """
        buffer = self.stream_buffers.get(stream_id)
        if buffer is not None:
            await buffer.close()
            self.priority.unblock(stream_id)
            await self.has_data.set()

    async def _close_if_gone_away(self) -> None:
        """Close a connection on which either side sent a graceful GOAWAY (the
        client, or this server: :meth:`goaway`) once it has nothing left: no
        stream open, nothing waiting to be sent, no request still being sent."""
        if (
            (self._goaway_last is not None or getattr(self.connection, "peer_going_away", False))
            and not self.streams
            and not self.stream_buffers
            and not self.closed
            # A client may still be sending a request whose response is done.
            and all(stream.closed for stream in self.connection.streams.values())
        ):
            await self._flush()
            await self.send(Closed())

    def defer_idle(self) -> bool:
        """Whether the connection, idle for hypercorn, must not be called idle yet:
        a stream the app has finished with is still open from its client's side,
        which sent within :attr:`drain_quiet` (hypercorn counts only the streams
        its app holds, and its keep-alive timer closed the connection under a
        client still sending, whose SDK then hung in ``send``). The server's
        idle report is then made again once that client has been quiet that
        long (:meth:`_recheck_idle`)."""
        if self.closed:
            return False
        quiet = self.drain_quiet
        now = time.monotonic()
        latest = None
        for stream_id, since in list(self._draining.items()):
            if self._stream_state(stream_id) not in _CLIENT_SENDING:
                del self._draining[stream_id]  # reset since: no longer sending
            elif quiet <= 0 or now - since < quiet:
                latest = since if latest is None else max(latest, since)
        if latest is None:
            return False
        if self._idle_recheck is None and quiet > 0:
            self._idle_recheck = asyncio.get_running_loop().call_later(
                latest + quiet - now, self._recheck_idle
            )
        return True

    def _recheck_idle(self) -> None:
        self._idle_recheck = None
        if not self.closed:
            self.task_group.spawn(self._report_idle)

    async def _report_idle(self) -> None:
        """Tell the server the connection is idle if it now is (its TCP server
        asks :meth:`defer_idle`), which starts its keep-alive timer."""
        if not self.closed and self.idle:
            await self.send(Updated(idle=True))

    def _control_frame(self, count: int = 1) -> bool:
        """Take ``count`` control frames from the connection's budget (a token
        bucket of :attr:`control_burst`, refilled at :attr:`control_rate` a
        second); False once it is spent."""
        now = time.monotonic()
        tokens = self._control_tokens + (now - self._control_at) * self.control_rate
        self._control_at = now
        if tokens < count:
            self._control_tokens = tokens
            return False
        self._control_tokens = min(tokens, float(self.control_burst)) - count
        return True

    async def _calm_down(self) -> None:
        """Close a connection flooding the server with control frames."""
        log.warning(
            "client %s: more than %d control frames (PING, SETTINGS, PRIORITY, GOAWAY, "
            "refused or reset streams) at once, or %g a second: connection closed "
            "with GOAWAY ENHANCE_YOUR_CALM",
            self.client,
            self.control_burst,
            self.control_rate,
        )
        try:
            self.connection.close_connection(
                ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"too many control frames"
            )
        except h2.exceptions.ProtocolError:
            pass  # closed already
        await self._flush()
        await self.send(Closed())

    def _queue_full(self, stream_id: int) -> bool:
        queue = self._app_queues.get(stream_id)
        return queue is not None and queue.full()

    def _hold(self, event: h2.events.DataReceived | h2.events.StreamEnded) -> None:
        """Keep ``event`` for a stream whose app queue is full, instead of waiting.

        hypercorn waits for room in the stream's queue, and reads nothing more
        from the connection meanwhile: one app busy elsewhere (a chaos delay on
        its output, say) stalled every other stream of the connection. The
        stream's events are held instead, DATA unacknowledged, so HTTP/2 flow
        control stops that stream's client once its window is spent and the
        others go on; a task hands them over in order as the app reads.
        """
        stream_id = event.stream_id
        self._held[stream_id] = collections.deque([event])
        queue = self._app_queues[stream_id]
        self._feeders[stream_id] = asyncio.get_running_loop().create_task(
            self._feed(stream_id, queue)
        )

    async def _feed(self, stream_id: int, queue: asyncio.Queue[Any]) -> None:
        # Under bulk load most of a stream's DATA comes this way: the window it
        # took is handed back (flushed) before waiting for room and once
        # nothing is left, not after each event.
        held = self._held[stream_id]
        connection = self.connection
        try:
            while held:
                event = held[0]
                if isinstance(event, h2.events.DataReceived):
                    message = {"type": "http.request", "body": event.data, "more_body": True}
                    if queue.full():
                        await self._flush()
                        await queue.put(message)
                    else:
                        queue.put_nowait(message)
                    held.popleft()
                    connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
                else:
                    held.popleft()
                    stream = self.streams.get(stream_id)
                    if stream is not None:
                        if queue.full():  # it waits for room: hand the window back first
                            await self._flush()
                        await stream.handle(EndBody(stream_id=stream_id))
                if not held:
                    # The flush may wait (a client slow to read): events held
                    # meanwhile are handed over by this loop, not dropped.
                    await self._flush()
        finally:
            self._release(stream_id)

    def _release(self, stream_id: int) -> None:
        """Forget what is held for ``stream_id``, handing its DATA's window back."""
        self._feeders.pop(stream_id, None)
        held = self._held.pop(stream_id, None)
        for event in held or ():
            if isinstance(event, h2.events.DataReceived):
                try:
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, stream_id
                    )
                except h2.exceptions.ProtocolError:
                    pass  # the connection has gone

    async def _receive_data(self, event: h2.events.DataReceived) -> None:
        """Hand a DATA frame's payload to its stream, or drain it; no flush.

        For an HTTP stream whose app queue has room this does what
        ``HTTPStream.handle(Body(...))`` does, the same message on the same
        queue, without the base class's chain of awaits per event or its flush
        per event, which cost a socket write per WINDOW_UPDATE:
        :meth:`_handle_events` flushes once per batch of frames instead. For a
        full queue the event is held (:meth:`_hold`); a WebSocket stream, or
        trio, goes through the stream's own ``handle``, which waits for room.
        Either way the data is acknowledged only once the app's queue has taken
        it, which is what bounds a connection's memory.
        """
        stream_id = event.stream_id
        queue = self._app_queues.get(stream_id)
        if queue is not None and not queue.empty() and _MERGE_QUEUED:
            inline = self._inline.get(stream_id)
            if inline is not None and inline.merge and merge_into_last(queue, event.data):
                self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
                return
        if queue is not None and queue.full():
            self._hold(event)
            return
        if queue is not None:
            if self._narrow:
                seen = self._narrow.get(stream_id)
                if seen is not None:
                    if not seen:
                        self._narrow[stream_id] = True
                    elif queue.empty():
                        # Its app has taken everything sent so far: it reads.
                        # One stopped before reading (a chaos delay) stays at
                        # 64 KiB, so that few of them cannot take the
                        # connection's window from every other stream.
                        del self._narrow[stream_id]
                        self._widen_window(stream_id)
            inline = self._inline.get(stream_id)
            # Only to an app waiting on an empty queue: anything queued is older.
            if inline is not None and inline.handler is not None and queue.empty():
                taken = inline.take(event.data, stream_id)
                if taken is not None:
                    if taken:
                        queue.put_nowait({"type": "http.request", "body": b"", "more_body": True})
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, stream_id
                    )
                    return
            queue.put_nowait({"type": "http.request", "body": event.data, "more_body": True})
        elif (stream := self.streams.get(stream_id)) is not None:
            await stream.handle(Body(stream_id=stream_id, data=event.data))
        else:
            # The response is complete or abandoned: nobody reads this, but it
            # consumed connection window that must be handed back.
            self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
            drained = self._drained.get(stream_id, 0) + event.flow_controlled_length
            self._drained[stream_id] = drained
            since = self._draining.get(stream_id)
            if since is not None:
                now = self._draining[stream_id] = time.monotonic()
                if self.drain_quiet > 0 and now - since >= self.drain_quiet:
                    # Quiet long enough to have let the connection idle: it
                    # sends again, so its keep-alive timer must not close it,
                    # and the connection is looked at again once it is quiet.
                    await self.send(Updated(idle=False))
                    if self._idle_recheck is None:
                        self._idle_recheck = asyncio.get_running_loop().call_later(
                            self.drain_quiet, self._recheck_idle
                        )
            if drained > self.max_drain_bytes:
                self._drained.pop(stream_id, None)
                self._draining.pop(stream_id, None)
                await self._reset(stream_id, ErrorCodes.NO_ERROR)
                await self._close_if_gone_away()
                await self._report_idle()
            return
        self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)

    async def _create_stream(self, request: h2.events.RequestReceived) -> None:
        await super()._create_stream(request)
        stream = self.streams.get(request.stream_id)
        queue = app_queue(stream)
        if request.stream_ended is None and queue is not None and self.stream_window > 0:
            self._narrow[request.stream_id] = False
        buffer = self.stream_buffers.get(request.stream_id)
        if type(buffer) is StreamBuffer and _BOUNDED_BUFFER and queue is not None:
            # Only where a full request queue is held (asyncio): under trio an app
            # waiting in send() would stop reading, and its full queue would
            # stall the connection's reader, every stream with it.
            buffer.__class__ = BoundedBuffer
        if queue is not None:
            # Forgotten in _close_stream before the stream is, so a queue found
            # here always belongs to an open stream whose app is running.
            self._app_queues[request.stream_id] = queue
        scope = getattr(stream, "scope", None)
        if scope is not None:
            # Connection-level controls for the app's chaos rules (GOAWAY, TCP
            # close), which ASGI itself cannot express. The app reads the
            # extension only when it fires, long after this runs.
            control = ConnectionControl(self, request.stream_id)
            scope["extensions"][CONNECTION_EXTENSION] = control
            if queue is not None:
                inline = InlineBody(functools.partial(self._send_now, request.stream_id))
                scope["extensions"][INLINE_BODY_EXTENSION] = inline
                self._inline[request.stream_id] = inline

    def _send_now(self, stream_id: int, data: bytes) -> bool:
        """:attr:`InlineBody.send`: frame ``data`` on ``stream_id`` at once if it
        can go out as one DATA frame in the order the app sent its output; else
        False, having done nothing. From an inline body handler it runs in the
        connection's task, inside :meth:`_handle_events`, whose flush writes the
        frame with the rest of the batch's; from anywhere else a flush is
        started for it.

        In order means behind nothing: the stream's response is under way (its
        headers sent, not ended or abandoned) and its buffer is empty, so the
        send task holds none of its earlier output.
        """
        if self.closed or stream_id in self._unfinished:
            return False
        stream = self.streams.get(stream_id)
        buffer = self.stream_buffers.get(stream_id)
        if (
            type(stream) is not HTTPStream
            or stream.state is not ASGIHTTPState.RESPONSE
            or buffer is None
            or buffer.buffer
            or buffer._complete  # ended by the app, or closed by a reset
            or not data
            # No body at all where HTTP has none (HEAD, 1xx, 204, 304), as
            # hypercorn drops one the app sends.
            or suppress_body(stream.scope["method"], int(stream.response["status"]))
        ):
            return False
        connection = self.connection
        try:
            room = min(
                connection.local_flow_control_window(stream_id),
                connection.max_outbound_frame_size,
            )
            if len(data) > room:
                return False
            connection.send_data(stream_id, data)
        except h2.exceptions.ProtocolError:  # the stream or connection closed
            return False
        if not self._batches:  # called from outside a batch: nothing would write it
            self.task_group.spawn(self._flush)
        return True

    def _widen_window(self, stream_id: int) -> None:
        """Have ``stream_id``'s receive window grow to :attr:`stream_window` with
        the next WINDOW_UPDATE h2 sends for it (see :class:`WideningWindow`)."""
        stream = self.connection.streams.get(stream_id)
        # h2 has read the whole batch already: a client may have reset it in it.
        if stream is None or stream.closed:
            return
        manager = getattr(stream, "_inbound_window_manager", None)
        if type(manager) is WindowManager and manager.max_window_size < self.stream_window:
            manager.__class__ = WideningWindow
            manager.widen_to = self.stream_window  # type: ignore[attr-defined]

    async def _close_stream(self, stream_id: int) -> None:
        if self._closing:
            closing = self._closing.pop(stream_id, None)
            if closing is not None:
                closing.set()  # an app waiting in ConnectionControl.wait_closed
        feeder = self._feeders.pop(stream_id, None)
        if feeder is not None:
            feeder.cancel()  # nobody reads on: its held window goes back (_release)
        self._release(stream_id)
        self._app_queues.pop(stream_id, None)
        self._narrow.pop(stream_id, None)
        inline = self._inline.pop(stream_id, None)
        if inline is not None:
            inline.handler = None
        stream = self.streams.get(stream_id)
        if isinstance(stream, HTTPStream):
            drop_unread_messages(stream)
        await super()._close_stream(stream_id)
        if (
            isinstance(stream, HTTPStream)
            and stream.state in _UNFINISHED
            and not self.closed
            and stream_id in self.stream_buffers
            and self._stream_state(stream_id) not in (None, StreamState.CLOSED)
        ):
            # The app has gone without ending its response. The reset is left
            # to the send task, which owns the buffer, so that the body bytes
            # already accepted from the app are written first.
            self._unfinished.add(stream_id)
            self.priority.unblock(stream_id)
            await self.has_data.set()
        else:
            await self._close_if_gone_away()
        if not self.closed and self._stream_state(stream_id) in _CLIENT_SENDING:
            # Its response is complete and its client still sends: drained
            # (_receive_data) until the client ends it.
            self._draining[stream_id] = time.monotonic()

    async def _send_data(self, stream_id: int) -> None:
        buffer = self.stream_buffers.get(stream_id)
        if stream_id in self._unfinished and buffer is not None and not buffer.buffer:
            # Everything the app sent is on the wire: forget the stream as the
            # base class does after END_STREAM, then reset it instead.
            self._unfinished.discard(stream_id)
            del self.stream_buffers[stream_id]
            self.priority.remove_stream(stream_id)
            await buffer.close()
            await self._reset(stream_id, self.unfinished_response_error)
            self._draining.pop(stream_id, None)
            await self._close_if_gone_away()
            await self._report_idle()
            return
        await super()._send_data(stream_id)
        if stream_id in self.stream_buffers:
            return
        # The base class drops the buffer once it has sent END_STREAM (or when
        # the stream or connection failed, leaving the stream closed). A request
        # still open from the client's side is drained by _handle_events.
        self._unfinished.discard(stream_id)
        await self._close_if_gone_away()

    async def _abort(self, stream_id: int) -> None:
        """Reset ``stream_id`` at once with :attr:`unfinished_response_error`.

        Does not wait for the socket: a client that stopped reading it has
        backed TCP up, and the app calling this must not wait with it.
        """
        self._unfinished.discard(stream_id)
        await self._discard_output(stream_id)
        try:
            self.connection.reset_stream(stream_id, self.unfinished_response_error)
        except h2.exceptions.ProtocolError:
            return  # the client closed the stream or the connection first
        self.task_group.spawn(self._flush)

    async def _reset(self, stream_id: int, error_code: ErrorCodes) -> None:
        try:
            self.connection.reset_stream(stream_id, error_code)
        except h2.exceptions.ProtocolError:
            return  # The client closed the stream or the connection first.
        await self._flush()

    def _stream_state(self, stream_id: int) -> StreamState | None:
        # None once h2 has forgotten the stream, which it does only when closed.
        stream = self.connection.streams.get(stream_id)
        return None if stream is None else stream.state_machine.state


#: The h2 events of control frames counted against a connection's budget. Stream
#: resets count too: the client's RST_STREAM ("rapid reset", CVE-2023-44487) and
#: h2's own for a client's frame it refuses, such as DATA after END_STREAM
#: ("MadeYouReset", CVE-2025-8671). Either way an app started for a couple of
#: frames, and the emulator lifts hypercorn's 1,000 streams a connection. The
#: server's own resets raise no event.
_CONTROL_EVENTS = frozenset(
    {
        h2.events.PingReceived,
        h2.events.PingAckReceived,
        h2.events.RemoteSettingsChanged,
        h2.events.SettingsAcknowledged,
        h2.events.PriorityUpdated,
        h2.events.ConnectionTerminated,  # a graceful GOAWAY keeps the connection
        h2.events.StreamReset,  # by the client, or by h2 for a client's frame
    }
)


#: Connections h2 ended for their frames: at most one warning every 10 s (a client
#: opening connection after connection could fill the log).
_BROKEN_FRAMES = Throttle(10.0)


def _code_name(code: object) -> str:
    try:
        return ErrorCodes(code).name  # type: ignore[arg-type]
    except ValueError:
        return str(code)


def _cannot_send(data: bytes) -> bool:
    return False


class InlineBody:
    """A way for an app waiting in ``receive()`` to take DATA without waking up.

    Under load most of a stream's cost is the hop from the connection's task to
    the app's for each DATA frame: a queue put, a future, a task step, the
    coroutines resumed one inside the other, a queue get; and for each event
    the app usually just counts it. An app that sets :attr:`handler` before it
    awaits ``receive()`` (and clears it after) gets each DATA frame's payload
    handed to ``handler(data)`` in the connection's task instead, provided its
    queue is empty: nothing older waits in it. The handler answers

    - ``None``: not taken; the payload is queued as an ``http.request`` as usual;
    - ``False``: taken, flow control acknowledged, the app is not woken;
    - ``True``: taken and acknowledged, and an ``http.request`` with an empty
      body (``more_body`` true) is queued to wake the app, e.g. to send output.

    A handler with output to send can hand it to :attr:`send` instead of waking
    the app for it: ``send(data)`` frames ``data`` on the stream there and then,
    to go out with the connection's flush after this batch of frames, and
    answers True; or answers False, having done nothing, when that cannot be
    done at once (the stream's window is short, output the app sent earlier is
    still waiting, the response is not under way), and the app sends it the
    usual way. Sent from the app's task, a final result took four loop
    iterations from the DATA frame that completed it to the socket: the
    connection's task, the app's, hypercorn's send task, the write. This way it
    takes two. ``send`` is meant for the handler, whose batch of frames is
    flushed after it; called from elsewhere it starts a flush of its own. The
    app itself sends through ASGI.

    The handler must not await and must not raise: it runs in the connection's
    task, where an exception would end every stream of the connection. One
    that raises anyway is logged, and its app woken as for ``True``.
    Servers without this extension (HTTP/1.1, other ASGI servers) call
    ``receive()`` as ever.

    An app busy elsewhere has its DATA queued, a message per frame, each a
    queue put and get and a turn of its loop. One that sets :attr:`merge`
    takes them in fewer messages: a DATA frame that finds a request body
    waiting in the queue is appended to that message's list of further bodies
    (``message[MORE_BODIES]``, up to :data:`MERGE_LIMIT` bytes), to be read in
    order after its ``body``.
    """

    __slots__ = ("handler", "send", "merge")

    def __init__(self, send: Callable[[bytes], bool] | None = None) -> None:
        self.handler: Callable[[bytes], bool | None] | None = None
        self.merge = False
        self.send: Callable[[bytes], bool] = send if send is not None else _cannot_send

    def take(self, data: bytes, stream_id: int) -> bool | None:
        """Offer ``data`` to the handler (set); its answer, or True if it raised."""
        assert self.handler is not None
        try:
            return self.handler(data)
        except Exception:  # a bug of the app's: keep the connection, wake the app
            log.exception("stream %d: the app's inline body handler failed", stream_id)
            return True


class ConnectionControl:
    """What an app may do to its whole HTTP/2 connection, and learn of its stream."""

    def __init__(self, protocol: DuplexH2Protocol, stream_id: int) -> None:
        self._protocol = protocol
        self._stream_id = stream_id

    async def wait_closed(self) -> None:
        """Return once the stream is closed: reset by the client, its connection
        gone, or the server stopping (asyncio only).

        ASGI tells an app of a disconnect only through ``receive()``, which an
        app asleep in a chaos delay does not call: an hour's delay held its
        session (and quota slot) open for the hour after its client had gone,
        and at shutdown it was cancelled with an error. The delay waits on this
        instead, with its length as the timeout.
        """
        protocol = self._protocol
        if self._stream_id not in protocol.streams:
            return
        event = protocol._closing.get(self._stream_id)
        if event is None:
            event = protocol._closing[self._stream_id] = asyncio.Event()
        await event.wait()

    async def goaway(self) -> None:
        """Send GOAWAY (NO_ERROR): streams under way finish, the client opens no new
        ones, and the server closes the connection once they have all ended
        (:meth:`DuplexH2Protocol.goaway`)."""
        await self._protocol.goaway()

    async def close(self) -> None:
        """Close the TCP connection, every stream on it with it, once the output
        this stream's app has sent is written, as a reset waits for it.

        Closed at once, a chaos close dropped whatever of the session's output
        the send task had not yet taken from the stream's buffer: the client got
        none to all of the results due before the close, differently from run to
        run. Waits for the client's window as the buffer's other readers do (the
        app bounds it with its output timer). The connection's other streams lose
        what they have not been sent: a closed connection ends them silently.
        """
        protocol = self._protocol
        buffer = protocol.stream_buffers.get(self._stream_id)
        # Only a buffer holding output: hypercorn's "empty" event is first set by
        # a pop, so for a stream that had sent nothing yet the wait lasted until
        # the app's output timer gave up (--idle-timeout), the client blamed.
        if buffer is not None and buffer.buffer and not protocol.closed:
            await buffer.drain()  # taken by the send task, and so framed and flushed
        if not protocol.closed:
            await protocol._flush()  # what the connection's task framed inline
        await protocol.send(Closed())

    def watch_output(self, watch: Any) -> None:
        """Have the response the client takes restart ``watch.since`` while
        ``watch.sending`` is true (an app's output timer; see BoundedBuffer.watch)."""
        buffer = self._protocol.stream_buffers.get(self._stream_id)
        if isinstance(buffer, BoundedBuffer):
            buffer.watch = watch

    async def abort(self) -> None:
        """Reset this stream now, dropping the response bytes not yet sent.

        An app that returns with its response unfinished gets its stream reset
        only once what it sent has been written; for a client that has stopped
        granting window that is never, so an app giving up on such a client
        resets the stream with this first.
        """
        await self._protocol._abort(self._stream_id)


#: Seconds a connection the keep-alive timer retires stays open after its GOAWAY
#: at most, refusing new streams, so that the client reads the GOAWAY before the
#: close: it closes as soon as the client acknowledges the PING sent behind it.
IDLE_LINGER = 0.5
#: The opaque data of that PING.
_RETIRE_PING = b"retiring"
#: Seconds the connection waits after that ACK for the streams the client had
#: queued before it read the GOAWAY (see DuplexH2Protocol.retire_idle).
RETIRE_GRACE = 0.05

#: What a stream whose response had not started gets when the server drops its
#: connection at the end of a shutdown's grace period: the service's error shape
#: (status, headers with content-length, body).
SHUTDOWN_ERROR: tuple[int, list[tuple[bytes, bytes]], bytes] = http_error(
    InternalServerException("the emulator stopped before this stream's response started")
)


#: The dotted names :func:`install` has rebound in this process, its own and those
#: of the ``hypercorn_tcp`` and ``hypercorn_h11`` installs it calls, in the order
#: of the module docstring's table; empty until it runs. A patch whose guard found
#: the stock code changed is not made, and not listed.
PATCHED: tuple[str, ...] = ()


def install() -> None:
    """Make hypercorn serve every HTTP/2 connection with :class:`DuplexH2Protocol`,
    and make the other patches the module docstring lists; then set :data:`PATCHED`.

    Idempotent; returns ``None`` and raises nothing. ``ProtocolWrapper`` in
    ``hypercorn/protocol/__init__.py`` builds ``H2Protocol`` in three places (TLS
    with ALPN ``h2``, cleartext prior knowledge, cleartext ``Upgrade: h2c``),
    each looking the name up in its own module's globals at call time, and both
    the asyncio and trio TCP servers go through ``ProtocolWrapper``; rebinding
    that one name therefore covers every HTTP/2 connection, whereas rebinding
    ``hypercorn.protocol.h2.H2Protocol`` would change nothing, because
    ``ProtocolWrapper``'s module imported the class by name. HTTP/3 is
    untouched.
    """
    global PATCHED
    # setattr: type checkers refuse assignments to a class name.
    setattr(hypercorn.protocol, "H2Protocol", DuplexH2Protocol)  # noqa: B010
    # h2 builds repr(frame) for its no-op trace logger on every received frame,
    # and a DATA frame's repr hex-encodes the whole payload: about 10% of the
    # server's time under bulk ingest, for a string nobody reads. Even unformatted,
    # the payload was first copied into a serialized body (with padding) just to
    # be measured: DATA frames, all but a few of the frames received, skip that.
    setattr(hyperframe.frame, "_raw_data_repr", _unformatted)  # noqa: B010
    setattr(hyperframe.frame.DataFrame, "_body_repr", _data_body_repr)  # noqa: B010
    # h2 checks every byte of every request header in a Python loop; see
    # emulator.header_checks.
    if STOCK_REJECT_ILLEGAL_CHARACTERS is not None:
        setattr(h2.utilities, "_reject_illegal_characters", reject_illegal_characters)  # noqa: B010
    # hpack decodes Huffman strings a nibble at a time in Python; see
    # emulator.hpack_codec.
    if (
        speedups.huffman_decode is not None
        and HUFFMAN_DECODE_TABLE is not None
        and getattr(hpack.hpack, "decode_huffman", None) is STOCK_DECODE_HUFFMAN
    ):
        setattr(hpack.hpack, "decode_huffman", fast_decode_huffman)  # noqa: B010
    # And runs seven generators per header of each block, both ways; see
    # emulator.header_checks.
    if all(STOCK_PIPELINES.values()) and all(hasattr(h2.stream, n) for n in FAST_PIPELINES):
        for name, fast in FAST_PIPELINES.items():
            setattr(h2.stream, name, fast)
    # The TLS teardown and HTTP/1.1 refusal fixes ride along: every server that
    # needs one needs them all.
    hypercorn_tcp.install()
    hypercorn_h11.install()
    PATCHED = tuple(
        name
        for name, owner, attribute, ours in _patches()
        if getattr(owner, attribute, None) is ours
    )


def _patches() -> list[tuple[str, Any, str, Any]]:
    """Every patch :func:`install` may make, as ``(dotted name, owner, attribute,
    replacement)``, in the order of the module docstring's table."""
    return [
        ("hypercorn.protocol.H2Protocol", hypercorn.protocol, "H2Protocol", DuplexH2Protocol),
        ("hyperframe.frame._raw_data_repr", hyperframe.frame, "_raw_data_repr", _unformatted),
        (
            "hyperframe.frame.DataFrame._body_repr",
            hyperframe.frame.DataFrame,
            "_body_repr",
            _data_body_repr,
        ),
        (
            "h2.utilities._reject_illegal_characters",
            h2.utilities,
            "_reject_illegal_characters",
            reject_illegal_characters,
        ),
        ("hpack.hpack.decode_huffman", hpack.hpack, "decode_huffman", fast_decode_huffman),
        *((f"h2.stream.{name}", h2.stream, name, fast) for name, fast in FAST_PIPELINES.items()),
        (
            "hypercorn.asyncio.run.TCPServer",
            hypercorn.asyncio.run,
            "TCPServer",
            hypercorn_tcp.QuietTCPServer,
        ),
        *(
            (f"hypercorn.protocol.h11.H11Protocol.{attribute}", H11Protocol, attribute, ours)
            for attribute, ours in (
                ("_send_error_response", hypercorn_h11._send_error_response),
                ("__init__", hypercorn_h11._init),
                ("_maybe_recycle", hypercorn_h11._maybe_recycle),
            )
        ),
    ]


def _unformatted(data: bytes | memoryview | None) -> str:
    return f"<{len(data) if data is not None else 0} bytes>"


def _data_body_repr(frame: hyperframe.frame.DataFrame) -> str:
    return _unformatted(frame.data)
