"""Test helpers: run an emulator in a thread, and drive one through its admin API.

:class:`EmulatorThread` runs a real emulator (hypercorn, TLS + h2c) on its own
asyncio loop in a daemon thread, for test suites and the pytest plugin::

    with EmulatorThread(Settings(port=0, h2c_port=0, state_dir=tmp)) as running:
        emulator = MedscribeEmulator.from_running(running)

:class:`MedscribeEmulator` talks to an emulator only through ``/_emulator/``
over HTTP, so it behaves the same for one started in-process and for one
already running elsewhere (``MedscribeEmulator.connect("http://localhost:8080")``,
e.g. a compose service)::

    with emulator.use_scenario("primary-care-visit", session_id=sid):
        async with await emulator.client() as client:
            ...
    assert emulator.session(sid)["status"] == "COMPLETED"

Every admin call that fails raises :class:`MedscribeAdminError` carrying the
emulator's own message.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import shutil
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from aws_sdk_connecthealth.client import AsyncConnectHealthClient
    from aws_sdk_connecthealth.config import AsyncConnectHealthConfig

    from .server import RunningServer, Settings

__all__ = ["EmulatorThread", "MedscribeEmulator", "MedscribeAdminError", "EmulatorRule"]

#: Seconds an emulator gets to bind its ports and create its CA (key generation).
START_TIMEOUT = 30.0

#: Seconds an emulator gets to stop: hypercorn cuts in-flight requests after its
#: 1 s graceful timeout, so anything longer means the thread is stuck.
STOP_TIMEOUT = 10.0

#: Seconds one admin request may take; the admin API answers from memory.
ADMIN_TIMEOUT = 10.0

# The emulator is local or a neighbouring container: an HTTP(S)_PROXY set for
# the internet must not capture its traffic.
_NO_PROXY = urllib.request.ProxyHandler({})


@functools.lru_cache(maxsize=32)
def _opener(
    ca_file: str | None, *, https: bool, verify: bool, version: object = None
) -> urllib.request.OpenerDirector:
    """The admin API's opener, built once for each kind of URL (and ``version``
    of the CA file): built per call, it loaded the system's CA store every time
    (``build_opener`` adds an HTTPS handler with a default context even for
    ``http://``), about 20 ms a call, most of a pytest fixture's per-test cost."""
    if not https:  # a context that is never used, made without reading any store
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    elif not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file)
    return urllib.request.build_opener(_NO_PROXY, urllib.request.HTTPSHandler(context=context))


class MedscribeAdminError(Exception):
    """An admin API call failed: ``status`` is the HTTP status (``None`` when the
    emulator could not be reached) and ``message`` the emulator's explanation."""

    def __init__(self, status: int | None, message: str, *, url: str = "") -> None:
        self.status = status
        self.message = message
        self.url = url
        super().__init__(message if status is None else f"{status} {message}")


