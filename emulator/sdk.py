"""Point the real AWS clients at a local emulator that uses a private CA.

The streaming operation needs smithy-python's CRT transport, which only speaks
HTTP/2 over ``https://`` and whose TLS context uses the system trust store.
These helpers build one that trusts the emulator's ``ca.pem`` instead, plus a
config with dummy static credentials so nothing reads real AWS credentials::

    from emulator.sdk import make_client
    async with await make_client(endpoint_url="https://localhost:8443", ca_file=ca) as client:
        output = await client.start_medical_scribe_listening_session(...)

Requires the optional dependency ``aws-sdk-connecthealth`` (the ``sdk`` extra),
and ``boto3`` (the ``s3`` extra) for :func:`boto3_client`, which so needs both.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from copy import deepcopy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .sdk_version import sdk_problem

# Before the imports: an SDK older than 0.11 lacks some of their names, or
# imports and then fails at ``async with`` (0.10).
if (_problem := sdk_problem()) is not None:
    raise ImportError(_problem)
try:
    from aws_sdk_connecthealth.client import AsyncConnectHealthClient
    from aws_sdk_connecthealth.config import AsyncConnectHealthConfig
    from awscrt import io as crt_io
    from smithy_http.aio.crt import AWSCRTHTTPClient, AWSCRTHTTPClientConfig
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"emulator.sdk cannot import the AWS SDK for Python's Connect Health client "
        f"({exc}): pip install 'medscribe-emulator[sdk]' (or aws-sdk-connecthealth)"
    ) from exc

if TYPE_CHECKING:
    from smithy_http.aio.crt import _AWSCRTEventLoop

__all__ = [
    "DUMMY_ACCESS_KEY_ID",
    "DUMMY_SECRET_ACCESS_KEY",
    "LocalCATransport",
    "crt_transport",
    "make_config",
    "make_client",
    "resolve_config",
    "boto3_client",
]

#: Dummy credentials: the emulator checks signatures are well formed, not who signed.
DUMMY_ACCESS_KEY_ID = "AKIDEXAMPLE"
DUMMY_SECRET_ACCESS_KEY = "emulator-secret"


class LocalCATransport(AWSCRTHTTPClient):
    """The SDK's CRT transport with a TLS context that trusts ``ca_file``.

    With ``ca_file`` the system trust store is replaced, not extended, so this
    transport reaches the emulator only. Without it, it behaves like its base.
    """

    def __init__(
        self,
        *,
        ca_file: str | Path | None = None,
        eventloop: _AWSCRTEventLoop | None = None,
        client_config: AWSCRTHTTPClientConfig | None = None,
    ) -> None:
        super().__init__(eventloop=eventloop, client_config=client_config)
        self._ca_file = None if ca_file is None else Path(ca_file)
        if self._ca_file is not None:
            # The base builds its context from TlsContextOptions() (system store)
            # and offers no hook, so rebuild it from options that trust the CA.
            options = crt_io.TlsContextOptions()
            options.override_default_trust_store_from_path(ca_filepath=str(self._ca_file))
            self._tls_ctx = crt_io.ClientTlsContext(options)

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate file this transport trusts, or None for the system store."""
        return self._ca_file

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # The base's __deepcopy__ returns a plain AWSCRTHTTPClient, which would
        # silently drop the local CA if the SDK ever copied its transport.
        return type(self)(
            ca_file=self._ca_file,
            eventloop=self._eventloop,
            client_config=deepcopy(self._config, memo),
        )


