"""Temporary credentials under --verify-signatures: a key given with a session
token must send it (X-Amz-Security-Token), a long-term key none; through the
real SDK, boto3 and the stream command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_sdk_connecthealth import models as m

from emulator.server import RunningServer, Settings

from .support import admin, new_session_id, pcm_tone, run_session, running_emulator
from .test_sigv4_stream import sdk_client

TEMPORARY_KEY, TEMPORARY_SECRET = "ASIATEMPORARY0000000", "temporary-secret"
TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token+/="
FILE_KEY, FILE_SECRET, FILE_TOKEN = "ASIAFROMFILE00000000", "file-secret", "file-profile-token"
LONG_TERM_KEY, LONG_TERM_SECRET = "AKIALONGTERM00000000", "long-term-secret"
SECRETS = (TEMPORARY_SECRET, TOKEN, FILE_SECRET, FILE_TOKEN, LONG_TERM_SECRET, "not-the-token")


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A verifying emulator: one temporary key by option, one temporary and one
    long-term key from its credentials file."""
    root = Path(tmp_path_factory.mktemp("session-tokens"))
    credentials = root / "credentials"
    credentials.write_text(
        f"[temporary]\naws_access_key_id = {FILE_KEY}\naws_secret_access_key = {FILE_SECRET}\n"
        f"aws_session_token = {FILE_TOKEN}\n"
        f"[long-term]\naws_access_key_id = {LONG_TERM_KEY}\n"
        f"aws_secret_access_key = {LONG_TERM_SECRET}\n"
    )
    settings = Settings(
        port=0,
        h2c_port=0,
        state_dir=root / "state",
        verify_signatures=True,
        access_key_id=TEMPORARY_KEY,
        secret_access_key=TEMPORARY_SECRET,
        session_token=TOKEN,
        credentials_file=credentials,
    )
    with running_emulator(settings) as running:
        yield running


async def sdk_session(
    server: RunningServer, key: str, secret: str, token: str | None, session_id: str = ""
):
    async with sdk_client(server, secret, key=key, token=token) as client:
        return await run_session(client, session_id or new_session_id(), audio=pcm_tone(1.0))


def assert_no_secrets(message: str) -> None:
    for secret in SECRETS:
        assert secret not in message, message


@pytest.mark.parametrize(
    ("key", "secret", "token"),
    [(TEMPORARY_KEY, TEMPORARY_SECRET, TOKEN), (FILE_KEY, FILE_SECRET, FILE_TOKEN)]
    + [(LONG_TERM_KEY, LONG_TERM_SECRET, None)],
    ids=["option", "credentials-file", "long-term"],
)
async def test_each_key_streams_with_its_own_token_or_none(strict, key, secret, token):
    result = await sdk_session(strict, key, secret, token)
    assert result.error is None, repr(result.error)
    status, details = admin(
        strict.h2c_url, "GET", f"/_emulator/sessions/{result.output.session_id}"
    )
    assert status == 200 and details["status"] == "COMPLETED"


REFUSALS = {
    "token-missing": (
        TEMPORARY_KEY,
        TEMPORARY_SECRET,
        None,
        f"access key id '{TEMPORARY_KEY}' is temporary credentials (the emulator was given "
        "its session token) and the request has no X-Amz-Security-Token header",
    ),
    "token-wrong": (
        FILE_KEY,
        FILE_SECRET,
        "not-the-token",
        f"the request's X-Amz-Security-Token is not the session token of access key id "
        f"'{FILE_KEY}'",
    ),
    "another-keys-token": (
        FILE_KEY,
        FILE_SECRET,
        TOKEN,
        f"is not the session token of access key id '{FILE_KEY}'",
    ),
    "token-on-a-long-term-key": (
        LONG_TERM_KEY,
        LONG_TERM_SECRET,
        TOKEN,
        f"the request carries an X-Amz-Security-Token, but access key id '{LONG_TERM_KEY}' "
        "was given to the emulator without a session token",
    ),
}


@pytest.mark.parametrize(("key", "secret", "token", "expected"), REFUSALS.values(), ids=REFUSALS)
async def test_a_token_missing_wrong_or_unexpected_is_access_denied_saying_which(
    strict, key, secret, token, expected
):
    session_id = new_session_id()
    result = await sdk_session(strict, key, secret, token, session_id)
    assert isinstance(result.error, m.AccessDeniedException), repr(result.error)
    message = result.error.message
    assert message.startswith("The security token included in the request is invalid: ")
    assert expected in message
    assert_no_secrets(message)
    # Refused before any session began.
    status, _ = admin(strict.h2c_url, "GET", f"/_emulator/sessions/{session_id}")
    assert status == 404


def test_the_control_plane_checks_tokens_the_same_way(strict):
    from botocore.exceptions import ClientError

    from emulator.sdk import boto3_client

    def boto(key: str, secret: str, token: str | None):
        return boto3_client(
            endpoint_url=strict.endpoint_url,
            ca_file=strict.ca_file,
            access_key_id=key,
            secret_access_key=secret,
            session_token=token,
        )

    domain = boto(TEMPORARY_KEY, TEMPORARY_SECRET, TOKEN).create_domain(name="temporary")
    fetched = boto(FILE_KEY, FILE_SECRET, FILE_TOKEN).get_domain(domainId=domain["domainId"])
    assert fetched["name"] == "temporary"
    for key, secret, token, expected in REFUSALS.values():
        with pytest.raises(ClientError) as caught:
            boto(key, secret, token).create_domain(name="never-made")
        error = caught.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 401
        assert error["Error"]["Code"] == "AccessDeniedException"
        assert expected in error["Error"]["Message"]
        assert_no_secrets(error["Error"]["Message"])
    names = [
        d["name"] for d in boto(LONG_TERM_KEY, LONG_TERM_SECRET, None).list_domains()["domains"]
    ]
    assert "never-made" not in names


def test_the_stream_command_signs_with_a_session_token(strict, tmp_path):
    from .test_cli_stream import clean_env, stream, write_wav

    path = write_wav(tmp_path / "tone.wav", 1.0)
    pair = ["--access-key-id", TEMPORARY_KEY, "--secret-access-key", TEMPORARY_SECRET]
    signed = stream(strict, str(path), *pair, "--session-token", TOKEN)
    assert signed.returncode == 0, signed.stderr
    from_env = stream(
        strict,
        str(path),
        *pair,
        env=clean_env(MEDSCRIBE_SESSION_TOKEN=TOKEN),
    )
    assert from_env.returncode == 0, from_env.stderr
    missing = stream(strict, str(path), *pair)
    assert missing.returncode == 1
    assert "AccessDeniedException" in missing.stderr
    assert "has no X-Amz-Security-Token header" in missing.stderr
    assert_no_secrets(missing.stderr)
