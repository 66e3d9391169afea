"""A control-plane body over the limit reaches boto3 as the 400, over TLS too.

The emulator refused the body once it passed 1 MiB, while boto3 (HTTP/1.1) was
still sending it; over TLS the connection's close then reset it, and boto3
raised "SSLError: EOF occurred in violation of protocol" (most tries at 5 MB,
every one at 11 MB), which reads as a certificate problem. The rest of the body
is now read and dropped, so the modeled ValidationException arrives every time.
"""

from __future__ import annotations

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

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