def crt_transport(*, ca_file: str | Path | None = None) -> LocalCATransport:
    """Return a CRT HTTP transport (HTTP/2 by ALPN) that trusts ``ca_file``.

    ::

        transport = crt_transport(ca_file="state/ca.pem")
        config = await AsyncConnectHealthConfig.resolve(endpoint_uri=url, transport=transport)

    ``ca_file=None`` keeps the system trust store. Raises :class:`FileNotFoundError`
    when ``ca_file`` does not exist and :class:`ValueError` naming it when it
    holds no usable PEM certificate (awscrt raised a bare ``RuntimeError``,
    "34 (AWS_ERROR_INVALID_ARGUMENT)", naming neither).
    """
    from awscrt.exceptions import AwsCrtError

    if ca_file is not None and not Path(ca_file).is_file():
        raise FileNotFoundError(f"CA certificate file not found: {ca_file}")
    try:
        return LocalCATransport(ca_file=ca_file)
    except (AwsCrtError, RuntimeError) as error:
        raise ValueError(f"{ca_file}: not a usable PEM CA certificate ({error})") from None


async def make_config(
    *,
    endpoint_url: str,
    ca_file: str | Path | None = None,
    region: str = "us-east-1",
    access_key_id: str = DUMMY_ACCESS_KEY_ID,
    secret_access_key: str = DUMMY_SECRET_ACCESS_KEY,
    session_token: str | None = None,
    **overrides: Any,
) -> AsyncConnectHealthConfig:
    """Return a resolved SDK config aimed at ``endpoint_url`` with static credentials.

    ::

        config = await make_config(endpoint_url="https://localhost:8443", ca_file=ca)
        client = AsyncConnectHealthClient(config=config)

    The transport is :func:`crt_transport` unless ``overrides`` has ``transport``;
    other ``overrides`` go to ``AsyncConnectHealthConfig.resolve`` unchanged and
    win over the defaults here. Explicit credentials mean no AWS credentials are
    looked up; ``session_token`` makes them temporary credentials, whose token
    every request carries (an emulator run with ``--verify-signatures`` checks
    it against its ``--session-token``). Raises what :func:`crt_transport` and
    ``resolve`` raise (e.g. ``ConfigValidationError`` for an unknown field), and
    :class:`ValueError` for an ``AWS_PROFILE`` that names no profile. Warns
    (:class:`UserWarning`) of an ``http://`` endpoint with a CRT transport,
    over which a stream gets no audio.
    """
    settings: dict[str, Any] = {
        "endpoint_uri": endpoint_url,
        "region": region,
        "aws_access_key_id": access_key_id,
        "aws_secret_access_key": secret_access_key,
        "aws_session_token": session_token,
        **overrides,
    }
    if "transport" not in settings:
        settings["transport"] = crt_transport(ca_file=ca_file)
    _warn_of_cleartext(str(settings["endpoint_uri"]), settings["transport"])
    return await resolve_config(**settings)


def _warn_of_cleartext(endpoint: str, transport: object) -> None:
    """Warn that the CRT client streams nothing over ``http://``: the emulator's
    banner prints that endpoint too, and a stream through it waited for ever with
    no error (the emulator's log said why only after its idle timeout)."""
    from smithy_http.aio.crt import AWSCRTHTTPClient

    if endpoint.lower().startswith("http://") and isinstance(transport, AWSCRTHTTPClient):
        warnings.warn(
            f"endpoint {endpoint}: over http:// the SDK's CRT client sends a stream's "
            "events only once its input is closed, so a streaming session gets no "
            "audio and waits; give the emulator's https:// endpoint and its CA "
            "(Get works over http://)",
            UserWarning,
            skip_file_prefixes=(os.path.dirname(__file__) + os.sep,),  # the caller's line
        )


async def resolve_config(**settings: Any) -> AsyncConnectHealthConfig:
    """Return ``AsyncConnectHealthConfig.resolve(**settings)``.

    Raises :class:`ValueError` saying what to do when the profile does not
    exist, instead of the SDK's error: the SDK reads ``AWS_PROFILE`` for every
    client, one with static credentials for the emulator too, and a stale one
    ended in a traceback.
    """
    from smithy_aws_core.config.exceptions import ProfileNotFoundError

    try:
        return await AsyncConnectHealthConfig.resolve(**settings)
    except ProfileNotFoundError as error:
        fix = "unset AWS_PROFILE, or name" if "AWS_PROFILE" in str(error) else "name"
        raise ValueError(
            f"{error} (the SDK reads the profile for every client, the emulator's too: "
            f"{fix} a profile in ~/.aws/config)"
        ) from None


