"""Start-up: settings, fixtures, TLS material, sockets and hypercorn.

The only layer besides :mod:`emulator.stream` that does I/O. Listening sockets
are bound here (so port 0 works and the real ports are known before serving)
and handed to hypercorn as ``fd://`` binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from . import collector, hypercorn_h2, hypercorn_tcp
from .app import create_app
from .backend import Backend
from .checker import fixture_file_hint, fixtures_directory_problem, unread_fixture_files
from .documents import load_scenario_dir
from .errors import ConfigError
from .ids import id_rng
from .lifecycle import RESUME_WINDOW, SessionLimits
from .logs import QUIET_WHEN_DEBUGGING, UNSAFE_IN_TRACEBACK, Throttle, escape_controls, get_logger
from .quotas import Quotas, QuotaSettings
from .resources import ResourceRegistry
from .scenario import ScenarioError
from .sigv4 import Credentials, CredentialStore
from .store import DATABASE_NAME
from .tls import check_key_pair, ensure_certificates

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

try:
    import pwd
    import resource
except ImportError:  # pragma: no cover - Windows
    pwd = None  # type: ignore[assignment]
    resource = None  # type: ignore[assignment]

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

#: The mode of a state directory the emulator creates, whatever the umask (CI
#: containers often run with 000): it holds the CA key, the journals (the audio as
#: sent) and the session database, and whoever can write in it can replace them.
STATE_DIR_MODE = 0o700

#: The open-file limit (RLIMIT_NOFILE) under which the server process warns at
#: start-up: Linux's usual soft default. Each client connection holds a
#: descriptor, the emulator about :data:`OWN_DESCRIPTORS` more; past the limit new
#: connections wait in the backlog. A CI job whose fresh SDK clients start hundreds
#: of sessions together opens a connection for each.
LOW_FD_LIMIT = 1024

#: Descriptors the emulator holds besides its clients' connections: about 15 at
#: idle (listeners, the event loop, SQLite), more while journals and artifacts
#: are written. Only for the warning's "about N connections".
OWN_DESCRIPTORS = 16

#: Seconds between two warnings of accept() failing for want of descriptors.
#: asyncio reports every attempt, up to the backlog (hypercorn's 100) each time a
#: listening socket is ready, with a traceback each: thousands of lines a second.
ACCEPT_WARNING_INTERVAL = 5.0


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
    #: With verify_signatures: the one region a signature's scope may name (None: any).
    region: str | None = None
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
    #: Warnings for the ``MEDSCRIBE_*`` variables set that nothing reads, logged
    #: at start-up (see emulator.cli).
    unknown_variables: list[str] = field(default_factory=list, repr=False)


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
                ("--region", settings.region),
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
    store.region = settings.region
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
            f"a file, not a fixtures directory{fixture_file_hint(fixtures)}"
            if fixtures.exists()
            else "no such fixtures directory"
        )
        raise ConfigError(f"{fixtures}: {what}")
    problem = fixtures_directory_problem(fixtures)
    if problem is not None:  # the wrong directory, as `check` says of it
        raise ConfigError(problem)
    for notice in unread_fixture_files(fixtures):  # as `check` notes them
        log.warning("%s", notice)
    try:
        scenarios = load_scenario_dir(fixtures)
    except ConfigError as error:
        raise _every_problem(fixtures, error) from None
    settings.state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    registry = ResourceRegistry(db_path=settings.state_dir / DATABASE_NAME, rng=id_rng())
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


class _RunningOn(logging.Filter):
    """Drops hypercorn's "Running on <url> (CTRL + C to quit)", logged at INFO
    for each listener under the name ``hypercorn.error``: the ready banner names
    the endpoints already, a log alert matching "error" tripped on every start,
    and in a container there is no Ctrl-C to press."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and str(record.msg).startswith("Running on "))


_RUNNING_ON = _RunningOn()


