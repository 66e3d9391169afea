"""Start-up: settings, fixtures, TLS material, sockets and hypercorn.

The only layer besides :mod:`emulator.stream` that does I/O. Listening sockets
are bound here (so port 0 works and the real ports are known before serving)
and handed to hypercorn as ``fd://`` binds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from . import collector, hypercorn_h2, hypercorn_tcp
from .app import create_app
from .backend import Backend
from .checker import fixtures_directory_problem
from .errors import ConfigError
from .lifecycle import RESUME_WINDOW, SessionLimits
from .logs import UNSAFE_IN_TRACEBACK, escape_controls, get_logger
from .quotas import Quotas, QuotaSettings
from .resources import ResourceRegistry
from .scenario import ScenarioError, load_scenario_dir
from .sigv4 import Credentials, CredentialStore
from .store import DATABASE_NAME
from .tls import check_key_pair, ensure_certificates

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Settings", "RunningServer", "run", "serve", "packaged_fixtures", "build_backend"]

log = get_logger("medscribe")

#: Streams one client connection may run at once. The real SDK multiplexes all of
#: an application's sessions on one HTTP/2 connection, and CI jobs run hundreds.
MAX_CONCURRENT_STREAMS = 1000

#: Seconds in-flight requests get after SIGTERM/SIGINT before they are cut:
#: the emulator promises to be gone within 2 s.
GRACEFUL_TIMEOUT = 1.0

#: hypercorn's own keep-alive timeout, the least the emulator uses (--idle-timeout when longer).
KEEP_ALIVE_TIMEOUT = 5.0

#: Seconds shutdown spends finishing post-stream actions still waiting (each
#: takes milliseconds): an emulator in a test's temporary directory gets no next
#: start to finish them in.
POST_STREAM_SHUTDOWN_BUDGET = 0.5

#: Seconds a TLS connection may take to finish its handshake (milliseconds on a
#: local network; the margin is for a CI machine under load). hypercorn's 60 s
#: default held SIGTERM that long for a client that connected and sent nothing:
#: shutdown waits for every connection, and one still in its handshake is not
#: yet one it can drop. With 2 s, such a client is gone within 2 s of SIGTERM.
TLS_HANDSHAKE_TIMEOUT = 2.0


def packaged_fixtures() -> Path:
    """The fixtures directory shipped with the package (or the source tree's)."""
    source_tree = Path(__file__).resolve().parent.parent / "fixtures"
    if (source_tree / "scenarios").is_dir():
        return source_tree
    return Path(str(resources.files("emulator") / "fixtures"))


@dataclass(kw_only=True)
class Settings:
    """Everything the command line (or ``MEDSCRIBE_*`` variables) can set."""

    host: str = "127.0.0.1"
    port: int = 8443
    h2c_port: int = 8080
    state_dir: Path = Path(".medscribe")
    fixtures: Path | None = None
    scenario: str = "synthetic"
    seed: int = 0
    certfile: Path | None = None
    keyfile: Path | None = None
    tls_hostnames: list[str] = field(default_factory=list)
    log_level: str = "info"
    #: Session records kept (in memory and in the state database), oldest dropped first.
    retention: int = 1000
    #: Refuse streams and look-ups on domains/subscriptions that were never created.
    strict_resources: bool = False
    #: Seconds the post-stream actions stay IN_PROGRESS before they complete.
    post_stream_delay: float = 2.0
    #: Seconds after its creation a paused session may still be resumed (the
    #: service's 5 hours; a test of a client's "too late to resume" path sets it low).
    resume_window: float = RESUME_WINDOW
    #: Write post-stream artifacts to this S3-compatible endpoint instead of the state dir.
    s3_endpoint_url: str | None = None
    #: Verify SigV4 signatures of stream requests and of every event.
    verify_signatures: bool = False
    access_key_id: str | None = None
    secret_access_key: str | None = None
    #: The session token of --access-key-id when it is temporary credentials.
    session_token: str | None = None
    #: An AWS-style credentials file with more key pairs to accept.
    credentials_file: Path | None = None
    #: Seconds without input after which a stream ends with a validationException (0: never).
    idle_timeout: float = 15.0
    #: Bearer token the admin API requires (health and ca.pem stay open).
    admin_token: str | None = None
    #: The service's per-access-key quotas: concurrent sessions and request rates.
    quotas: bool = False
    quota_concurrent_sessions: int = 10
    quota_start_tps: float = 2.0
    quota_get_tps: float = 10.0
    #: Streams the whole server runs at once.
    max_streams: int = 5000
    #: Sessions whose post-stream artifacts may wait to be written at once; a new
    #: session beyond it is throttled.
    max_pending_artifacts: int = 10_000
    #: The options set by a ``MEDSCRIBE_*`` variable, each with its variable
    #: (``--scenario``: ``MEDSCRIBE_SCENARIO``): a message about one names it.
    from_environment: dict[str, str] = field(default_factory=dict, repr=False)


def warn_of_unused_quotas(settings: Settings) -> None:
    """Say which quota numbers go unused without ``--quotas``: a test that set one
    low to reach it in seconds, and forgot the switch, passed for the wrong reason."""
    if settings.quotas:
        return
    defaults = Settings()
    given = [
        flag
        for flag, name in (
            ("--quota-concurrent-sessions", "quota_concurrent_sessions"),
            ("--quota-start-tps", "quota_start_tps"),
            ("--quota-get-tps", "quota_get_tps"),
        )
        if getattr(settings, name) != getattr(defaults, name)
    ]
    if given:
        log.warning("%s: ignored without --quotas (no per-key quota applies)", ", ".join(given))


def credential_store(settings: Settings) -> CredentialStore | None:
    """The key pairs to verify against, or ``None`` when verification is off.

    Raises ConfigError when verification is on without any key pair, or the
    credentials file is invalid.
    """
    if not settings.verify_signatures:
        given = [
            flag
            for flag, value in (
                ("--access-key-id", settings.access_key_id),
                ("--secret-access-key", settings.secret_access_key),
                ("--session-token", settings.session_token),
                ("--credentials-file", settings.credentials_file),
            )
            if value
        ]
        if given:
            log.warning(
                "%s: ignored without --verify-signatures (any credentials are accepted)",
                ", ".join(given),
            )
        return None
    store = CredentialStore()
    if settings.session_token and not settings.access_key_id:
        raise ConfigError(
            "--session-token goes with the --access-key-id and --secret-access-key it "
            "belongs to (a credentials file's profiles take aws_session_token)"
        )
    if settings.access_key_id or settings.secret_access_key:
        if not (settings.access_key_id and settings.secret_access_key):
            raise ConfigError("--access-key-id and --secret-access-key go together")
        try:
            pair = Credentials(
                access_key_id=settings.access_key_id,
                secret_access_key=settings.secret_access_key,
                session_token=settings.session_token or None,
            )
        except ValueError as error:
            raise ConfigError(f"--access-key-id: {error}") from None
        store = CredentialStore([pair])
    if settings.credentials_file is not None:
        try:
            store = store.merged(CredentialStore.from_file(settings.credentials_file))
        except ValueError as error:
            raise ConfigError(f"{settings.credentials_file}: {error}") from None
    if not store:
        raise ConfigError(
            "--verify-signatures needs --access-key-id/--secret-access-key or --credentials-file"
        )
    return store


@dataclass(frozen=True, kw_only=True)
class RunningServer:
    """What a started emulator tells its caller."""

    endpoint_url: str
    h2c_url: str
    ca_file: Path | None
    port: int
    h2c_port: int
    app: object


def build_backend(settings: Settings) -> Backend:
    """Load fixtures, open the state dir and build the backend.

    The state database ``<state-dir>/medscribe.sqlite3`` holds the sessions and
    the resource registry (seeded from ``<fixtures>/resources.yaml``). Raises
    ConfigError on invalid fixtures or an unusable state dir. The caller owns
    the result: :meth:`Backend.close` it, and its ``resources``.
    """
    fixtures = settings.fixtures or packaged_fixtures()
    if not fixtures.is_dir():
        # Otherwise a typo would serve the generated visit alone, and show only
        # later as a rule or scenario name the emulator does not know.
        what = (
            "a file, not a fixtures directory"
            if fixtures.exists()
            else "no such fixtures directory"
        )
        raise ConfigError(f"{fixtures}: {what}")
    problem = fixtures_directory_problem(fixtures)
    if problem is not None:  # the wrong directory, as `check` says of it
        raise ConfigError(problem)
    try:
        scenarios = load_scenario_dir(fixtures)
    except ConfigError as error:
        raise _every_problem(fixtures, error) from None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    registry = ResourceRegistry(db_path=settings.state_dir / DATABASE_NAME)
    try:
        registry.load_seed(fixtures / "resources.yaml")
        return Backend(
            scenarios=scenarios,
            state_dir=settings.state_dir,
            default_scenario=settings.scenario,
            seed=settings.seed,
            rules_file=fixtures / "rules.yaml",
            retention=settings.retention,
            max_pending_artifacts=settings.max_pending_artifacts,
            post_stream_delay=settings.post_stream_delay,
            limits=SessionLimits(resume_window=settings.resume_window),
            s3_endpoint_url=settings.s3_endpoint_url,
            resources=registry,
            strict_resources=settings.strict_resources,
        )
    except ConfigError as error:
        registry.close()
        raise _every_problem(fixtures, error) from None
    except BaseException:
        registry.close()
        raise


def _every_problem(fixtures: Path, error: ConfigError) -> ConfigError:
    """The error to stop start-up with: every problem of every fixture file,
    as ``check`` lists them, not only the first file's (the loaders stop at the
    first file that fails). Only on this path is the directory read twice.
    """
    from .checker import check_fixtures

    try:
        report = check_fixtures(fixtures)
    except FileNotFoundError:
        return error
    if not report.problems:
        return error
    if isinstance(error, ScenarioError):  # one of the files' problems, now all of them
        return ScenarioError(report.problems)
    # Not a fixture file's (a --scenario the fixtures lack, the state directory...):
    # it stays, after the files' problems.
    return ConfigError(f"{ScenarioError(report.problems)}\n{error}")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(1024)
    return sock


def _url(scheme: str, host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


async def serve(
    settings: Settings,
    *,
    shutdown: asyncio.Event,
    ready: Callable[[RunningServer], None] | None = None,
) -> None:
    """Run the emulator until ``shutdown`` is set.

    ``ready`` is called once the sockets listen. Raises ConfigError for invalid
    fixtures and OSError when a port cannot be bound, before serving anything.
    """
    hypercorn_h2.install()
    warn_of_unused_quotas(settings)
    credentials = credential_store(settings)
    claim = claim_state_dir(settings.state_dir)
    try:
        backend = build_backend(settings)
        try:
            await _serve(settings, backend, credentials, shutdown=shutdown, ready=ready)
        finally:
            backend.close(finish_within=POST_STREAM_SHUTDOWN_BUDGET)
            backend.resources.close()
    finally:
        if claim is not None:
            claim.close()  # the lock goes with the descriptor


#: The lock file that marks a state directory as in use by a running emulator.
STATE_LOCK = ".server.lock"


def claim_state_dir(state_dir: Path) -> IO[str] | None:
    """Lock ``state_dir`` for this emulator until the returned file is closed.

    Two emulators on one state directory both started, numbered their sessions
    from 1, could not see each other's and overwrote each other's rows and
    journals. The second now refuses to start (ConfigError) naming the first's
    process id. The lock is ``flock``'s: a crashed emulator leaves none behind.
    None where ``fcntl`` is missing (Windows).
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(state_dir / STATE_LOCK, "a+", encoding="ascii")
    except OSError as error:
        reason = error.strerror or str(error)
        if state_dir.exists() and not state_dir.is_dir():
            reason = "it is a file, not a directory"
        raise ConfigError(f"cannot use --state-dir {state_dir}: {reason}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _holder(handle.read())
        handle.close()
        raise ConfigError(
            f"--state-dir {state_dir} is in use by another emulator{holder}: two on one "
            "state directory would overwrite each other's sessions; give each its own "
            "--state-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    # The host too: an emulator in another container (a shared volume) has a
    # process id of its own namespace, meaningless or another process's here.
    handle.write(f"{os.getpid()} {socket.gethostname()}\n")
    handle.flush()
    return handle


#: Hosts that mean every address: no name a certificate could hold.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


def _holder(text: str) -> str:
    """`` (process N)``, `` (process N on host H)`` for another host (container),
    or nothing, from a state lock's ``pid host`` line (older ones: ``pid``)."""
    pid, _, host = text.strip().partition(" ")
    if not pid.isdigit():
        return ""
    if host and host != socket.gethostname():
        return f" (process {pid} on host {host}, another container or machine)"
    return f" (process {pid})"


async def _serve(
    settings: Settings,
    backend: Backend,
    credentials: CredentialStore | None,
    *,
    shutdown: asyncio.Event,
    ready: Callable[[RunningServer], None] | None,
) -> None:
    ca_file: Path | None = None
    if settings.certfile and settings.keyfile:
        certfile, keyfile = settings.certfile, settings.keyfile
        check_key_pair(certfile, keyfile)
    else:
        # The address it listens on, when one: the endpoint it prints names it.
        listening = [] if settings.host in _WILDCARD_HOSTS else [settings.host]
        files = ensure_certificates(
            settings.state_dir, hostnames=[*settings.tls_hostnames, *listening]
        )
        certfile, keyfile, ca_file = files.cert, files.key, files.ca_cert

    tls_sock = _listen(settings.host, settings.port)
    h2c_sock = _listen(settings.host, settings.h2c_port)
    port, h2c_port = tls_sock.getsockname()[1], h2c_sock.getsockname()[1]
    running = RunningServer(
        endpoint_url=_url("https", settings.host, port),
        h2c_url=_url("http", settings.host, h2c_port),
        ca_file=ca_file,
        port=port,
        h2c_port=h2c_port,
        app=None,
    )
    app = create_app(
        backend,
        ca_file=ca_file,
        endpoints={"https": running.endpoint_url, "h2c": running.h2c_url},
        credentials=credentials,
        idle_timeout=settings.idle_timeout,
        admin_token=settings.admin_token,
        quotas=Quotas(
            QuotaSettings(
                per_key=settings.quotas,
                concurrent_sessions=settings.quota_concurrent_sessions,
                start_tps=settings.quota_start_tps,
                get_tps=settings.quota_get_tps,
                max_streams=settings.max_streams,
            )
        ),
    )
    running = RunningServer(**{**running.__dict__, "app": app})

    config = Config()
    config.certfile = str(certfile)
    config.keyfile = str(keyfile)
    config.alpn_protocols = ["h2", "http/1.1"]
    # hypercorn takes ownership of the descriptors: detach so ours don't close them.
    config.bind = [f"fd://{tls_sock.detach()}"]
    config.insecure_bind = [f"fd://{h2c_sock.detach()}"]
    config.h2_max_concurrent_streams = MAX_CONCURRENT_STREAMS
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.ssl_handshake_timeout = TLS_HANDSHAKE_TIMEOUT
    # hypercorn counts every HTTP/2 stream as a keep-alive request and sends
    # GOAWAY after 1000: the SDK multiplexes all of an application's sessions on
    # one connection, so a CI job would see its connection retired mid-run.
    config.keep_alive_max_requests = 2**31
    # A stream whose response is done keeps its connection from idling while its
    # client sends, and until it has been quiet this long (DuplexH2Protocol.drain_quiet).
    config.drain_quiet = settings.idle_timeout  # type: ignore[attr-defined]
    # A connection waiting for a request is closed after this (hypercorn: 5 s).
    # The CRT client, given http://, sends its stream request only once the
    # application closes the input: a session streamed for longer than 5 s found
    # its connection closed and never got the 400 that names the https:// endpoint.
    config.keep_alive_timeout = max(settings.idle_timeout, KEEP_ALIVE_TIMEOUT)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")

    stop_answering = hypercorn_tcp.answer_cleartext_requests(
        asyncio.get_running_loop(),
        port,
        hypercorn_tcp.cleartext_answer(running.endpoint_url, running.h2c_url),
    )
    backend.start()
    if ready is not None:
        ready(running)
    try:
        await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait, mode="asgi")
    finally:
        stop_answering()


class LogFormatter(logging.Formatter):
    """The server log's lines: times in UTC to the millisecond, marked ``Z`` (as
    the journal, Get and the admin API give them; local time without a zone
    did not match them), and controls escaped (``\\x1b``) in every library's
    messages and tracebacks, as the emulator's own loggers escape them (see
    :mod:`emulator.logs`): what a client sent, quoted in a message."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: object) -> str:  # noqa: N802
        traceback = super().formatException(ei)  # type: ignore[arg-type]
        return escape_controls(traceback, UNSAFE_IN_TRACEBACK)


#: Loggers kept at INFO under ``--log-level debug`` (see :func:`run`).
QUIET_WHEN_DEBUGGING = ("hpack", "h2", "faker")


def run(settings: Settings) -> int:
    """Run in the foreground until SIGTERM/SIGINT; return the process exit code."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    if settings.log_level.lower() == "debug":
        # Debug is the emulator's: hpack's decoded headers carry the admin token
        # (and SigV4 authorization), and Faker's locale look-ups were most of
        # a session's lines.
        for name in QUIET_WHEN_DEBUGGING:
            logging.getLogger(name).setLevel(logging.INFO)

    maintenance: list[asyncio.Task[None]] = []  # asyncio.run cancels it at the end

    def announce(running: RunningServer) -> None:
        # A process that is the server, once ready: not done by serve() itself,
        # so a test process that embeds the emulator keeps its own collector.
        collector.settle()
        # The backend's count of open streams; an app without one is never
        # idle, and gets its full collections every few minutes only.
        streams = getattr(running.app, "backend", None)
        task = asyncio.get_running_loop().create_task(
            collector.collect_when_idle(lambda: streams is not None and streams.active == 0)
        )
        task.add_done_callback(_report_collector_failure)
        maintenance.append(task)
        print("medscribe-emulator ready", flush=True)
        print(f"  endpoint (TLS, h2 + http/1.1): {running.endpoint_url}", flush=True)
        print(f"  endpoint (cleartext, h2c + http/1.1): {running.h2c_url}", flush=True)
        if running.ca_file is not None:
            print(f"  CA certificate: {running.ca_file}", flush=True)

    async def main() -> None:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            if not shutdown.is_set():
                log.info("%s received: stopping (streams under way get up to 1 s)", sig.name)
            shutdown.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        await serve(settings, shutdown=shutdown, ready=announce)
        log.info("stopped")

    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()  # what is frozen is out of the collection at exit too
    return 0


def _report_collector_failure(task: asyncio.Task[None]) -> None:
    """Log why the full collections stopped, if not for the server's end: frozen
    cycles would then wait for the process's exit."""
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "full garbage collections stopped: %r", task.exception(), exc_info=task.exception()
        )