async def make_client(
    *,
    endpoint_url: str,
    ca_file: str | Path | None = None,
    region: str = "us-east-1",
    access_key_id: str = DUMMY_ACCESS_KEY_ID,
    secret_access_key: str = DUMMY_SECRET_ACCESS_KEY,
    session_token: str | None = None,
    **overrides: Any,
) -> AsyncConnectHealthClient:
    """Return an SDK client built from :func:`make_config` with the same arguments.

    ::

        async with await make_client(endpoint_url=url, ca_file=ca) as client:
            session = await client.get_medical_scribe_listening_session(...)

    Closing the client closes its transport. Raises what :func:`make_config` raises.
    The running loop stops reporting awscrt's one known-harmless failure (see
    :func:`quiet_completed_body_writers`).
    """
    quiet_completed_body_writers()
    config = await make_config(
        endpoint_url=endpoint_url,
        ca_file=ca_file,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=session_token,
        **overrides,
    )
    return AsyncConnectHealthClient(config=config)


def quiet_completed_body_writers(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Make ``loop`` (the running one) drop awscrt's "Task exception was never
    retrieved ... AWS_ERROR_HTTP_STREAM_HAS_COMPLETED" and report everything else
    as before (through the handler it had, if any).

    After the service ends a stream early (an in-stream exception, a reset), the
    SDK's request-body task fails that way and nothing retrieves it: the failure
    has already reached the caller as the stream's error, and the report is noise
    in every test that expects one. Calling it again changes nothing.
    """
    loop = loop or asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    if getattr(previous, "_medscribe_quiet", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "HTTP_STREAM_HAS_COMPLETED" in str(context.get("exception", "")):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._medscribe_quiet = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def boto3_client(
    *,
    endpoint_url: str,
    ca_file: str | Path | None = None,
    region: str = "us-east-1",
    access_key_id: str = DUMMY_ACCESS_KEY_ID,
    secret_access_key: str = DUMMY_SECRET_ACCESS_KEY,
    session_token: str | None = None,
    config: Any = None,
) -> Any:
    """Return a boto3 ``connecthealth`` client for the control-plane operations.

    ::

        client = boto3_client(endpoint_url="https://localhost:8443", ca_file=ca)
        client.get_medical_scribe_listening_session(domainId=..., ...)

    Host prefixes are off: the model's ``streaming.`` prefix would otherwise send
    calls to ``streaming.<host>``. Dummy credentials unless given (an emulator
    run with ``--verify-signatures`` needs a key pair it knows, and temporary
    credentials their ``session_token``),
    ``verify=ca_file`` (None means the default bundle). ``config``, a botocore
    ``Config``, is merged in (``Config(retries={"total_max_attempts": 1})`` for a test
    that must see a throttle or a 500: boto3 retries those by itself). Raises
    :class:`ImportError` without boto3, :class:`FileNotFoundError` when
    ``ca_file`` does not exist.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "boto3_client needs boto3: pip install 'medscribe-emulator[sdk,s3]' (or boto3>=1.44.4)"
        ) from exc
    from botocore.exceptions import UnknownServiceError

    if ca_file is not None and not Path(ca_file).is_file():
        # As crt_transport says it: botocore's own error came only at the first
        # call, after its retries, as a bare "[Errno 2] No such file or directory".
        raise FileNotFoundError(f"CA certificate file not found: {ca_file}")
    # A private session, so the caller's default session and profile stay untouched.
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        region_name=region,
    )
    try:
        return session.client(
            "connecthealth",
            endpoint_url=endpoint_url,
            verify=str(ca_file) if ca_file is not None else None,
            config=Config(inject_host_prefix=False).merge(config or Config()),
        )
    except UnknownServiceError:
        raise ImportError(
            f"boto3 {boto3.__version__} does not know the connecthealth service: "
            "pip install 'boto3>=1.44.4'"
        ) from None
