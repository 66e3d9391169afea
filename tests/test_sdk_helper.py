"""Rules of emulator.sdk: the real clients reach a local TLS server through the helpers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_sdk_connecthealth.client import AsyncConnectHealthClient
from aws_sdk_connecthealth.config import AsyncConnectHealthConfig
from aws_sdk_connecthealth.models import GetMedicalScribeListeningSessionInput
from awscrt.exceptions import AwsCrtError
from smithy_core import URI
from smithy_http import Fields
from smithy_http.aio import HTTPRequest
from smithy_http.aio.crt import AWSCRTHTTPClient

from emulator.sdk import (
    DUMMY_ACCESS_KEY_ID,
    LocalCATransport,
    boto3_client,
    crt_transport,
    make_client,
    make_config,
)
from emulator.tls import TLSFiles, ensure_certificates

from .support import serving_tls

DOMAIN_ID = "dom-0123456789abcdefghij"
SUBSCRIPTION_ID = "sub-0123456789abcdefghijk"
SESSION_ID = "0f0e0d0c-0b0a-4900-8800-aabbccddeeff"

CANNED_SESSION = {
    "medicalScribeListeningSessionDetails": {
        "domainId": DOMAIN_ID,
        "subscriptionId": SUBSCRIPTION_ID,
        "sessionId": SESSION_ID,
        "streamStatus": "COMPLETED",
    }
}


@dataclass(kw_only=True)
class Seen:
    """One request as the ASGI app saw it."""

    method: str
    path: str
    http_version: str
    headers: dict[str, str]


@dataclass(kw_only=True)
class RecordingApp:
    """A raw ASGI app that records each request and answers 200 with CANNED_SESSION."""

    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        # Drain the request body so HTTP/1.1 keep-alive stays in sync.
        while (await receive()).get("more_body", False):
            pass
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append(
            Seen(
                method=scope["method"],
                path=scope["path"],
                http_version=scope["http_version"],
                headers=headers,
            )
        )
        body = json.dumps(CANNED_SESSION).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-amzn-requestid", b"req-1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass(kw_only=True)
class RunningServer:
    app: RecordingApp
    port: int

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    return ensure_certificates(tmp_path / "state")


@pytest.fixture
def server(tls_files: TLSFiles) -> Iterator[RunningServer]:
    """Hypercorn over TLS (h2 + http/1.1 by ALPN) on a free 127.0.0.1 port, in a thread."""
    app = RecordingApp()
    with serving_tls(app, tls_files) as port:
        yield RunningServer(app=app, port=port)


def _get(url_port: int, path: str = "/ping") -> HTTPRequest:
    return HTTPRequest(
        method="GET",
        destination=URI(scheme="https", host="localhost", port=url_port, path=path),
        fields=Fields(),
        body=b"",
    )


async def test_crt_transport_with_local_ca_negotiates_h2(
    server: RunningServer, tls_files: TLSFiles
) -> None:
    """crt_transport(ca_file=ca.pem) verifies the server, negotiates h2 by ALPN, reads the body."""
    async with crt_transport(ca_file=tls_files.ca_cert) as transport:
        response = await transport.send(_get(server.port))
        body = b"".join([chunk async for chunk in response.chunks()])
    assert response.status == 200
    assert json.loads(body) == CANNED_SESSION
    assert [(s.path, s.http_version) for s in server.app.seen] == [("/ping", "2")]


# s2n (awscrt's TLS on Linux) holds a failed handshake open 10-30 s ("blinding")
# before reporting it, so this case is slow by nature.
@pytest.mark.slow
async def test_crt_transport_without_ca_fails_tls_verification(server: RunningServer) -> None:
    """A transport on the system trust store rejects the emulator's certificate."""
    async with crt_transport() as transport:
        with pytest.raises(AwsCrtError) as failure:
            await transport.send(_get(server.port))
    assert failure.value.name == "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE"
    assert server.app.seen == []


