"""--verify-signatures: the real SDK's signatures are checked, bad ones refused."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_sdk_connecthealth import models as m

from emulator.eventstream import Message, encode_message
from emulator.server import RunningServer, Settings

from .support import (
    DOMAIN_ID,
    SUBSCRIPTION_ID,
    H2Client,
    admin,
    new_session_id,
    pcm_tone,
    run_session,
    running_emulator,
)
from .test_stream_wire import END, audio, config_event, headers

KEY, SECRET = "AKIDVERIFIED00000000", "right-secret"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = Settings(
        port=0,
        h2c_port=0,
        state_dir=Path(tmp_path_factory.mktemp("sigv4-state")),
        verify_signatures=True,
        access_key_id=KEY,
        secret_access_key=SECRET,
    )
    with running_emulator(settings) as running:
        yield running


@contextlib.asynccontextmanager
async def sdk_client(
    strict: RunningServer,
    secret: str,
    *,
    key: str = KEY,
    token: str | None = None,
    region: str = "us-east-1",
):
    """A real SDK client signing with ``key`` and ``secret`` (and ``token``) for ``region``."""
    from emulator.sdk import make_client

    client = await make_client(
        endpoint_url=strict.endpoint_url,
        ca_file=strict.ca_file,
        access_key_id=key,
        secret_access_key=secret,
        session_token=token,
        region=region,
    )
    try:
        yield client
    finally:
        await client._config.transport.close()


async def sdk_session(strict: RunningServer, secret: str, **kwargs):
    async with sdk_client(strict, secret) as client:
        return await run_session(client, new_session_id(), audio=pcm_tone(2.0), **kwargs)


async def test_correctly_signed_sdk_sessions_pass_header_and_chunk_verification(strict):
    result = await sdk_session(strict, SECRET)
    assert result.error is None, repr(result.error)
    status, details = admin(
        strict.h2c_url, "GET", f"/_emulator/sessions/{result.output.session_id}"
    )
    assert details["status"] == "COMPLETED"


async def test_wrong_secret_is_access_denied_without_revealing_secrets(strict):
    result = await sdk_session(strict, "wrong-secret")
    assert isinstance(result.error, m.AccessDeniedException), repr(result.error)
    assert "signature" in result.error.message.lower()
    assert SECRET not in result.error.message and "wrong-secret" not in result.error.message


async def test_a_signature_mismatch_is_one_log_line(strict, caplog):
    """Its message carries the canonical request and the string to sign (as AWS's
    does): logged whole, one refusal was 26 lines, most without a time or level."""
    caplog.set_level("INFO", logger="medscribe")
    result = await sdk_session(strict, "wrong-secret")
    assert result.error is not None and "\n" in result.error.message  # the premise
    (line,) = [r.getMessage() for r in caplog.records if "rejected: " in r.getMessage()]
    assert "\n" not in line
    assert "does not match the signature you provided" in line
    assert "more lines: GET /_emulator/sessions)" in line


def test_unsigned_request_is_401_access_denied_naming_the_missing_header(strict):
    client = H2Client("127.0.0.1", strict.h2c_port)
    try:
        stream = client.request(headers(new_session_id()))
        client.send(stream, config_event(), end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    assert response["headers"][":status"] == "401"
    assert response["headers"]["x-amzn-errortype"] == "AccessDeniedException"
    assert "authorization" in json.loads(response["data"])["message"].lower()


_BOGUS = hashlib.sha256(b"not the chain").digest()


@pytest.mark.parametrize(
    ("bogus", "said"),
    [
        (_BOGUS, "chunk signature of event 1 does not match"),
        # No such value can ever match: not blamed on the chain or the credentials.
        (_BOGUS[:31], "the :chunk-signature of event 1 is 31 bytes: an event's signature is 32"),
        (_BOGUS.hex().encode(), "is 64 bytes: an event's signature is 32 (an HMAC-SHA256, sent"),
    ],
    ids=["tampered", "short", "hex"],
)
def test_tampered_event_is_an_in_stream_validation_exception(strict, bogus, said):
    """A request signed correctly whose events carry bad chunk signatures."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    session_id = new_session_id()
    wanted = headers(session_id)
    wanted["x-amz-content-sha256"] = "STREAMING-AWS4-HMAC-SHA256-EVENTS"
    url = f"http://127.0.0.1:{strict.h2c_port}/medical-scribe-stream/"
    request = AWSRequest(method="POST", url=url, headers={**wanted, "host": "localhost"})
    SigV4Auth(Credentials(KEY, SECRET), "health-agent", "us-east-1").add_auth(request)
    signed_headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "host"}
    now = datetime.datetime.now(datetime.UTC)
    envelope = encode_message(
        Message(headers={":date": now, ":chunk-signature": bogus}, payload=config_event())
    )
    client = H2Client("127.0.0.1", strict.h2c_port)
    try:
        stream = client.request(signed_headers)
        client.send(stream, envelope + audio(pcm_tone(0.1)) + END, end_stream=True)
        response = client.wait(stream)
    finally:
        client.close()
    assert response["headers"][":status"] == "200"
    from emulator.eventstream import EventStreamDecoder

    (exception,) = EventStreamDecoder().receive_data(bytes(response["data"]))
    assert exception.headers[":exception-type"] == "validationException"
    assert said in json.loads(exception.payload)["message"]


