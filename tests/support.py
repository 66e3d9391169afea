"""Test support: run the emulator in a thread, and drive sessions with the real SDK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import struct
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.server import RunningServer, Settings, serve
from emulator.validation import StreamRequest

DOMAIN_ID = "dom-abcdefghij0123456789"  # 24 characters, (hai-|dom-)[a-z0-9]+
SUBSCRIPTION_ID = "sub-ABCDEFGHIJ0123456789x"  # 25 characters
S3_URI = "s3://emulator-bucket/output"

#: A stream's validated headers, for driving a ScribeSession without a server.
SANS_IO_REQUEST = StreamRequest(
    session_id="11111111-2222-3333-4444-555555555555",
    domain_id=DOMAIN_ID,
    subscription_id=SUBSCRIPTION_ID,
    language_code="en-US",
    sample_rate=16000,
    media_encoding="pcm",
)


def new_session_id() -> str:
    return str(uuid.uuid4())


@contextlib.contextmanager
def running_emulator(settings: Settings) -> Iterator[RunningServer]:
    """Run a real emulator (hypercorn, TLS + h2c) in a background thread."""
    started = threading.Event()
    holder: dict[str, Any] = {}

    def ready(running: RunningServer) -> None:
        holder["running"] = running
        started.set()

    def target() -> None:
        async def main() -> None:
            shutdown = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            holder["shutdown"] = shutdown
            await serve(settings, shutdown=shutdown, ready=ready)

        try:
            asyncio.run(main())
        except BaseException as error:  # surfaced to the test below
            holder["error"] = error
            started.set()

    thread = threading.Thread(target=target, name="medscribe-emulator", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("emulator did not start within 30 s")
    if "error" in holder:
        raise holder["error"]
    try:
        yield holder["running"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["shutdown"].set)
        thread.join(10)


def admin(
    base_url: str, method: str, path: str, body: object | None = None, *, token: str | None = None
) -> tuple[int, Any]:
    """Call the admin API over cleartext HTTP/1.1; return (status, decoded JSON)."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
            ctype = response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        raw, status, ctype = error.read(), error.code, error.headers.get("content-type", "")
    if "json" in ctype:
        return status, json.loads(raw)
    return status, raw


def pcm_tone(seconds: float, *, sample_rate: int = 16000, channels: int = 1) -> bytes:
    """16-bit little-endian PCM of a quiet tone (content is irrelevant to the clock)."""
    frames = int(round(seconds * sample_rate))
    out = bytearray()
    for n in range(frames):
        value = int(1000 * math.sin(2 * math.pi * 440 * n / sample_rate))
        out += struct.pack("<h", value) * channels
    return bytes(out)


@dataclass
class SessionResult:
    output: Any = None
    events: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    #: The client could not finish sending (its stream was reset under it).
    input_failed: bool = False

    @property
    def segments(self) -> list[Any]:
        return [
            e.value.transcript_segment
            for e in self.events
            if hasattr(e.value, "transcript_segment")
        ]

    @property
    def finals(self) -> list[Any]:
        return [s for s in self.segments if not s.is_partial]

    @property
    def partials(self) -> list[Any]:
        return [s for s in self.segments if s.is_partial]


def configuration_event(
    *,
    two_channels: bool = False,
    template: str = "HISTORY_AND_PHYSICAL",
    output_s3_uri: str = S3_URI,
) -> Any:
    from aws_sdk_connecthealth import models as m

    kwargs: dict[str, Any] = {}
    if two_channels:
        kwargs["channel_definitions"] = [
            m.MedicalScribeChannelDefinition(channel_id=0, participant_role="CLINICIAN"),
            m.MedicalScribeChannelDefinition(channel_id=1, participant_role="PATIENT"),
        ]
    return m.MedicalScribeInputStreamConfigurationEvent(
        value=m.MedicalScribeConfigurationEvent(
            post_stream_action_settings=m.MedicalScribePostStreamActionSettings(
                output_s3_uri=output_s3_uri,
                clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
                    note_template_settings=m.NoteTemplateSettingsManagedTemplate(
                        value=m.ManagedTemplate(template_type=template)
                    )
                ),
            ),
            **kwargs,
        )
    )