def test_crt_transport_missing_ca_file_raises(tmp_path: Path) -> None:
    """A ca_file that does not exist raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nope.pem"):
        crt_transport(ca_file=tmp_path / "nope.pem")


def test_crt_transport_with_a_file_that_is_no_certificate_names_it(tmp_path: Path) -> None:
    """awscrt raised a bare RuntimeError, "34 (AWS_ERROR_INVALID_ARGUMENT)", naming
    neither the file nor the problem."""
    garbage = tmp_path / "ca.pem"
    garbage.write_text("hello\n")
    with pytest.raises(ValueError, match=rf"^{garbage}: not a usable PEM CA certificate \("):
        crt_transport(ca_file=garbage)


def test_deepcopy_of_transport_keeps_the_ca(tls_files: TLSFiles) -> None:
    """Copying the transport (as the SDK copies configs) keeps the local CA."""
    transport = crt_transport(ca_file=tls_files.ca_cert)
    copied = deepcopy(transport)
    assert isinstance(copied, LocalCATransport)
    assert copied.ca_file == tls_files.ca_cert


async def test_make_client_config_has_endpoint_transport_and_static_credentials(
    tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_client sets endpoint_uri, a CRT transport trusting the CA and dummy credentials."""
    # Real credentials in the environment must be neither needed nor used.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-secret")
    client = await make_client(endpoint_url="https://localhost:9", ca_file=tls_files.ca_cert)
    # The SDK has no public accessor; it keeps the given config here until first use.
    config = client._config
    assert isinstance(client, AsyncConnectHealthClient)
    assert isinstance(config, AsyncConnectHealthConfig)
    assert config.endpoint_uri == "https://localhost:9"
    assert config.region == "us-east-1"
    assert isinstance(config.transport, AWSCRTHTTPClient)
    assert config.transport.ca_file == tls_files.ca_cert
    resolver = config.aws_credentials_identity_resolver
    assert resolver is not None
    identity = await resolver.get_identity(properties={})
    assert identity.access_key_id == DUMMY_ACCESS_KEY_ID
    await client.close()


async def test_make_config_overrides_win(tls_files: TLSFiles) -> None:
    """Extra keyword arguments reach resolve() and replace the defaults, transport included."""
    transport = AWSCRTHTTPClient()
    config = await make_config(
        endpoint_url="https://localhost:9", transport=transport, max_attempts=1, region="eu-west-2"
    )
    assert config.transport is transport
    assert config.max_attempts == 1
    assert config.region == "eu-west-2"
    await transport.close()


def test_boto3_client_sends_to_endpoint_without_host_prefix(tls_files: TLSFiles) -> None:
    """boto3_client has the endpoint and inject_host_prefix off; the URL it sends has no prefix."""
    client = boto3_client(endpoint_url="https://localhost:9", ca_file=tls_files.ca_cert)
    assert client.meta.endpoint_url == "https://localhost:9"
    assert client.meta.config.inject_host_prefix is False
    assert client.meta.region_name == "us-east-1"
    sent: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append(request.url)
        raise _Captured

    client.meta.events.register("before-send", capture)
    with pytest.raises(_Captured):
        client.get_medical_scribe_listening_session(
            domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID, sessionId=SESSION_ID
        )
    client.close()
    # Without inject_host_prefix=False boto3 would send to https://streaming.localhost:9.
    assert [url.split("/medical-scribe-stream/")[0] for url in sent] == ["https://localhost:9"]


def test_boto3_client_names_a_missing_ca_file_at_once_as_make_client_does(tmp_path: Path) -> None:
    """botocore's error came at the first call, after its retries, as a bare
    "[Errno 2] No such file or directory" naming no file."""
    missing = tmp_path / ".medscribe" / "ca.pem"
    with pytest.raises(FileNotFoundError, match=f"CA certificate file not found: {missing}$"):
        boto3_client(endpoint_url="https://localhost:9", ca_file=missing)