def test_verification_without_credentials_refuses_to_start(tmp_path):
    from emulator.errors import ConfigError
    from emulator.server import credential_store

    with pytest.raises(ConfigError, match="--verify-signatures needs"):
        credential_store(Settings(verify_signatures=True, state_dir=tmp_path))


# -- the control plane -----------------------------------------------------------


def strict_boto(strict: RunningServer, secret: str, key: str = KEY):
    from emulator.sdk import boto3_client

    return boto3_client(
        endpoint_url=strict.endpoint_url,
        ca_file=strict.ca_file,
        access_key_id=key,
        secret_access_key=secret,
    )


def test_control_plane_calls_signed_with_a_known_key_pass(strict):
    """boto3 signs CreateDomain (a JSON body) and the GETs with the emulator's key pair."""
    result = asyncio.run(sdk_session(strict, SECRET))
    assert result.error is None, repr(result.error)
    boto = strict_boto(strict, SECRET)
    domain = boto.create_domain(name="signed-domain")
    assert boto.get_domain(domainId=domain["domainId"])["name"] == "signed-domain"
    ids = result.output
    details = boto.get_medical_scribe_listening_session(
        domainId=ids.domain_id, subscriptionId=ids.subscription_id, sessionId=ids.session_id
    )["medicalScribeListeningSessionDetails"]
    assert details["streamStatus"] == "COMPLETED"


@pytest.mark.parametrize(
    ("key", "secret", "named"),
    [(KEY, "wrong-secret", "signature"), ("AKIDUNKNOWN000000000", SECRET, "AKIDUNKNOWN000000000")],
    ids=["wrong-secret", "unknown-key"],
)
def test_control_plane_calls_with_bad_credentials_are_access_denied(
    strict, key, secret, named, caplog
):
    """Refused, and logged one line each, as a refused stream is."""
    from botocore.exceptions import ClientError

    caplog.set_level("INFO", logger="medscribe")

    boto = strict_boto(strict, secret, key)
    calls = [
        lambda: boto.create_domain(name="never-made"),
        lambda: boto.list_domains(),
        lambda: boto.get_medical_scribe_listening_session(
            domainId=DOMAIN_ID,
            subscriptionId=SUBSCRIPTION_ID,
            sessionId=new_session_id(),
        ),
    ]
    for call in calls:
        with pytest.raises(ClientError) as caught:
            call()
        error = caught.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 401
        assert error["Error"]["Code"] == "AccessDeniedException"
        assert named in error["Error"]["Message"]
        assert SECRET not in error["Error"]["Message"]
        request_id = error["ResponseMetadata"]["RequestId"]
        (line,) = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
        assert f"request {request_id} rejected: AccessDeniedException (" in line
        assert "\n" not in line and SECRET not in line and named in line
    # Nothing was created behind the refusal.
    names = [d["name"] for d in strict_boto(strict, SECRET).list_domains()["domains"]]
    assert "never-made" not in names