def _listen(host: str, port: int, option: str) -> socket.socket:
    """A socket listening on ``host``:``port``; OSError naming the address, the
    port's ``option`` (``--port``, the TLS port, or ``--h2c-port``) and why."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if isinstance(error, socket.gaierror):  # the name does not resolve: the port is fine
            raise OSError(f"cannot listen on --host {host}: {error.strerror}") from None
        which = "the TLS port" if option == "--port" else "the cleartext port"
        raise OSError(
            f"cannot listen on {host}:{port}, {which} (--host {host}, {option} {port}): "
            f"{error.strerror}"
        ) from None
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
        warn_of_unsafe_state_dir(settings.state_dir)
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
    journals. The second now refuses to start. The lock is ``flock``'s: a
    crashed emulator leaves none behind. Returns None where ``fcntl`` is missing
    (Windows).

    A directory it creates is :data:`STATE_DIR_MODE` (its parents are left to the
    umask). Raises :class:`ConfigError` naming the first's process id when
    another emulator holds the lock, and naming the state dir, the file and why
    for every failure to create, open, lock or write (a full disk gave a bare
    errno and exit 1).
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    lock = state_dir / STATE_LOCK
    try:
        state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot use --state-dir {state_dir}: {_creation_problem(state_dir, error)}"
        ) from None
    try:
        handle = _open_lock(lock)
    except OSError as error:
        raise ConfigError(
            f"cannot use --state-dir {state_dir}: {_lock_problem(lock, error)}"
        ) from None
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
    except OSError as error:  # ENOLCK: a network file system without locks
        handle.close()
        raise ConfigError(
            f"cannot use --state-dir {state_dir}: locking {lock}: {error.strerror or error}"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        # The host too: an emulator in another container (a shared volume) has a
        # process id of its own namespace, meaningless or another process's here.
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
    except OSError as error:  # a full disk: the write fails at the flush
        with contextlib.suppress(OSError):  # closing flushes the same bytes again
            handle.close()
        raise ConfigError(
            f"cannot use --state-dir {state_dir}: writing {lock}: {error.strerror or error}"
        ) from None
    return handle


def _open_lock(lock: Path) -> IO[str]:
    """Open (create) the lock file for reading and writing, not through a symlink:
    planted there by whoever can write in the state directory, it had the
    emulator truncate and overwrite any file its user can write."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "r+", encoding="ascii")


def _creation_problem(state_dir: Path, error: OSError) -> str:
    """Why ``state_dir`` could not be created, in words where the errno alone
    misleads: "File exists" for a dangling symlink. Never raises: a name too long
    failed every look at the path too, and escaped the handler."""
    if error.errno == errno.ENAMETOOLONG:
        return (
            "its name is too long for the file system (most allow 255 bytes a name, 4,096 a path)"
        )
    failed = Path(error.filename) if error.filename else state_dir
    it = "it" if failed == state_dir else str(failed)
    try:
        if failed.is_symlink() and not failed.exists():
            return f"{it} is a symlink to {os.readlink(failed)}, which does not exist"
        if failed.exists() and not failed.is_dir():
            return f"{it} is a file, not a directory"
    except OSError:
        pass  # the error's own words, then
    return f"creating {failed}: {error.strerror or error}"


def _lock_problem(lock: Path, error: OSError) -> str:
    """Why the lock file could not be opened, naming a symlink found there."""
    try:
        target = os.readlink(lock)
    except OSError:
        said = f"opening {lock}: {error.strerror or error}"
        if error.errno in (errno.EACCES, errno.EPERM) and hasattr(os, "geteuid"):
            said += _whose(lock if lock.exists() else lock.parent)
        return said
    return (
        f"{lock} is a symlink (to {target}): the emulator does not follow one there, "
        "as it would overwrite whatever it points to; remove it"
    )