def test_boto3_client_with_a_boto3_too_old_for_the_service_says_which_to_install(
    tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 before 1.42.62 has no connecthealth model (its botocore), and the extras
    allowed one: UnknownServiceError named no way out."""
    import boto3
    from botocore.exceptions import UnknownServiceError

    def unknown(self: Any, service_name: str, **kwargs: Any) -> Any:
        raise UnknownServiceError(service_name=service_name, known_service_names="s3")

    monkeypatch.setattr(boto3.session.Session, "client", unknown)
    with pytest.raises(ImportError, match=r"does not know the connecthealth service: .*1\.44\.4"):
        boto3_client(endpoint_url="https://localhost:9", ca_file=tls_files.ca_cert)


class _Captured(Exception):
    """Stops a boto3 call once its request is built, before any network I/O."""


async def test_sdk_control_plane_call_reaches_overridden_endpoint(
    server: RunningServer, tls_files: TLSFiles
) -> None:
    """The real SDK's GetMedicalScribeListeningSession goes to the overridden host, over h2."""
    async with await make_client(endpoint_url=server.url, ca_file=tls_files.ca_cert) as client:
        output = await client.get_medical_scribe_listening_session(
            GetMedicalScribeListeningSessionInput(
                domain_id=DOMAIN_ID, subscription_id=SUBSCRIPTION_ID, session_id=SESSION_ID
            )
        )
    details = output.medical_scribe_listening_session_details
    assert details is not None and details.session_id == SESSION_ID
    [seen] = server.app.seen
    assert seen.method == "GET"
    assert seen.path == (
        f"/medical-scribe-stream/domain/{DOMAIN_ID}/subscription/{SUBSCRIPTION_ID}"
        f"/session/{SESSION_ID}"
    )
    assert seen.http_version == "2"
    # smithy-python does not prepend the model's "streaming." hostPrefix to an
    # overridden endpoint, so the emulator is reached at the plain host.
    assert seen.headers.get(":authority", seen.headers.get("host")) == f"localhost:{server.port}"
    assert f"Credential={DUMMY_ACCESS_KEY_ID}/" in seen.headers["authorization"]
    assert "/us-east-1/health-agent/aws4_request" in seen.headers["authorization"]


def test_boto3_control_plane_call_reaches_overridden_endpoint(
    server: RunningServer, tls_files: TLSFiles
) -> None:
    """boto3's call trusts ca.pem via verify= and reaches the plain host over HTTP/1.1."""
    client = boto3_client(endpoint_url=server.url, ca_file=tls_files.ca_cert)
    response = client.get_medical_scribe_listening_session(
        domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID, sessionId=SESSION_ID
    )
    client.close()
    assert response["medicalScribeListeningSessionDetails"]["sessionId"] == SESSION_ID
    [seen] = server.app.seen
    assert seen.http_version == "1.1"
    assert seen.headers["host"] == f"localhost:{server.port}"


async def test_make_client_quiets_only_awscrts_completed_body_writer(emulator):
    """The one report every test with an in-stream error printed is dropped; every
    other report still reaches the handler the loop had."""
    from emulator.sdk import make_client, quiet_completed_body_writers

    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda loop, context: seen.append(str(context["exception"])))
    try:
        async with await make_client(endpoint_url=emulator.endpoint_url, ca_file=emulator.ca_file):
            pass
        quiet_completed_body_writers()  # a second call: still one layer
        handler = loop.get_exception_handler()
        harmless = RuntimeError("AWS_ERROR_HTTP_STREAM_HAS_COMPLETED: stream is complete")
        handler(loop, {"message": "Task exception was never retrieved", "exception": harmless})
        handler(loop, {"message": "boom", "exception": ValueError("a real failure")})
        assert seen == ["a real failure"]
    finally:
        loop.set_exception_handler(None)