def test_a_refused_calls_path_cannot_write_lines_into_the_log(strict, caplog):
    """Logged decoded, %0A in the path was a newline: a caller wrote a line of its own."""
    caplog.set_level("INFO", logger="medscribe")
    forged = "/domain%0A2026-01-01 00:00:00,000 INFO medscribe.sessions: FORGED".replace(" ", "%20")
    request = urllib.request.Request(strict.h2c_url + forged, method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    caught.value.close()
    assert caught.value.code == 401
    (line,) = [r.getMessage() for r in caplog.records if "FORGED" in r.getMessage()]
    assert "\n" not in line
    assert f"rejected: AccessDeniedException (GET {forged}): " in line


def test_unsigned_control_plane_request_is_401_naming_the_missing_header(strict):
    request = urllib.request.Request(strict.h2c_url + "/domain", method="GET")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    response = caught.value
    assert response.code == 401
    assert response.headers["x-amzn-errortype"] == "AccessDeniedException"
    assert "authorization" in json.loads(response.read())["message"].lower()


@pytest.mark.parametrize("unsigned", [False, True], ids=["body-hashed", "unsigned-payload"])
def test_a_control_plane_body_swapped_after_signing_is_refused(strict, unsigned):
    """A CreateDomain signed with x-amz-content-sha256: UNSIGNED-PAYLOAD (S3's) and
    its body then swapped for another of its length was taken: a domain with the
    forged name. Refused now, as the same swap is with the body's hash signed."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = strict.h2c_url + "/domain"
    signed = AWSRequest(method="POST", url=url, data=b'{"name": "real-name"}')
    signed.headers["content-type"] = "application/json"
    if unsigned:
        signed.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    SigV4Auth(Credentials(KEY, SECRET), "health-agent", "us-east-1").add_auth(signed)
    forged = urllib.request.Request(
        url, data=b'{"name": "forged-nam"}', headers=dict(signed.headers), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(forged, timeout=10)
    response = caught.value
    assert response.code == 401
    assert response.headers["x-amzn-errortype"] == "AccessDeniedException"
    message = json.loads(response.read())["message"]
    if unsigned:
        assert "UNSIGNED-PAYLOAD, which only S3 takes" in message
    else:
        assert "does not match the SHA-256" in message or "signature" in message.lower()


def test_admin_api_keeps_its_own_access_under_verification(strict):
    status, health = admin(strict.h2c_url, "GET", "/_emulator/health")
    assert status == 200 and health["status"] == "ready"


def test_control_plane_body_over_the_limit_is_refused_before_verification(strict):
    from emulator.control import MAX_REQUEST_BODY

    body = b"{" + b" " * MAX_REQUEST_BODY + b"}"
    request = urllib.request.Request(strict.h2c_url + "/domain", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    response = caught.value
    assert response.code == 400
    assert response.headers["x-amzn-errortype"] == "ValidationException"
    assert str(MAX_REQUEST_BODY) in json.loads(response.read())["message"]


async def test_the_sdks_own_get_session_is_verified_over_http2(strict):
    """The SDK signs GetMedicalScribeListeningSession itself (CRT, HTTP/2): a
    known key pair passes, a wrong secret is refused."""
    from aws_sdk_connecthealth.models import GetMedicalScribeListeningSessionInput

    done = await sdk_session(strict, SECRET)
    assert done.error is None, repr(done.error)
    request = GetMedicalScribeListeningSessionInput(
        session_id=done.output.session_id, domain_id=DOMAIN_ID, subscription_id=SUBSCRIPTION_ID
    )
    async with sdk_client(strict, SECRET) as client:
        got = await client.get_medical_scribe_listening_session(input=request)
        assert got.medical_scribe_listening_session_details.stream_status == "COMPLETED"
    async with sdk_client(strict, "wrong-secret") as client:
        with pytest.raises(m.AccessDeniedException, match="signature"):
            await client.get_medical_scribe_listening_session(input=request)


def test_an_undecodable_byte_in_the_authorization_harms_no_one(strict):
    """A non-UTF-8 byte in the access key id: its client gets a 401 quoting it as an
    escape, and the admin API's list of rejected requests, which quotes the message,
    still answers everyone (it was a 500 for all until a reset)."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    now = datetime.datetime.now(datetime.UTC)
    request = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"localhost"),
        (b":path", b"/medical-scribe-stream/"),
        *((name.encode(), value.encode()) for name, value in headers(new_session_id()).items()),
        (b"x-amz-date", now.strftime("%Y%m%dT%H%M%SZ").encode()),
        (b"x-amz-content-sha256", b"STREAMING-AWS4-HMAC-SHA256-EVENTS"),
        (
            b"authorization",
            b"AWS4-HMAC-SHA256 Credential=AKID\xffREVIEW/"
            + now.strftime("%Y%m%d").encode()
            + b"/us-east-1/health-agent/aws4_request, SignedHeaders=host;x-amz-date, Signature="
            + b"0" * 64,
        ),
    ]
    connection = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    )
    connection.initiate_connection()
    connection.send_headers(1, request, end_stream=True)
    status, body = None, b""
    with socket.create_connection(("127.0.0.1", strict.h2c_port), timeout=10) as sock:
        sock.sendall(connection.data_to_send())
        ended = False
        while not ended and (data := sock.recv(65536)):
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                ended = ended or isinstance(event, h2.events.StreamEnded)
    assert status == b"401"
    message = json.loads(body.decode("utf-8"))["message"]  # strict UTF-8: no lone surrogate
    assert "AKID\\udcffREVIEW" in message
    status, listing = admin(strict.h2c_url, "GET", "/_emulator/sessions")
    assert status == 200
    assert any("AKID\\udcffREVIEW" in entry["message"] for entry in listing["rejected"])


