"""An HTTP/1.1 request in absolute-form (``GET http://host/path``) is served.

RFC 9112 §3.2.2: a server MUST accept the absolute-form, and takes the host
from it rather than from the ``Host`` field. hypercorn passed the target on
as the path, so such a request (what a client sends to its HTTP proxy, when
that proxy is the emulator) was answered 404 as an unknown route.
"""

from __future__ import annotations

import json
import uuid

import h11
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.hypercorn_h11 import _HeadLimitedConnection
from emulator.sdk import boto3_client

from .support import DOMAIN_ID, SUBSCRIPTION_ID, raw_http11


def _read(data: bytes) -> h11.Request:
    connection = _HeadLimitedConnection(h11.SERVER)
    connection.receive_data(data)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    return event


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"http://127.0.0.1:9/_emulator/health?x=1", b"/_emulator/health?x=1"),
        (b"HTTPS://example.test/a/b", b"/a/b"),
        (b"http://example.test", b"/"),
        (b"http://example.test?x=1", b"/?x=1"),
    ],
)
def test_the_target_becomes_origin_form_and_its_authority_the_host(target, path):
    request = _read(b"GET " + target + b" HTTP/1.1\r\nHost: elsewhere\r\nX-A: b\r\n\r\n")
    assert request.target == path
    authority = target.split(b"//", 1)[1].split(b"/", 1)[0].split(b"?", 1)[0]
    assert list(request.headers) == [(b"host", authority), (b"x-a", b"b")]


def test_an_http10_request_without_a_host_gets_the_targets():
    request = _read(b"GET http://example.test:8/x HTTP/1.0\r\n\r\n")
    assert (request.target, list(request.headers)) == (b"/x", [(b"host", b"example.test:8")])


@pytest.mark.parametrize("target", [b"/x", b"*", b"example.test:443", b"x"])
def test_other_targets_are_left_as_they_are(target):
    assert _read(b"OPTIONS " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n").target == target


def test_an_absolute_form_target_without_a_host_is_refused():
    with pytest.raises(h11.RemoteProtocolError) as refused:
        _read(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert refused.value.error_status_hint == 400


def test_an_absolute_form_request_is_routed_by_its_path(emulator):
    status, _, body = raw_http11(
        emulator.h2c_port,
        b"GET http://127.0.0.1/_emulator/health HTTP/1.1\r\n"
        b"Host: elsewhere\r\nConnection: close\r\n\r\n",
    )
    assert status == 200 and json.loads(body)["status"] == "ready"


def test_an_absolute_form_target_without_a_host_gets_a_400_in_the_service_shape(emulator):
    status, fields, body = raw_http11(
        emulator.h2c_port, b"GET http:///_emulator/health HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert status == 400
    assert fields["x-amzn-errortype"] == "ValidationException"
    assert "request line" in json.loads(body)["message"]


def test_boto3_through_the_emulator_as_its_http_proxy_reaches_the_control_plane(emulator):
    """botocore sends an http:// request to a proxy in absolute-form."""
    client = boto3_client(
        endpoint_url=emulator.h2c_url,
        config=Config(proxies={"http": emulator.h2c_url}, retries={"total_max_attempts": 1}),
    )
    missing = str(uuid.uuid4())
    with pytest.raises(ClientError) as error:
        client.get_medical_scribe_listening_session(
            sessionId=missing, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
        )
    # The service's answer for a session it does not know, not the 404 of a
    # path no route takes (UnknownOperationException).
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert missing in error.value.response["Error"]["Message"]