def audio_event(chunk: bytes, *, binary: bool = False) -> Any:
    from aws_sdk_connecthealth import models as m

    if binary:
        return m.MedicalScribeInputStreamBinaryAudioEvent(
            value=m.MedicalScribeBinaryAudioEvent(audio_chunk=chunk)
        )
    return m.MedicalScribeInputStreamAudioEvent(value=m.MedicalScribeAudioEvent(audio_chunk=chunk))


def end_of_session_event() -> Any:
    from aws_sdk_connecthealth import models as m

    return m.MedicalScribeInputStreamSessionControlEvent(
        value=m.MedicalScribeSessionControlEvent(type="END_OF_SESSION")
    )


def stream_input(
    session_id: str,
    *,
    sample_rate: int = 16000,
    encoding: str = "pcm",
    domain_id: str = DOMAIN_ID,
    subscription_id: str = SUBSCRIPTION_ID,
    language_code: str = "en-US",
) -> Any:
    from aws_sdk_connecthealth import models as m

    return m.StartMedicalScribeListeningSessionInput(
        session_id=session_id,
        domain_id=domain_id,
        subscription_id=subscription_id,
        language_code=language_code,
        media_sample_rate_hertz=sample_rate,
        media_encoding=encoding,
    )


async def run_session(
    client: Any,
    session_id: str,
    *,
    audio: bytes = b"",
    chunk_bytes: int = 3200,
    two_channels: bool = False,
    binary: bool = False,
    end_of_session: bool = True,
    events: list[Any] | None = None,
    timeout: float = 30,
    pace: float = 0.0,
    **input_kwargs: Any,
) -> SessionResult:
    """Stream one session through the real SDK and collect what comes back.

    ``events`` replaces the default configuration + audio + END_OF_SESSION
    sequence when given; ``pace`` seconds pass before each event after the
    first, as a real-time client would wait. A modeled error (before or in the
    stream) is captured in ``SessionResult.error`` rather than raised.
    """
    result = SessionResult()
    if events is None:
        events = [configuration_event(two_channels=two_channels)]
        events += [
            audio_event(audio[i : i + chunk_bytes], binary=binary)
            for i in range(0, len(audio), chunk_bytes)
        ]
        if end_of_session:
            events.append(end_of_session_event())

    async def body() -> None:
        stream = await client.start_medical_scribe_listening_session(
            input=stream_input(session_id, **input_kwargs)
        )

        async def send_all() -> None:
            for index, event in enumerate(events):
                if pace and index:
                    await asyncio.sleep(pace)
                await stream.input_stream.send(event)
            await stream.input_stream.close()

        sender = asyncio.create_task(send_all())
        try:
            result.output, output_stream = await stream.await_output()
            async for event in output_stream:
                result.events.append(event)
        except Exception as error:
            result.error = error
        finally:
            # After a stream reset the SDK's input publisher can block for ever
            # (its CRT writer has died), so the sender gets a bounded wait and is
            # then abandoned, as an application would have to.
            done, _ = await asyncio.wait({sender}, timeout=5)
            if not done:
                sender.cancel()
                result.input_failed = True
            elif sender.exception() is not None:
                result.input_failed = True

    try:
        await asyncio.wait_for(body(), timeout)
    except Exception as error:
        if result.error is None:
            result.error = error
    return result


def fixtures_path() -> Path:
    return Path(__file__).resolve().parent.parent / "fixtures"