def warn_of_unsafe_state_dir(state_dir: Path) -> None:
    """Warn, once, when others than this process's user can write in ``state_dir``
    (its group or everyone, or its owner being another user; root does not count):
    the emulator trusts what it finds there. Whoever can write there can replace
    the CA that clients trust (and hold its key) and the journals, or plant
    symlinks the emulator writes through. A warning, not a refusal: a shared CI
    runner's scratch directory may be meant so. Nothing on Windows."""
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows
        return
    try:
        info = os.stat(state_dir)
    except OSError:
        return  # the start-up that follows says what is wrong
    mode = stat.S_IMODE(info.st_mode)
    me = os.geteuid()
    problems = []
    writers = [name for name, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit]
    if writers:
        problems.append(f"writable by {' and '.join(writers)} (mode {mode:04o})")
    foreign = info.st_uid not in (me, 0)
    if foreign:
        problems.append(f"owned by {_user(info.st_uid)}, not by {_user(me)} that runs the emulator")
    if not problems:
        return
    fix = (
        "use a --state-dir of your own"
        if foreign
        else f"chmod 700 {state_dir}, or use another --state-dir"
    )
    log.warning(
        "--state-dir %s is %s: another local user could replace its CA (and hold the "
        "key your clients trust) and its journals, or have the emulator write through "
        "symlinks planted there; %s",
        state_dir,
        " and ".join(problems),
        fix,
    )


def _whose(path: Path) -> str:
    """``: it is owned by U, mode M, and the emulator runs as V (...)``, for a
    permission refused on ``path`` (a container's bind mount, made by root, or
    another ``--user``); nothing when ``path`` cannot be read either."""
    try:
        info = os.stat(path)
    except OSError:
        return ""
    return (
        f": {path} is owned by {_user(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o}, "
        f"and the emulator runs as {_user(os.geteuid())} (make it that user's, or use a "
        "directory it can write: a named volume, in a container)"
    )


def _user(uid: int) -> str:
    """``name (uid N)``, or ``uid N`` for a user without a name."""
    try:
        name = pwd.getpwuid(uid).pw_name if pwd is not None else None
    except KeyError:
        name = None
    return f"{name} (uid {uid})" if name else f"uid {uid}"


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

    tls_sock = _listen(settings.host, settings.port, "--port")
    try:
        h2c_sock = _listen(settings.host, settings.h2c_port, "--h2c-port")
    except OSError:
        tls_sock.close()  # an embedding process goes on: not left bound
        raise
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
    if _RUNNING_ON not in config.errorlog.filters:
        config.errorlog.addFilter(_RUNNING_ON)

    stop_answering = hypercorn_tcp.answer_cleartext_requests(
        asyncio.get_running_loop(),
        port,
        hypercorn_tcp.cleartext_answer(running.endpoint_url, running.h2c_url),
    )

    async def stopping() -> None:
        await shutdown.wait()
        backend.stopping = True  # the streams ended from here on are the stop's

    loop = asyncio.get_running_loop()
    accept_errors = AcceptErrorReporter(loop.get_exception_handler())
    loop.set_exception_handler(accept_errors)
    backend.start()
    if ready is not None:
        ready(running)
    try:
        await hypercorn_serve(app, config, shutdown_trigger=stopping, mode="asgi")
    finally:
        stop_answering()
        accept_errors.close()
        if loop.get_exception_handler() is accept_errors:  # not if replaced since
            loop.set_exception_handler(accept_errors.previous)


#: What asyncio's selector loop tells its exception handler when accept() fails
#: for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM); it retries a second later.
ACCEPT_SHORTAGE = "socket.accept() out of system resource"

type ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class AcceptErrorReporter:
    """An event loop exception handler that turns asyncio's report of a failed
    accept (:data:`ACCEPT_SHORTAGE`, an ERROR with a traceback for every attempt:
    32,000 lines in 6 s when descriptors ran out) into one warning every
    :data:`ACCEPT_WARNING_INTERVAL` seconds that says what to do, with how many
    failures it left out. Anything else goes to ``previous``, the handler it
    replaces (the loop's default when None).

    On the serving loop only (:func:`_serve`): it changes nothing of a process
    that embeds the emulator, whose loop is the emulator's own.
    """

    def __init__(
        self,
        previous: ExceptionHandler | None,
        *,
        interval: float = ACCEPT_WARNING_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.previous = previous
        self.interval = interval
        self._throttle = Throttle(interval, flush=self._said_later, clock=clock)
        self._error: OSError | None = None  # the last failure, told by a later warning

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if context.get("message") != ACCEPT_SHORTAGE or not isinstance(error, OSError):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._error = error
        left_out = self._throttle.take(loop=loop)
        if left_out is not None:
            self._warn(error, left_out)

    def close(self) -> None:
        """Tell the failures not yet told (the server is stopping)."""
        self._throttle.close()

    def _said_later(self, left_out: int) -> None:
        assert self._error is not None
        self._warn(self._error, left_out)

    def _warn(self, error: OSError, left_out: int) -> None:
        more = (
            f" ({left_out} more failed accept(s) in the last {self.interval:g} s)"
            if left_out
            else ""
        )
        log.warning("%s%s", _shortage(error), more)


def _shortage(error: OSError) -> str:
    """What a failed accept means, and what to do."""
    if error.errno == errno.EMFILE:
        return (
            f"out of file descriptors (limit {_fd_limit()}): new connections wait "
            "until some close; raise ulimit -n"
        )
    if error.errno == errno.ENFILE:
        return (
            "the system is out of file descriptors (its file-max, for all processes): "
            "new connections wait until some close"
        )
    return (
        f"cannot accept connections: {error.strerror or error}: new connections wait "
        "until memory is freed"
    )


def _fd_limit() -> int | str:
    """The soft open-file limit, or "unknown"."""
    if resource is None:  # pragma: no cover - Windows
        return "unknown"
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: The most macOS lets a soft RLIMIT_NOFILE be when the hard one is unlimited
#: (OPEN_MAX; setrlimit(2): use min(OPEN_MAX, rlim_max)).
_OPEN_MAX = 10240


def raise_fd_limit() -> int | None:
    """Raise this process's soft open-file limit (RLIMIT_NOFILE) to its hard limit
    (logged at debug), and warn once when it is still under :data:`LOW_FD_LIMIT`.

    For the server process alone (:func:`run`): a process that embeds the emulator
    keeps its own limits. Shells and container runtimes often start it at 1024
    (or a CI's ``ulimit -n`` lower), while the hard limit allows far more: each
    connection takes one, and past the limit connections wait unannounced.
    Returns the soft limit in force, None where there is none (Windows).
    """
    if resource is None:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _OPEN_MAX if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as error:
            log.debug("cannot raise the open-file limit from %d to %d: %s", soft, wanted, error)
        else:
            log.debug("raised the open-file limit (RLIMIT_NOFILE) from %d to %d", soft, wanted)
            soft = wanted
    if soft != resource.RLIM_INFINITY and soft < LOW_FD_LIMIT:
        log.warning(
            "the open-file limit (ulimit -n) is %d%s: %s at once, past which new "
            "connections wait until some close; raise it (ulimit -n 65536, docker run "
            "--ulimit nofile=65536) before starting the emulator",
            soft,
            ", its hard limit too" if soft == wanted else f" (its hard limit {hard} refused)",
            f"about {connections} client connections"
            if (connections := soft - OWN_DESCRIPTORS) > 0
            else "hardly any client connection",
        )
    return soft


class LogFormatter(logging.Formatter):
    """The server log's lines: times in UTC to the millisecond, marked ``Z`` (as
    the journal, Get and the admin API give them; local time without a zone
    did not match them), and controls escaped (``\\x1b``) in every library's
    messages and tracebacks, as the emulator's own loggers escape them (see
    :mod:`emulator.logs`): what a client sent, quoted in a message."""

    # Annotated: mypy takes a bare function in a class body for a method, which
    # time.gmtime, a builtin, does not become.
    converter: Callable[[float | None], time.struct_time] = time.gmtime
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
    for warning in settings.unknown_variables:
        log.warning("%s", warning)
    raise_fd_limit()

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
