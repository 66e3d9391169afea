"""Rules of emulator.sigv4, checked against what the real SDK signs.

Two sources of signed traffic: one stream the real client (``aws-sdk-connecthealth``
over awscrt HTTP/2) sends to a recording TLS server, captured once per module and
verified offline; and requests and events signed in memory by the SDK's own
signers (``aws_sdk_signers.AsyncSigV4Signer`` / ``AsyncEventSigner``) under a
frozen clock, for the cases a live client cannot produce on demand.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aws_sdk_signers.signers as sdk_signers
import pytest
from aws_sdk_signers import (
    URI,
    AsyncBytesReader,
    AsyncEventSigner,
    AsyncSigV4Signer,
    AWSRequest,
    Field,
    Fields,
)
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest as BotocoreRequest
from botocore.credentials import Credentials as BotocoreCredentials
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from smithy_aws_core.identity import AWSCredentialsIdentity
from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage

from emulator.errors import AccessDeniedException, ConfigError, ValidationException
from emulator.eventstream import Envelope, EventStreamDecoder, Message, open_envelope
from emulator.sdk import make_client
from emulator.sigv4 import (
    MISSING_EMPTY_FRAME,
    STREAMING_PAYLOAD,
    ChunkVerifier,
    Credentials,
    CredentialStore,
    RequestSignature,
    encode_date_header,
    verify_request,
)
from emulator.tls import ensure_certificates
from tests.support import pcm_tone, run_session

ACCESS_KEY_ID = "AKIDSIGV4TEST"
SECRET = "sigv4-test-secret/with+odd=chars"
WRONG_SECRET = "not-the-secret-at-all"
STORE = CredentialStore([Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET)])
SESSION_ID = "0f0e0d0c-0b0a-4900-8800-aabbccddeeff"
STREAM_PATH = "/medical-scribe-stream/"

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, kw_only=True)
class SignedStream:
    """One signed request as a server sees it: head, headers and input envelopes."""

    method: str
    path: str
    query: str
    headers: Headers
    envelopes: list[Envelope]

    @property
    def date(self) -> datetime:
        stamp = dict(self.headers)[b"x-amz-date"].decode()
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    def verify(self, *, store: CredentialStore = STORE, now: datetime | None = None) -> Any:
        return verify_request(
            method=self.method,
            path=self.path,
            query=self.query,
            headers=self.headers,
            store=store,
            now=self.date if now is None else now,
        )

    def with_header(self, name: bytes, value: bytes | None) -> SignedStream:
        """A copy with header ``name`` replaced (or removed when ``value`` is None)."""
        headers = [(k, v) for k, v in self.headers if k != name]
        if value is not None:
            headers.append((name, value))
        return replace(self, headers=headers)


def envelopes_of(body: bytes) -> list[Envelope]:
    decoder = EventStreamDecoder()
    messages = decoder.receive_data(body)
    decoder.end_of_data()
    return [open_envelope(message) for message in messages]


def fixed_now(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def denied(stream: SignedStream, **kwargs: Any) -> str:
    """Return the AccessDeniedException message of verifying ``stream``; it never holds a secret."""
    with pytest.raises(AccessDeniedException) as caught:
        stream.verify(**kwargs)
    message = caught.value.message
    assert caught.value.status == 401
    assert SECRET not in message and WRONG_SECRET not in message
    return message


def chain_error(envelopes: list[Envelope], request: RequestSignature, now: datetime) -> str:
    """Verify ``envelopes`` in order; return the ValidationException message raised."""
    chunks = ChunkVerifier(request=request, now_fn=fixed_now(now))
    with pytest.raises(ValidationException) as caught:
        for envelope in envelopes:
            chunks.verify(envelope)
        chunks.end_of_stream()
    assert SECRET not in caught.value.message
    return caught.value.message


# --------------------------------------------------------------------------- real client


async def _capture_real_stream(tmp: Path) -> SignedStream:
    """Run the real SDK against a TLS hypercorn that records the request, then stop both."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        seen.update(scope=scope, body=bytes(body))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/vnd.amazon.eventstream")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    tls = ensure_certificates(tmp / "state")
    listener = socket.create_server(("127.0.0.1", 0))
    config = HypercornConfig()
    config.bind = [f"fd://{os.dup(listener.fileno())}"]
    config.certfile = str(tls.cert)
    config.keyfile = str(tls.key)
    config.alpn_protocols = ["h2"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        client = await make_client(
            endpoint_url=f"https://localhost:{listener.getsockname()[1]}",
            ca_file=tls.ca_cert,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET,
        )
        async with client:
            result = await run_session(client, SESSION_ID, audio=pcm_tone(0.5), chunk_bytes=3200)
        assert result.error is None and not result.input_failed
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
        listener.close()
    scope = seen["scope"]
    return SignedStream(
        method=scope["method"],
        path=scope["raw_path"].decode("ascii"),
        query=scope["query_string"].decode("ascii"),
        headers=list(scope["headers"]),
        envelopes=envelopes_of(seen["body"]),
    )


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> SignedStream:
    """The stream the real client sent: configuration, 5 audio events, END_OF_SESSION, end."""
    return asyncio.run(_capture_real_stream(tmp_path_factory.mktemp("sigv4")))


def test_real_client_stream_verifies_header_every_chunk_and_final_frame(
    real: SignedStream,
) -> None:
    """The real SDK's Authorization header, each chunk signature and the final frame verify."""
    signature = real.verify(now=real.date + timedelta(seconds=30))
    authorization = dict(real.headers)[b"authorization"].decode()
    assert authorization.endswith(f"Signature={signature.signature}")
    assert signature.access_key_id == ACCESS_KEY_ID
    assert signature.scope == f"{real.date:%Y%m%d}/us-east-1/health-agent/aws4_request"
    assert signature.streaming
    chunks = ChunkVerifier(request=signature, now_fn=fixed_now(real.date))
    for envelope in real.envelopes:
        assert not chunks.complete
        chunks.verify(envelope)
    chunks.end_of_stream()
    assert chunks.complete
    assert chunks.count == len(real.envelopes) == 8
    assert real.envelopes[-1].ends_stream


def test_wrong_secret_is_access_denied_signature_mismatch(real: SignedStream) -> None:
    """A known key id with another secret is a 401 signature mismatch naming the key id."""
    message = denied(real, store=CredentialStore({ACCESS_KEY_ID: WRONG_SECRET}))
    assert message.startswith("The request signature we calculated does not match")
    assert f"'{ACCESS_KEY_ID}'" in message
    # As AWS does, the message shows what should have been signed (no secret in it).
    assert f"\n{STREAM_PATH}\n" in message and STREAMING_PAYLOAD in message


def test_unknown_access_key_id_is_access_denied_naming_the_key(real: SignedStream) -> None:
    """A key id missing from the store is a 401 naming that key id."""
    message = denied(real, store=CredentialStore({"AKIDSOMEONEELSE": SECRET}))
    assert f"unknown access key id '{ACCESS_KEY_ID}'" in message


def test_missing_authorization_is_access_denied(real: SignedStream) -> None:
    """A request without an Authorization header is a 401 saying so."""
    message = denied(real.with_header(b"authorization", None))
    assert "no Authorization header" in message


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(minutes=6), "Signature expired"),
        (timedelta(minutes=-6), "Signature not yet current"),
    ],
    ids=["server-6-min-later", "server-6-min-earlier"],
)
def test_x_amz_date_more_than_five_minutes_off_is_access_denied(
    real: SignedStream, offset: timedelta, expected: str
) -> None:
    """x-amz-date more than 5 minutes either side of the server time is refused."""
    message = denied(real, now=real.date + offset)
    assert message.startswith(expected)
    assert f"{real.date:%Y%m%dT%H%M%SZ}" in message