class H2Client:
    """A bare HTTP/2 client (h2 over a socket, prior knowledge) for wire-level tests."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        import socket

        import h2.config
        import h2.connection

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**24)
        self.timeout = timeout
        self.responses: dict[int, dict[str, Any]] = {}
        self.closed = False
        self.goaway = False
        self.pings = 0
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        headers: dict[str, str],
        *,
        path: str = "/medical-scribe-stream/",
        method: str = "POST",
        end_stream: bool = False,
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        full = [
            (":method", method),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", path),
            *headers.items(),
        ]
        self.conn.send_headers(stream_id, full, end_stream=end_stream)
        self.responses[stream_id] = {
            "headers": None,
            "data": bytearray(),
            "frames": 0,
            "ended": False,
            "reset": None,
        }
        self._flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> None:
        """Send ``data`` on ``stream_id``, waiting for flow-control credit as needed."""
        import h2.exceptions

        view = memoryview(data)
        while view:
            if self.responses[stream_id]["reset"] is not None:
                return
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.receive_once()
                continue
            try:
                self.conn.send_data(stream_id, bytes(view[:window]))
            except h2.exceptions.StreamClosedError:
                return
            view = view[window:]
            self._flush()
        if end_stream:
            try:
                self.conn.end_stream(stream_id)
            except h2.exceptions.StreamClosedError:
                return
            self._flush()

    def receive_once(self) -> None:
        import h2.events
        import h2.exceptions

        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise ConnectionError("server closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self.responses[event.stream_id]["headers"] = {
                    k.decode(): v.decode() for k, v in event.headers
                }
            elif isinstance(event, h2.events.DataReceived):
                self.responses[event.stream_id]["data"] += event.data
                self.responses[event.stream_id]["frames"] += 1
                try:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                except h2.exceptions.ProtocolError:
                    pass  # the connection is going away: no window to hand back
            elif isinstance(event, h2.events.StreamEnded):
                self.responses[event.stream_id]["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                if event.stream_id in self.responses:
                    self.responses[event.stream_id]["reset"] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
            elif isinstance(event, h2.events.PingAckReceived):
                self.pings += 1
        self._flush()

    def ping(self) -> None:
        """Round-trip a PING: every frame sent before it has been read by the server."""
        expected = self.pings + 1
        self.conn.ping(b"roundtrp")
        self._flush()
        while self.pings < expected:
            self.receive_once()

    def wait(self, stream_id: int, *, for_headers: bool = False) -> dict[str, Any]:
        """Receive until ``stream_id`` has ended or was reset (or has headers)."""
        import time

        deadline = time.monotonic() + self.timeout
        response = self.responses[stream_id]
        while not (
            response["ended"]
            or response["reset"] is not None
            or (for_headers and response["headers"] is not None)
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream_id} did not finish")
            self.receive_once()
        return response

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except Exception:
            pass
        self.sock.close()


@contextlib.contextmanager
def serving_tls(app: Any, tls: Any, **options: Any) -> Iterator[int]:
    """Serve a bare ASGI ``app`` with hypercorn over TLS (h2 + http/1.1) in a thread.

    ``tls`` is an ``emulator.tls.TLSFiles``; ``options`` set extra hypercorn
    config attributes. Yields the port; on exit the server must stop cleanly.
    """
    import os
    import socket

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    listener = socket.create_server(("127.0.0.1", 0))
    config = Config()
    # Hand hypercorn a duplicate of an already-listening socket: no port race.
    config.bind = [f"fd://{os.dup(listener.fileno())}"]
    config.certfile = str(tls.cert)
    config.keyfile = str(tls.key)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.graceful_timeout = 1
    for name, value in options.items():
        setattr(config, name, value)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failures: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait))
        except BaseException as exc:  # surfaced on exit
            failures.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="hypercorn-test", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        listener.close()
    assert not thread.is_alive(), "hypercorn did not stop"
    assert not failures, failures


def parse_http11_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split a whole HTTP/1.1 response as read from a socket: (status, fields with
    lower-case names, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields, body


def raw_http11(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` to 127.0.0.1:``port`` as it is, read the response until the
    server closes, and split it (see :func:`parse_http11_response`)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return parse_http11_response(data)


def run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    """``python -m emulator check DIRECTORY`` as a subprocess, with none of the
    caller's MEDSCRIBE_ variables, its output read as UTF-8."""
    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCRIBE_")}
    env["PYTHONPATH"] = str(repo)
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, "-m", "emulator", "check", str(directory)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
