"""A control-plane body over the limit reaches boto3 as the 400, over TLS too.

The emulator refused the body once it passed 1 MiB, while boto3 (HTTP/1.1) was
still sending it; over TLS the connection's close then reset it, and boto3
raised "SSLError: EOF occurred in violation of protocol" (most tries at 5 MB,
every one at 11 MB), which reads as a certificate problem. The server now reads
the rest of the body and drops it after its answer (emulator.hypercorn_h11), so
the modeled ValidationException arrives every time; the admin API's refusals
likewise.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.admin import MAX_ADMIN_BODY
from emulator.control import MAX_REQUEST_BODY
from emulator.sdk import boto3_client


@pytest.fixture
def boto(emulator):
    client = boto3_client(
        endpoint_url=emulator.endpoint_url,
        ca_file=emulator.ca_file,
        config=Config(retries={"total_max_attempts": 1}),
    )
    yield client
    client.close()


def _tags(size: int) -> dict[str, str]:
    """Tags of about ``size`` bytes of JSON (the limit is checked before the model's)."""
    value = "v" * 200
    return {f"key-{n:07d}": value for n in range(size // 220)}


@pytest.mark.parametrize("megabytes", [2, 11])
def test_a_body_over_the_limit_is_the_modeled_400_every_time_over_tls(boto, megabytes):
    tags = _tags(megabytes * 1024 * 1024)
    for _ in range(3):
        with pytest.raises(ClientError) as refused:
            boto.create_domain(name="big-body", tags=tags)
        error = refused.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["Error"]["Code"] == "ValidationException"
        assert f"Request body must be at most {MAX_REQUEST_BODY} bytes" in error["Error"]["Message"]
    assert boto.list_domains()["domains"] is not None  # the emulator serves on


def _admin_over_tls(emulator, method: str, path: str, body: bytes) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=emulator.ca_file)
    request = urllib.request.Request(emulator.endpoint_url + path, data=body, method=method)
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        (
            "POST",
            "/_emulator/rules",
            f"request body is {{size}} bytes; the limit is {MAX_ADMIN_BODY}",
        ),
        ("DELETE", "/_emulator/rules", "DELETE /_emulator/rules takes no body"),
    ],
    ids=["rule", "no-body-route"],
)
def test_an_admin_body_over_its_limit_is_the_400_every_time_over_tls(
    emulator, method, path, expected
):
    """The admin API answered as soon as a body passed its limit: over TLS the
    client, still sending, saw the connection reset instead of the 400."""
    body = json.dumps({"match": {"sessionId": "x" * (MAX_ADMIN_BODY + 2 * 1024 * 1024)}}).encode()
    for _ in range(3):
        status, answer = _admin_over_tls(emulator, method, path, body)
        assert status == 400
        assert expected.format(size=len(body)) in answer["message"]
    status, health = _admin_over_tls(emulator, "GET", "/_emulator/health", None)
    assert (status, health["status"]) == (200, "ready")


async def test_a_content_length_of_more_digits_than_int_reads_is_over_the_limit():
    """h11 and h2 refuse such a header before the app; read_limited, should one
    reach it, refuses it too rather than raise from int()."""
    from emulator.requestbody import read_limited

    class _Request:
        headers = {"content-length": "9" * 5000}

        async def stream(self):  # pragma: no cover - never read
            raise AssertionError("read past a declared size over the limit")
            yield b""

    body, size = await read_limited(_Request(), 1024)
    assert body == b"" and size > 1024