def test_x_amz_date_within_five_minutes_is_fresh(real: SignedStream) -> None:
    """Exactly 5 minutes either side of the server time is still accepted."""
    real.verify(now=real.date + timedelta(minutes=5))
    real.verify(now=real.date - timedelta(minutes=5))


def test_altered_signed_header_is_signature_mismatch(real: SignedStream) -> None:
    """Changing a signed header (the session id) breaks the request signature."""
    tampered = real.with_header(b"x-amzn-medscribe-session-id", SESSION_ID[:-1].encode() + b"0")
    assert denied(tampered).startswith("The request signature we calculated does not match")


def test_unsigned_headers_may_change(real: SignedStream) -> None:
    """Headers outside SignedHeaders (user-agent, accept) do not affect the signature."""
    changed = real.with_header(b"user-agent", b"something-else").with_header(b"accept", None)
    changed.verify()


def _tamper(envelope: Envelope) -> Envelope:
    """Re-wrap ``envelope`` with one payload byte of its inner message flipped (CRCs kept valid)."""
    assert envelope.inner is not None
    assert envelope.date is not None and envelope.signature is not None
    payload = bytearray(envelope.inner.payload)
    payload[len(payload) // 2] ^= 0x01
    inner = Message(headers=envelope.inner.headers, payload=bytes(payload)).encode()
    outer = Message(
        headers={":date": envelope.date, ":chunk-signature": envelope.signature}, payload=inner
    )
    return open_envelope(outer)


@pytest.mark.parametrize("index", [0, 3, 6], ids=["configuration", "audio", "end-of-session"])
def test_tampered_payload_byte_fails_at_that_event(real: SignedStream, index: int) -> None:
    """One flipped payload byte in event N is reported as event N's chunk signature mismatch."""
    envelopes = list(real.envelopes)
    envelopes[index] = _tamper(envelopes[index])
    signature = real.verify()
    message = chain_error(envelopes, signature, real.date)
    assert message.startswith(f"chunk signature of event {index + 1} does not match")


def test_dropped_event_fails_at_the_next_message(real: SignedStream) -> None:
    """Dropping event 3 makes the message received next (the 3rd) fail the chain."""
    envelopes = real.envelopes[:2] + real.envelopes[3:]
    message = chain_error(envelopes, real.verify(), real.date)
    assert message.startswith("chunk signature of event 3 does not match")


def test_reordered_events_fail_at_the_first_out_of_place(real: SignedStream) -> None:
    """Swapping events 2 and 3 fails at event 2."""
    envelopes = list(real.envelopes)
    envelopes[1], envelopes[2] = envelopes[2], envelopes[1]
    message = chain_error(envelopes, real.verify(), real.date)
    assert message.startswith("chunk signature of event 2 does not match")


def test_missing_final_empty_frame_gets_the_service_message(real: SignedStream) -> None:
    """A stream ending without the final empty signed frame gets the service's exact words."""
    chunks = ChunkVerifier(request=real.verify(), now_fn=fixed_now(real.date))
    for envelope in real.envelopes[:-1]:
        chunks.verify(envelope)
    assert not chunks.complete
    with pytest.raises(ValidationException) as caught:
        chunks.end_of_stream()
    assert caught.value.message == MISSING_EMPTY_FRAME
    assert MISSING_EMPTY_FRAME == "A complete signal was sent without the preceding empty frame."


def test_event_without_chunk_signature_is_rejected(real: SignedStream) -> None:
    """A bare (unsigned) event is rejected, naming its position."""
    bare = real.envelopes[1].inner
    assert bare is not None
    envelopes = [real.envelopes[0], open_envelope(bare)]
    message = chain_error(envelopes, real.verify(), real.date)
    assert message.startswith("event 2 has no :chunk-signature")


def test_event_after_final_frame_is_rejected(real: SignedStream) -> None:
    """Nothing may follow the final empty signed frame."""
    envelopes = [*real.envelopes, real.envelopes[1]]
    message = chain_error(envelopes, real.verify(), real.date)
    assert message.startswith("event 9 arrived after the final empty signed frame")


@pytest.mark.parametrize(
    ("offset", "side"),
    [(timedelta(minutes=6), "before"), (timedelta(minutes=-6), "after")],
    ids=["event-6-min-old", "event-6-min-ahead"],
)
def test_chunk_date_more_than_five_minutes_off_is_rejected(
    real: SignedStream, offset: timedelta, side: str
) -> None:
    """An event whose :date is more than 5 minutes from the server time is rejected."""
    signature = real.verify()
    message = chain_error(real.envelopes, signature, real.date + offset)
    assert message.startswith("event 1 is signed at")
    assert f"more than 5 minutes {side} the server time" in message


@pytest.mark.parametrize(
    "offset",
    [timedelta(minutes=5), timedelta(minutes=-5)],
    ids=["event-5-min-old", "event-5-min-ahead"],
)
def test_chunk_date_exactly_five_minutes_off_is_fresh(
    real: SignedStream, offset: timedelta
) -> None:
    """An event signed exactly 5 minutes either side of the server time is accepted,
    as the request's x-amz-date is."""
    first = real.envelopes[0]
    assert first.date is not None
    chunks = ChunkVerifier(request=real.verify(), now_fn=fixed_now(first.date + offset))
    chunks.verify(first)


def test_chain_stays_failed_after_a_mismatch(real: SignedStream) -> None:
    """After a mismatch even the genuine next event is refused: the chain cannot resume."""
    chunks = ChunkVerifier(request=real.verify(), now_fn=fixed_now(real.date))
    chunks.verify(real.envelopes[0])
    with pytest.raises(ValidationException):
        chunks.verify(_tamper(real.envelopes[1]))
    with pytest.raises(ValidationException, match="failed earlier"):
        chunks.verify(real.envelopes[2])


async def test_events_signed_with_another_secret_fail_at_event_1(real: SignedStream) -> None:
    """Events chained from the real seed but signed by the SDK with another secret fail at 1."""
    signature = real.verify()
    signer = AsyncEventSigner(
        initial_signature=signature.signature.encode(), event_encoder_cls=EventHeaderEncoder
    )
    assert real.envelopes[0].inner is not None
    forged = await signer.sign(
        event=_sdk_event(real.envelopes[0].inner),
        identity=AWSCredentialsIdentity(access_key_id=ACCESS_KEY_ID, secret_access_key="x"),
        properties={"region": "us-east-1", "service": "health-agent"},
    )
    [envelope] = envelopes_of(forged.encode())
    now = envelope.date
    assert now is not None
    message = chain_error([envelope], signature, now)
    assert message.startswith("chunk signature of event 1 does not match")


# --------------------------------------------------------------------------- SDK signers


@dataclass(kw_only=True)
class Clock:
    """The time aws_sdk_signers reads (it calls datetime.datetime.now(UTC) per signature)."""

    now: datetime


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock(now=datetime(2026, 3, 14, 23, 59, 58, 250_000, tzinfo=UTC))

    class FrozenDateTime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return frozen.now

    monkeypatch.setattr(sdk_signers, "datetime", SimpleNamespace(datetime=FrozenDateTime, UTC=UTC))
    return frozen


def _identity(secret: str = SECRET) -> AWSCredentialsIdentity:
    return AWSCredentialsIdentity(access_key_id=ACCESS_KEY_ID, secret_access_key=secret)


def _sdk_event(inner: Message | EventMessage) -> EventMessage:
    if isinstance(inner, EventMessage):
        return inner
    return EventMessage(headers=dict(inner.headers), payload=inner.payload)  # type: ignore[arg-type]


def _wire_headers(request: AWSRequest) -> Headers:
    """The request's headers as hypercorn hands them over (host from :authority)."""
    headers = [
        (field.name.lower().encode(), field.as_string().encode()) for field in request.fields
    ]
    netloc = request.destination.host
    if request.destination.port is not None:
        netloc += f":{request.destination.port}"
    return [(b"host", netloc.encode()), *headers, (b"accept", b"*/*")]


def _stream_fields() -> Fields:
    return Fields(
        [
            Field(name="x-amzn-medscribe-session-id", values=[SESSION_ID]),
            Field(name="x-amzn-medscribe-language-code", values=["en-US"]),
            Field(name="Content-Type", values=["application/vnd.amazon.eventstream"]),
            Field(name="User-Agent", values=["aws-sdk-python/test"]),
        ]
    )


AUDIO_EVENT = EventMessage(
    headers={
        ":message-type": "event",
        ":event-type": "binaryAudioEvent",
        ":content-type": "application/octet-stream",
    },
    payload=pcm_tone(0.1),
)


async def sdk_stream(
    clock: Clock, *, event_times: list[datetime], secret: str = SECRET
) -> SignedStream:
    """Sign a stream request at ``clock.now`` and one audio event per time, then the end frame.

    The final empty frame is signed at the last of ``event_times``.
    """
    request = AWSRequest(
        destination=URI(host="localhost", port=8443, path=STREAM_PATH),
        method="POST",
        body=None,
        fields=_stream_fields(),
    )
    properties: Any = {"region": "us-east-1", "service": "health-agent"}
    signed = await AsyncSigV4Signer().sign(
        request=request, identity=_identity(secret), properties=properties
    )
    seed = signed.fields["Authorization"].as_string().split("Signature=")[-1]
    signer = AsyncEventSigner(initial_signature=seed.encode(), event_encoder_cls=EventHeaderEncoder)
    body = bytearray()
    for moment in event_times:
        clock.now = moment
        event = EventMessage(headers=dict(AUDIO_EVENT.headers), payload=AUDIO_EVENT.payload)
        body += (
            await signer.sign(event=event, identity=_identity(secret), properties=properties)
        ).encode()
    end = await signer.sign_empty(
        event=EventMessage(), identity=_identity(secret), properties=properties
    )
    body += end.encode()
    return SignedStream(
        method="POST",
        path=STREAM_PATH,
        query="",
        headers=_wire_headers(signed),
        envelopes=envelopes_of(bytes(body)),
    )


async def test_sdk_signed_events_verify_across_midnight_utc(clock: Clock) -> None:
    """Events signed after midnight UTC verify with the next day's key, as the SDK signs them."""
    start = clock.now
    times = [start + timedelta(milliseconds=ms) for ms in (100, 900, 1_750, 2_001, 3_999)]
    stream = await sdk_stream(clock, event_times=times)
    signature = stream.verify()
    assert signature.scope.startswith("20260314/")
    dates = [envelope.date for envelope in stream.envelopes]
    assert [f"{d:%d}" for d in dates if d is not None] == ["14", "14", "15", "15", "15", "15"]
    chunks = ChunkVerifier(request=signature, now_fn=fixed_now(start))
    for envelope in stream.envelopes:
        chunks.verify(envelope)
    chunks.end_of_stream()
    assert chunks.complete


async def test_sdk_signed_stream_with_wrong_secret_is_denied(clock: Clock) -> None:
    """A request the SDK signed with another secret is a 401 signature mismatch."""
    stream = await sdk_stream(clock, event_times=[clock.now], secret=WRONG_SECRET)
    assert denied(stream).startswith("The request signature we calculated does not match")


def test_encode_date_header_matches_the_sdk_encoder() -> None:
    """The :date header is name length 5, ':date', type 8, big-endian int64 milliseconds."""
    moment = datetime(2026, 3, 14, 23, 59, 58, 250_000, tzinfo=UTC)  # 1773532798250 ms
    golden = (
        b"\x05"  # name length 5
        b":date"  # name
        b"\x08"  # type 8, timestamp
        b"\x00\x00\x01\x9c\xee\xca\xdd\x2a"  # int64 ms since the epoch, big-endian
    )
    assert struct.unpack(">q", golden[7:])[0] == 1773532798250
    encoder = EventHeaderEncoder()
    encoder.encode_headers({":date": moment})
    assert encode_date_header(moment) == golden == encoder.get_result()


def test_encode_date_header_refuses_naive_datetimes() -> None:
    """A naive datetime has no defined epoch offset and is refused."""
    with pytest.raises(ValueError, match="naive"):
        encode_date_header(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- request rules


async def sdk_signed_request(
    clock: Clock, *, method: str, path: str, query: str | None, body: bytes | None
) -> SignedStream:
    """A control-plane style request signed by the SDK's request signer."""
    request = AWSRequest(
        destination=URI(host="localhost", port=8443, path=path, query=query),
        method=method,
        body=None if body is None else AsyncBytesReader(body),
        fields=Fields([Field(name="Content-Type", values=["application/json"])]),
    )
    signed = await AsyncSigV4Signer().sign(
        request=request,
        identity=_identity(),
        properties={"region": "us-east-1", "service": "health-agent"},
    )
    return SignedStream(
        method=method, path=path, query=query or "", headers=_wire_headers(signed), envelopes=[]
    )


async def test_sdk_signed_control_plane_request_verifies_with_its_body(clock: Clock) -> None:
    """A GET with an encoded path label and a query, signed by the SDK, verifies (body hashed)."""
    stream = await sdk_signed_request(
        clock,
        method="GET",
        path="/domains/dom-1/sessions/a%20b%2Fc",
        query="maxResults=5&nextToken=ab%2Bc%3D%3D&empty=",
        body=None,
    )
    signature = verify_request(
        method=stream.method,
        path=stream.path,
        query=stream.query,
        headers=stream.headers,
        store=STORE,
        now=stream.date,
        body=b"",
    )
    assert not signature.streaming


async def test_sdk_signed_post_verifies_only_with_the_body_it_signed(clock: Clock) -> None:
    """A POST body is part of the signature: the signed body verifies, another does not."""
    body = b'{"domainName": "x"}'
    stream = await sdk_signed_request(clock, method="POST", path="/domains", query=None, body=body)
    common: dict[str, Any] = {
        "method": "POST",
        "path": stream.path,
        "query": "",
        "headers": stream.headers,
        "store": STORE,
        "now": stream.date,
    }
    verify_request(**common, body=body)
    with pytest.raises(AccessDeniedException, match="does not match the signature you provided"):
        verify_request(**common, body=b'{"domainName": "y"}')


def test_botocore_signed_control_plane_request_verifies() -> None:
    """boto3's signer (control-plane operations) is accepted too."""
    url = "https://localhost:8443/domains/dom-1/sessions/a%20b?maxResults=5&nextToken=a%2Bb"
    request = BotocoreRequest(method="GET", url=url, data=b"")
    SigV4Auth(BotocoreCredentials(ACCESS_KEY_ID, SECRET), "health-agent", "us-east-1").add_auth(
        request
    )
    parts = urlsplit(url)
    headers = [(b"host", parts.netloc.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    stamp = request.headers["X-Amz-Date"]
    now = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    verify_request(
        method="GET",
        path=parts.path,
        query=parts.query,
        headers=headers,
        store=STORE,
        now=now,
        body=b"",
    )


async def test_declared_payload_hash_must_match_the_body(clock: Clock) -> None:
    """An x-amz-content-sha256 that is not the body's SHA-256 is a 401 naming both."""
    stream = await sdk_signed_request(clock, method="POST", path="/domains", query=None, body=b"{}")
    wrong = hashlib.sha256(b"other").hexdigest()
    headers = [*stream.headers, (b"x-amz-content-sha256", wrong.encode())]
    with pytest.raises(AccessDeniedException) as caught:
        _create_domain(headers, now=stream.date, body=b"{}")
    assert wrong in caught.value.message
    assert hashlib.sha256(b"{}").hexdigest() in caught.value.message


def test_an_unsigned_payload_on_the_control_plane_is_denied() -> None:
    """UNSIGNED-PAYLOAD is S3's: it switched the body check off, and a body swapped
    for another of its length was taken (a domain created with a forged name)."""
    url = "https://localhost:8443/domains"
    body = b'{"name": "real-name"}'
    request = BotocoreRequest(method="POST", url=url, data=body)
    request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    SigV4Auth(BotocoreCredentials(ACCESS_KEY_ID, SECRET), "health-agent", "us-east-1").add_auth(
        request
    )
    headers = [(b"host", b"localhost:8443")]
    headers += [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]
    now = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    with pytest.raises(AccessDeniedException, match="UNSIGNED-PAYLOAD, which only S3 takes"):
        _create_domain(headers, now=now, body=b'{"name": "forged-nam"}')


def _create_domain(headers: list[tuple[bytes, bytes]], *, now: datetime, body: bytes) -> None:
    """verify_request of a CreateDomain (``POST /domains``) with these headers and body."""
    verify_request(
        method="POST", path="/domains", query="", headers=headers, store=STORE, now=now, body=body
    )


async def test_signature_mismatch_message_hides_the_session_token(clock: Clock) -> None:
    """The canonical request shown on a mismatch masks a signed x-amz-security-token."""
    token = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"
    request = AWSRequest(
        destination=URI(host="localhost", port=8443, path=STREAM_PATH),
        method="POST",
        body=None,
        fields=_stream_fields(),
    )
    identity = AWSCredentialsIdentity(
        access_key_id=ACCESS_KEY_ID, secret_access_key=WRONG_SECRET, session_token=token
    )
    signed = await AsyncSigV4Signer().sign(
        request=request,
        identity=identity,
        properties={"region": "us-east-1", "service": "health-agent"},
    )
    stream = SignedStream(
        method="POST", path=STREAM_PATH, query="", headers=_wire_headers(signed), envelopes=[]
    )
    temporary = CredentialStore(
        [Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET, session_token=token)]
    )
    message = denied(stream, store=temporary)
    assert "does not match the signature you provided" in message
    assert "\nx-amz-security-token:***\n" in message
    assert token not in message


def _replace_in_authorization(old: str, new: str) -> Callable[[SignedStream], SignedStream]:
    def change(stream: SignedStream) -> SignedStream:
        value = dict(stream.headers)[b"authorization"].decode()
        assert old in value
        return stream.with_header(b"authorization", value.replace(old, new, 1).encode())

    return change


def _set_header(name: bytes, value: bytes | None) -> Callable[[SignedStream], SignedStream]:
    return lambda stream: stream.with_header(name, value)


def _add_header(name: bytes, value: bytes) -> Callable[[SignedStream], SignedStream]:
    return lambda stream: replace(stream, headers=[*stream.headers, (name, value)])


MALFORMED: dict[str, tuple[Callable[[SignedStream], SignedStream], str]] = {
    "other-algorithm": (
        _replace_in_authorization("AWS4-HMAC-SHA256 ", "AWS4-ECDSA-P256-SHA256 "),
        "only AWS4-HMAC-SHA256",
    ),
    "no-signature": (
        _replace_in_authorization(", Signature=", ", Sig="),
        "requires 'Signature' parameter",
    ),
    "no-credential": (
        _replace_in_authorization("Credential=", "Credentials="),
        "requires 'Credential' parameter",
    ),
    "no-signed-headers": (
        _replace_in_authorization("SignedHeaders=", "Signed="),
        "requires 'SignedHeaders' parameter",
    ),
    "not-comma-separated": (
        _replace_in_authorization(", SignedHeaders=", " SignedHeaders="),
        "Authorization header is malformed",
    ),
    "short-signature": (
        _replace_in_authorization("Signature=", "Signature=00"),
        "Signature must be 64 lowercase hex digits",
    ),
    "scope-missing-part": (
        _replace_in_authorization("/us-east-1/", "/"),
        "Credential should be of the form",
    ),
    "scope-date-not-x-amz-date": (
        _replace_in_authorization("Credential=AKIDSIGV4TEST/2026", "Credential=AKIDSIGV4TEST/2025"),
        "Date in Credential scope does not match",
    ),
    "scope-other-service": (
        _replace_in_authorization("/health-agent/", "/transcribe/"),
        "scoped to correct service: 'health-agent'",
    ),
    "scope-bad-terminator": (
        _replace_in_authorization("/aws4_request", "/aws4_req"),
        "valid terminator",
    ),
    # Which one would be checked is anyone's guess (a proxy adding its own, say).
    "two-authorization-headers": (
        _add_header(b"authorization", b"AWS4-HMAC-SHA256 Credential=AKIDOTHER/20260314/x"),
        "the request has more than one Authorization header",
    ),
    "no-x-amz-date": (
        _set_header(b"x-amz-date", None),
        "requires existence of an 'X-Amz-Date' header",
    ),
    "bad-x-amz-date": (
        _set_header(b"x-amz-date", b"2026-03-14T23:59:58Z"),
        "is not an ISO-8601 basic timestamp",
    ),
    "host-not-signed": (
        _replace_in_authorization(";host;", ";"),
        "'Host' must be a 'SignedHeader'",
    ),
    "signed-header-not-sent": (
        _set_header(b"x-amzn-medscribe-language-code", None),
        "signed header 'x-amzn-medscribe-language-code' is not in the request",
    ),
    "not-the-streaming-payload-hash": (
        _set_header(b"x-amz-content-sha256", b"UNSIGNED-PAYLOAD"),
        f"x-amz-content-sha256 must be {STREAMING_PAYLOAD}",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
async def test_malformed_or_misscoped_authorization_is_denied_with_the_reason(
    clock: Clock, case: str
) -> None:
    """Each malformed, mis-scoped or incomplete signature is a 401 naming its problem."""
    clock.now = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)
    change, expected = MALFORMED[case]
    stream = await sdk_stream(clock, event_times=[clock.now])
    stream.verify()  # the untouched request is fine
    broken = change(stream)
    with pytest.raises(AccessDeniedException) as caught:
        verify_request(
            method="POST",
            path=STREAM_PATH,
            query="",
            headers=broken.headers,
            store=STORE,
            now=stream.date,
        )
    assert expected in caught.value.message
    assert SECRET not in caught.value.message


async def test_region_restriction_refuses_other_regions(clock: Clock) -> None:
    """With region= given, a scope naming another region is a 401."""
    stream = await sdk_stream(clock, event_times=[clock.now])
    common: dict[str, Any] = {
        "method": "POST",
        "path": STREAM_PATH,
        "query": "",
        "headers": stream.headers,
        "store": STORE,
        "now": stream.date,
    }
    verify_request(**common, region="us-east-1")
    with pytest.raises(AccessDeniedException, match="scoped to a valid region: 'eu-west-2'"):
        verify_request(**common, region="eu-west-2")


def test_naive_now_is_a_programming_error() -> None:
    """verify_request needs an aware 'now' to compare with x-amz-date."""
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_request(
            method="POST", path="/", query="", headers=[], store=STORE, now=datetime(2026, 1, 1)
        )


# --------------------------------------------------------------------------- credentials


GOOD_FILE = """\
# emulator users
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default/secret+1

[team-b]
aws_access_key_id=AKIDTEAMB
aws_secret_access_key: team-b-secret
aws_session_token = team-b-token
region = eu-west-2
; a profile without keys is skipped
[assume]
role_arn = arn:aws:iam::123456789012:role/x
source_profile = default
"""


def test_credentials_file_profiles_become_the_store(tmp_path: Path) -> None:
    """Each profile with both keys adds a pair, temporary with its aws_session_token;
    other keys and key-less profiles are ignored."""
    path = tmp_path / "credentials"
    path.write_text(GOOD_FILE)
    store = CredentialStore.from_file(path)
    assert dict(store) == {"AKIDDEFAULT": "default/secret+1", "AKIDTEAMB": "team-b-secret"}
    assert store.credentials("AKIDTEAMB") == Credentials(
        access_key_id="AKIDTEAMB", secret_access_key="team-b-secret", session_token="team-b-token"
    )
    assert store.session_token("AKIDTEAMB") == "team-b-token"
    assert store.session_token("AKIDDEFAULT") is None
    assert store.credentials("AKIDNOPE") is None
    assert store.session_token("AKIDNOPE") is None


BROKEN_FILES: dict[str, tuple[str, str]] = {
    "line-without-equals": (
        "[default]\naws_access_key_id = AKID1\naws_secret_access_key s3cr3t\n",
        ":3: expected '[profile]' or 'key = value'",
    ),
    "pair-before-profile": (
        "aws_access_key_id = AKID1\n",
        ":1: aws_access_key_id appears before any [profile] header",
    ),
    "unclosed-profile-header": ("[default\n", ":1: malformed profile header"),
    "key-id-without-secret": (
        "[default]\nregion = x\naws_access_key_id = AKID1\n",
        ":3: profile [default] has aws_access_key_id but no aws_secret_access_key",
    ),
    "secret-without-key-id": (
        "[p]\naws_secret_access_key = s3cr3t\n",
        ":2: profile [p] has aws_secret_access_key but no aws_access_key_id",
    ),
    "repeated-profile": (
        "[p]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n[p]\n",
        ":4: profile [p] is already defined at line 1",
    ),
    "repeated-key": (
        "[p]\naws_access_key_id = AKID1\naws_access_key_id = AKID2\n",
        ":3: aws_access_key_id is repeated in profile [p] (first at line 2)",
    ),
    "continued-secret": (
        "[p]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n  more\n",
        ":4: the value of aws_secret_access_key continues on an indented line",
    ),
    "key-id-with-slash": (
        "[p]\naws_access_key_id = AK/ID\naws_secret_access_key = s3cr3t\n",
        ":2: profile [p]: an access key id must be non-empty, without whitespace",
    ),
    "same-key-id-two-secrets": (
        "[a]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n"
        "[b]\naws_access_key_id = AKID1\naws_secret_access_key = other-s3cr3t\n",
        ":5: access key id 'AKID1' in profile [b] has a different secret than at line 2",
    ),
    "empty-secret": (
        "[p]\naws_access_key_id = AKID1\naws_secret_access_key =\n",
        ":3: profile [p] has an empty aws_secret_access_key",
    ),
    "empty-session-token": (
        "[p]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\naws_session_token =\n",
        ":4: profile [p] has an empty aws_session_token",
    ),
    "continued-session-token": (
        "[p]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n"
        "aws_session_token = s3cr3t-token\n  more\n",
        ":5: the value of aws_session_token continues on an indented line",
    ),
    "same-key-id-two-tokens": (
        "[a]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n"
        "aws_session_token = s3cr3t-one\n"
        "[b]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n"
        "aws_session_token = s3cr3t-two\n",
        ":6: access key id 'AKID1' in profile [b] has a different aws_session_token than at line 2",
    ),
    "same-key-id-token-and-none": (
        "[a]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n"
        "aws_session_token = s3cr3t-one\n"
        "[b]\naws_access_key_id = AKID1\naws_secret_access_key = s3cr3t\n",
        ":6: access key id 'AKID1' in profile [b] has no aws_session_token, where it has "
        "one at line 2",
    ),
    "no-pairs-at-all": ("[default]\nregion = us-east-1\n", ": no profile holds both"),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES), ids=list(BROKEN_FILES))
def test_broken_credentials_file_error_names_file_and_line(tmp_path: Path, case: str) -> None:
    """A broken credentials file raises ConfigError as 'path:line: problem', without secrets."""
    text, expected = BROKEN_FILES[case]
    path = tmp_path / "credentials"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        CredentialStore.from_file(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert f"{path}{expected}" in message
    assert "s3cr3t" not in message


def test_unreadable_credentials_file_names_the_file(tmp_path: Path) -> None:
    """A missing credentials file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="credentials file .*nope.* cannot be read"):
        CredentialStore.from_file(tmp_path / "nope")


def test_secrets_never_appear_in_reprs(real: SignedStream) -> None:
    """Credentials, CredentialStore and RequestSignature reprs show key ids, not secrets."""
    signature = real.verify()
    for thing in (STORE, STORE.credentials(ACCESS_KEY_ID), signature):
        assert SECRET not in repr(thing)
        assert ACCESS_KEY_ID in repr(thing)
    assert signature.signing_key.hex() not in repr(signature)


def test_store_merge_keeps_both_and_refuses_conflicting_secrets() -> None:
    """Merging stores unions their pairs; one key id with two secrets, or two
    session tokens (one and none among them), is refused."""
    merged = STORE.merged({"AKIDOTHER": "other"})
    assert sorted(merged) == ["AKIDOTHER", ACCESS_KEY_ID]
    assert STORE.merged({ACCESS_KEY_ID: SECRET}) == STORE
    with pytest.raises(ValueError, match=f"'{ACCESS_KEY_ID}' is given two different secrets"):
        STORE.merged({ACCESS_KEY_ID: WRONG_SECRET})
    temporary = Credentials(
        access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET, session_token="t"
    )
    with pytest.raises(ValueError, match="two different session tokens"):
        STORE.merged([temporary])
    assert CredentialStore([temporary]).merged([temporary]).session_token(ACCESS_KEY_ID) == "t"


@pytest.mark.parametrize(
    ("key_id", "secret", "token"),
    [("", "s", None), ("AK ID", "s", None), ("AK/ID", "s", None), ("AKID", "", None)]
    + [("AKID", "s", "")],
    ids=["empty-key-id", "space", "slash", "empty-secret", "empty-token"],
)
def test_credentials_refuse_unusable_values(key_id: str, secret: str, token: str | None) -> None:
    """A key id that cannot appear in a Credential scope, or an empty secret or
    session token, is refused."""
    with pytest.raises(ValueError):
        Credentials(access_key_id=key_id, secret_access_key=secret, session_token=token)