def test_a_body_over_the_limit_is_refused_alike_with_signatures_verified(strict):
    """Read for its signature, it got a message of its own: a test asserting on the
    refusal passed in one mode and failed in the other."""
    from botocore.exceptions import ClientError

    from emulator.control import MAX_REQUEST_BODY

    boto = strict_boto(strict, SECRET)
    tags = {f"key-{n:07d}": "v" * 200 for n in range(MAX_REQUEST_BODY // 200)}
    with pytest.raises(ClientError) as refused:
        boto.create_domain(name="big-body", tags=tags)
    error = refused.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == (
        "1 validation error detected: Value at 'body' failed to satisfy constraint: "
        f"Request body must be at most {MAX_REQUEST_BODY} bytes"
    )


async def test_with_a_region_a_signature_scoped_to_another_is_refused(tmp_path):
    """The scope's region was never checked: an app set up for the wrong region
    passed here and failed on the service. With --region it is checked, for the
    stream (the SDK) and the control plane (boto3) alike."""
    import botocore.exceptions

    from emulator.sdk import boto3_client

    settings = Settings(
        port=0,
        h2c_port=0,
        state_dir=tmp_path,
        verify_signatures=True,
        access_key_id=KEY,
        secret_access_key=SECRET,
        region="eu-west-2",
    )
    with running_emulator(settings) as running:
        for region, refused in (("eu-west-2", False), ("us-east-1", True)):
            async with sdk_client(running, SECRET, region=region) as client:
                result = await run_session(client, new_session_id(), audio=pcm_tone(0.5))
            boto = boto3_client(
                endpoint_url=running.endpoint_url,
                ca_file=running.ca_file,
                region=region,
                access_key_id=KEY,
                secret_access_key=SECRET,
            )
            said = "Credential should be scoped to a valid region: 'eu-west-2' (the scope names "
            if not refused:
                assert result.error is None, repr(result.error)
                boto.list_domains()
                continue
            assert isinstance(result.error, m.AccessDeniedException), repr(result.error)
            assert result.error.message.startswith(said + "'us-east-1')")
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                boto.list_domains()
            assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
            assert caught.value.response["Error"]["Message"].startswith(said)


def test_a_presigned_request_is_told_that_query_signing_is_not_verified(strict):
    """boto3's generate_presigned_url put the signature in the query string, and
    the 401 said the request had no signature ("sign it with AWS Signature
    Version 4"), as if unsigned."""
    import ssl

    url = strict_boto(strict, SECRET).generate_presigned_url("list_domains", Params={})
    assert "X-Amz-Signature=" in url  # the premise
    context = ssl.create_default_context(cafile=str(strict.ca_file))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, context=context, timeout=10)
    assert caught.value.code == 401
    message = json.loads(caught.value.read())["message"]
    assert message.startswith(
        "Missing Authentication Token: the request is presigned (its SigV4 signature is in "
        "the query string), which the emulator does not verify: sign it in an Authorization "
        "header"
    )