class EmulatorThread:
    """A real emulator serving from a daemon thread with its own asyncio loop.

    ``start()`` returns once the sockets listen; ``stop()`` sets the shutdown
    event from outside the loop and joins the thread. Also a context manager
    whose ``__enter__`` returns the :class:`~emulator.server.RunningServer`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._running: RunningServer | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> RunningServer:
        """The started server's URLs and CA; raises RuntimeError before ``start()``."""
        if self._running is None:
            raise RuntimeError("the emulator thread has not been started")
        return self._running

    @property
    def alive(self) -> bool:
        """Whether the server thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RunningServer:
        """Start serving and return the running server's URLs and CA file.

        Raises what :func:`emulator.server.serve` raises before serving (e.g.
        ``ConfigError`` for invalid fixtures, ``OSError`` for a busy port), and
        RuntimeError when it does not listen within ``start_timeout`` seconds or
        was started already.
        """
        if self._thread is not None:
            raise RuntimeError("the emulator thread was already started")
        self._thread = threading.Thread(target=self._main, name="medscribe-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout):
            self._signal_shutdown()
            raise RuntimeError(f"the emulator did not start within {self.start_timeout} s")
        if self._error is not None:
            self._thread.join(self.stop_timeout)
            # Raised here once: a stop() in the caller's finally (the usual fixture)
            # raised it again, and the failure was reported twice.
            error, self._error = self._error, None
            raise error
        return self.running

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call more than once.

        Raises RuntimeError when the thread is still alive after
        ``stop_timeout`` seconds, and re-raises an error the server died of.
        """
        if self._thread is None:
            return
        self._signal_shutdown()
        self._thread.join(self.stop_timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the emulator did not stop within {self.stop_timeout} s")
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _signal_shutdown(self) -> None:
        loop, shutdown = self._loop, self._shutdown
        if loop is None or shutdown is None:
            return
        try:
            loop.call_soon_threadsafe(shutdown.set)
        except RuntimeError:
            pass  # the loop has already closed: the server is gone

    def _ready(self, running: RunningServer) -> None:
        self._running = running
        self._started.set()

    def _main(self) -> None:
        async def main() -> None:
            # Imported here so that driving a remote emulator never loads the server stack.
            from .server import serve

            self._shutdown = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            await serve(self.settings, shutdown=self._shutdown, ready=self._ready)

        try:
            asyncio.run(main())
        except BaseException as error:  # handed to start() or stop() in the caller's thread
            self._error = error
        finally:
            self._started.set()


@dataclass(frozen=True, kw_only=True)
class EmulatorRule:
    """A rule added through the admin API.

    ``data`` is the rule as the emulator reported it (``id``, ``match``,
    ``scenario``, ``error``, ``times``, ``remaining`` when added). As a context
    manager it removes itself on exit.
    """

    id: str
    data: dict[str, Any]
    owner: MedscribeEmulator = field(repr=False, compare=False)

    def remove(self) -> None:
        """Delete the rule; a rule already gone (e.g. after a reset) is not an error.

        Raises :class:`MedscribeAdminError` for any other failure.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        try:
            self.owner.request("DELETE", f"/_emulator/rules/{urllib.parse.quote(self.id)}")
        except MedscribeAdminError as error:
            if error.status != 404:
                raise
        if self.id in self.owner.added_rules:
            self.owner.added_rules.remove(self.id)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def _session_path(
    session_id: str, domain_id: str | None, subscription_id: str | None, suffix: str = ""
) -> str:
    path = f"/_emulator/sessions/{urllib.parse.quote(session_id, safe='')}{suffix}"
    query = {
        name: value
        for name, value in (("domainId", domain_id), ("subscriptionId", subscription_id))
        if value is not None
    }
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


def _replace_host(url: str, host: str | None) -> str:
    """``url`` with its host replaced, keeping its scheme and port."""
    parts = urllib.parse.urlsplit(url)
    if not host:
        return url
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class MedscribeEmulator:
    """A handle on one emulator, driven through its admin API.

    ``endpoint_url`` is the TLS endpoint the SDK uses, ``h2c_url`` the cleartext
    one, ``ca_file`` the CA certificate that signed the endpoint's certificate
    (``None`` when the emulator serves a user-supplied certificate), and
    ``admin_url`` the base URL admin calls go to. ``admin_token`` is sent as
    ``Authorization: Bearer`` on admin calls, for an emulator run with
    ``--admin-token``.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        h2c_url: str,
        ca_file: Path | None,
        admin_url: str | None = None,
        timeout: float = ADMIN_TIMEOUT,
        admin_token: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.h2c_url = h2c_url.rstrip("/")
        self.ca_file = ca_file
        self.admin_url = (admin_url or h2c_url).rstrip("/")
        self.timeout = timeout
        self.admin_token = admin_token
        #: Ids of the rules :meth:`add_rule` added since the last :meth:`reset`
        #: (the pytest fixture removes them after each test).
        self.added_rules: list[str] = []

    def __repr__(self) -> str:
        return f"MedscribeEmulator(endpoint_url={self.endpoint_url!r}, h2c_url={self.h2c_url!r})"

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_running(
        cls, running: RunningServer, *, admin_token: str | None = None
    ) -> MedscribeEmulator:
        """Return a handle on a server started in this process (admin over h2c);
        ``admin_token`` is its settings' ``admin_token``, if any."""
        return cls(
            endpoint_url=running.endpoint_url,
            h2c_url=running.h2c_url,
            ca_file=running.ca_file,
            admin_token=admin_token,
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        ca_dir: Path | None = None,
        timeout: float = ADMIN_TIMEOUT,
        admin_token: str | None = None,
    ) -> MedscribeEmulator:
        """Return a handle on an emulator already running at ``url``.

        ``url`` is either endpoint: ``http://`` (cleartext; admin calls use it)
        or ``https://`` (TLS; admin calls use it, trusting the downloaded CA).
        The other endpoint is the one the emulator reports in its health
        response, with the host of ``url`` (so a published port must match the
        container's). The CA certificate is downloaded from
        ``/_emulator/ca.pem`` into ``ca_dir`` (when ``None``, a new temporary
        directory, removed when the process exits). ``admin_token`` is the
        emulator's ``--admin-token``, if it has one. Raises
        :class:`MedscribeAdminError` when the emulator cannot be reached or does
        not answer as one, and ValueError for a URL that is neither ``http`` nor
        ``https``.
        """
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// emulator URL, got {url!r}")
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        # The CA is what the TLS endpoint's certificate is checked against, so it
        # cannot itself be fetched with verification; the emulator serves it for
        # exactly this download.
        probe = cls(endpoint_url=base, h2c_url=base, ca_file=None, admin_url=base, timeout=timeout)
        ca_pem = probe._ca_pem(verify=False)
        ca_file: Path | None = None
        if ca_pem is not None:
            if ca_dir is not None:
                directory = ca_dir
            else:
                directory = Path(tempfile.mkdtemp("-medscribe-ca"))
                # Not with the handle: a client made from its CA file may outlive it.
                atexit.register(shutil.rmtree, directory, ignore_errors=True)
            directory.mkdir(parents=True, exist_ok=True)
            ca_file = directory / "ca.pem"
            ca_file.write_bytes(ca_pem)
        handle = cls(
            endpoint_url=base,
            h2c_url=base,
            ca_file=ca_file,
            admin_url=base,
            timeout=timeout,
            admin_token=admin_token,
        )
        endpoints = handle.health().get("endpoints") or {}
        if parts.scheme == "https":
            handle.h2c_url = _replace_host(endpoints.get("h2c", base), parts.hostname)
        else:
            handle.endpoint_url = _replace_host(endpoints.get("https", base), parts.hostname)
        return handle

    # -- admin API -------------------------------------------------------------

    def _ca_pem(self, *, verify: bool) -> bytes | None:
        """The emulator's CA certificate, or None when it serves a user-supplied one."""
        try:
            body = self.request("GET", "/_emulator/ca.pem", verify=verify)
        except MedscribeAdminError as error:
            if error.status == 404 and "no route" not in error.message:
                return None
            raise
        if not isinstance(body, bytes):
            raise MedscribeAdminError(None, "/_emulator/ca.pem did not return a PEM certificate")
        return body

    def request(
        self, method: str, path: str, body: object | None = None, *, verify: bool = True
    ) -> Any:
        """Call ``method path`` on the admin API and return the decoded JSON (a list
        for JSON lines, bytes for anything else).

        Raises :class:`MedscribeAdminError` for a status of 400 or more (with the
        emulator's message) and when the emulator cannot be reached.
        """
        # pytest leaves this frame out of a failing test's traceback: its source
        # buried the one line that says what went wrong.
        __tracebackhide__ = True
        url = self.admin_url + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if self.admin_token is not None:
            request.add_header("authorization", f"Bearer {self.admin_token}")
        https = self.admin_url.startswith("https:")
        ca_file = None if self.ca_file is None else str(self.ca_file)
        version = None
        if https and verify and ca_file is not None:
            try:  # a CA replaced at the same path (a new state) needs a new context
                version = os.stat(ca_file).st_mtime_ns
            except OSError:
                pass  # the request says what is wrong
        opener = _opener(ca_file, https=https, verify=verify, version=version)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw, ctype = response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as error:
            raw = error.read()
            message = raw.decode("utf-8", "replace").strip() or error.reason
            try:
                message = json.loads(raw)["message"]
            except (ValueError, KeyError, TypeError):
                pass
            message = str(message)
            if error.code == 401 and self.admin_token is None:
                message += (
                    " (this handle has no admin token: pass admin_token=, or in pytest "
                    "--medscribe-admin-token / MEDSCRIBE_ADMIN_TOKEN)"
                )
            raise MedscribeAdminError(error.code, message, url=url) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise MedscribeAdminError(
                None, f"cannot reach the medscribe emulator at {url}: {reason}", url=url
            ) from None
        if "ndjson" in ctype or "jsonl" in ctype:
            return [json.loads(line) for line in raw.splitlines() if line.strip()]
        if "json" in ctype:
            return json.loads(raw)
        return raw

    def health(self) -> dict[str, Any]:
        """Return ``/_emulator/health``: status, version, endpoints, counters, scenarios."""
        __tracebackhide__ = True  # the caller's line, then the error
        return self.request("GET", "/_emulator/health")

    def reset(self) -> list[str]:
        """Forget every session and every rule added through the API.

        Rules from the emulator's rules file come back. Sessions with a stream
        still open are kept: returns their ids (an emulator older than this
        returns none). Raises :class:`MedscribeAdminError`.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        answer = self.request("POST", "/_emulator/reset")
        self.added_rules.clear()
        live = answer.get("liveSessions") if isinstance(answer, dict) else None
        return list(live or [])

    def add_rule(
        self,
        rule: Mapping[str, Any] | None = None,
        /,
        *,
        match: Mapping[str, str] | None = None,
        scenario: str | Mapping[str, Any] | None = None,
        error: str | Mapping[str, str] | None = None,
        chaos: Mapping[str, Any] | None = None,
        probability: float | None = None,
        times: int | None = None,
    ) -> EmulatorRule:
        """Add a rule and return it; the newest matching rule wins.

        Either pass a whole rule as in ``rules.yaml`` (``{"match": ..., "scenario":
        ...}``), or the keywords: ``match`` (``sessionId`` / ``domainId`` /
        ``subscriptionId``; omitted keys match anything; ``operation``:
        ``"GetMedicalScribeListeningSession"`` for a rule whose error refuses
        look-ups instead of streams), exactly one of
        ``scenario`` (a name or an inline scenario) and ``error`` (a service
        error type such as ``"ThrottlingException"``, or ``{"type", "message"}``),
        ``chaos`` (network trouble: ``{"delay": 0.5}``, ``{"disconnect": {"at": 12}}``...,
        alone or with a scenario), ``probability`` and ``times``, as the README's
        Rules section describes them. Raises :class:`MedscribeAdminError` (status
        400, listing every problem) for an invalid rule, and TypeError when both
        forms are used.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        if rule is not None:
            if any(
                value is not None for value in (match, scenario, error, chaos, probability, times)
            ):
                raise TypeError("pass either a whole rule or keyword fields, not both")
            if not isinstance(rule, Mapping):
                hint = (
                    f"; to replay a scenario by name: use_scenario({rule!r}) or "
                    f"add_rule(scenario={rule!r})"
                    if isinstance(rule, str)
                    else ""
                )
                raise TypeError(
                    "add_rule(rule): a whole rule is a dict such as {'match': {...}, "
                    f"'scenario': ...}}, got {type(rule).__name__} {rule!r}{hint}"
                )
            body: dict[str, Any] = dict(rule)
        else:
            if match is not None and not isinstance(match, Mapping):
                raise TypeError(
                    "add_rule(match=...) is a dict of sessionId, domainId and/or "
                    "subscriptionId (and operation), such as match={'sessionId': ...}; got "
                    f"{type(match).__name__} {match!r}"
                )
            body = {"match": dict(match or {})}
            if scenario is not None:
                body["scenario"] = scenario
            if error is not None:
                body["error"] = {"type": error} if isinstance(error, str) else dict(error)
            if chaos is not None:
                body["chaos"] = dict(chaos)
            if probability is not None:
                body["probability"] = probability
            if times is not None:
                body["times"] = times
        data = self.request("POST", "/_emulator/rules", body)
        self.added_rules.append(data["id"])
        return EmulatorRule(id=data["id"], data=data, owner=self)

    def rules(self) -> list[dict[str, Any]]:
        """Return the live rules, oldest first, with their ``remaining`` uses."""
        __tracebackhide__ = True  # the caller's line, then the error
        return self.request("GET", "/_emulator/rules")["rules"]

    def use_scenario(
        self, scenario: str | Mapping[str, Any], session_id: str | None = None
    ) -> EmulatorRule:
        """Make sessions (only ``session_id`` when given) replay ``scenario``.

        ``scenario`` is a scenario name or an inline scenario. The rule stays
        until it is removed, the ``with`` block using it ends, or the emulator
        is reset. Raises :class:`MedscribeAdminError` (400) for an unknown name
        or an invalid inline scenario.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        match = {} if session_id is None else {"sessionId": session_id}
        return self.add_rule(match=match, scenario=scenario)

    def sessions(self) -> list[dict[str, Any]]:
        """Return a summary of every session since the last reset, oldest first."""
        __tracebackhide__ = True  # the caller's line, then the error
        return self.request("GET", "/_emulator/sessions")["sessions"]

    def rejected(self) -> list[dict[str, Any]]:
        """Requests refused before their stream opened, oldest first: ``requestId``,
        ``time``, the ``sessionId``/``domainId``/``subscriptionId`` they gave, and
        the ``error`` and ``message`` they were answered with."""
        __tracebackhide__ = True  # the caller's line, then the error
        return self.request("GET", "/_emulator/sessions")["rejected"]

    def session(
        self,
        session_id: str,
        *,
        domain_id: str | None = None,
        subscription_id: str | None = None,
    ) -> dict[str, Any]:
        """Return the details of one session (status, headers, configuration, counts).

        The newest session with ``session_id``, or the one of ``domain_id`` and/or
        ``subscription_id`` when the same id was used in several. Raises
        :class:`MedscribeAdminError` (404) for an unknown session.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        return self.request("GET", _session_path(session_id, domain_id, subscription_id))

    def events(
        self,
        session_id: str,
        *,
        domain_id: str | None = None,
        subscription_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the journal of one session: its input and output events in order
        (``direction`` ``in``, ``out``, ``stream``, and ``unsent`` for transcript
        results a completed or failed session made but never sent: count the
        ``out`` ones for what the client got).

        The session is chosen as by :meth:`session`. Raises
        :class:`MedscribeAdminError` (404) for an unknown session.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        path = _session_path(session_id, domain_id, subscription_id, "/events")
        data = self.request("GET", path)
        return data["events"] if isinstance(data, dict) else data

    def artifact(
        self,
        session_id: str,
        name: str,
        *,
        domain_id: str | None = None,
        subscription_id: str | None = None,
    ) -> dict[str, Any]:
        """Return one post-stream artifact of a session, as written: ``name`` is
        ``transcriptResult``, ``noteResult`` or ``afterVisitSummaryResult``.

        The session is chosen as by :meth:`session`. Raises
        :class:`MedscribeAdminError`: 404 for an unknown session or name, 409
        while there is none to read (the session has not ended, the artifact is
        ``IN_PROGRESS`` or ``FAILED``, or it went to an ``--s3-endpoint-url``),
        saying which.
        """
        __tracebackhide__ = True  # the caller's line, then the error
        suffix = f"/artifacts/{urllib.parse.quote(name, safe='')}"
        return self.request("GET", _session_path(session_id, domain_id, subscription_id, suffix))

    # -- SDK -------------------------------------------------------------------

    async def config(self, **overrides: Any) -> AsyncConnectHealthConfig:
        """Return a resolved ``aws-sdk-connecthealth`` config for this emulator.

        It trusts ``ca_file`` and uses dummy static credentials; ``overrides``
        go to :func:`emulator.sdk.make_config`. Raises ImportError without
        ``aws-sdk-connecthealth``.
        """
        from .sdk import make_config

        return await make_config(endpoint_url=self.endpoint_url, ca_file=self.ca_file, **overrides)

    async def client(self, **overrides: Any) -> AsyncConnectHealthClient:
        """Return an ``aws-sdk-connecthealth`` client for this emulator; close it after use
        (``async with await emulator.client() as client``).

        ``overrides`` go to :func:`emulator.sdk.make_client`. Raises ImportError
        without ``aws-sdk-connecthealth``.
        """
        from .sdk import make_client

        return await make_client(endpoint_url=self.endpoint_url, ca_file=self.ca_file, **overrides)

    def boto3_client(self, **overrides: Any) -> Any:
        """Return a boto3 ``connecthealth`` client for this emulator's control plane
        (GetMedicalScribeListeningSession, the domains...), trusting its CA.

        ``overrides`` go to :func:`emulator.sdk.boto3_client` (``config=`` a
        botocore ``Config``, ``access_key_id=``...). Raises ImportError without boto3.
        """
        from .sdk import boto3_client

        return boto3_client(endpoint_url=self.endpoint_url, ca_file=self.ca_file, **overrides)
