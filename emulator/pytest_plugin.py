"""pytest plugin: a real medscribe emulator for an application's tests.

Registered through the ``pytest11`` entry point, so installing the package is
all a project does. A test asks for the ``medscribe_emulator`` fixture::

    async def test_transcript(medscribe_emulator):
        medscribe_emulator.use_scenario("primary-care-visit")
        async with await medscribe_emulator.client() as client:
            ...  # the application's own streaming code, with this client

    @pytest.mark.medscribe_scenario({"segments": [...]}, session_id=SESSION)
    async def test_scripted(medscribe_emulator): ...

One emulator serves the whole test session (real hypercorn on free ports of
127.0.0.1, TLS with a CA in a temporary directory); every test starts with no
API-added rules and no sessions. With ``--medscribe-url`` (or ``MEDSCRIBE_URL``,
or the ``medscribe_url`` ini option) the fixtures use an emulator already
running there instead, and reset it before each test too; if that emulator
has an admin token, ``--medscribe-admin-token`` (or ``MEDSCRIBE_ADMIN_TOKEN``,
the variable the emulator reads) gives it to the handle. The ini file's
``medscribe_fixtures`` and ``medscribe_seed`` are then not used: the report
header says so, and a scenario that emulator refuses as unknown names the
scenarios of the ini's fixtures directory it lacks.

Fixtures: ``medscribe_emulator`` (per test, reset, the marker applied),
``medscribe_emulator_server`` (the same handle for the whole session, never
reset) and ``medscribe_settings`` (the :class:`~emulator.server.Settings` of the
emulator started here; override it in a ``conftest.py`` to change any of them).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .logs import QUIET_WHEN_DEBUGGING

if TYPE_CHECKING:
    from .server import Settings
    from .testing import MedscribeEmulator

# The server stack (hypercorn, starlette, cryptography) is imported by the
# fixtures, not here: this module is loaded into every pytest run of a project
# that depends on the package, most of which never start an emulator.

__all__ = [
    "MARKER",
    "URL_VARIABLE",
    "emulator_url",
    "medscribe_settings",
    "medscribe_emulator_server",
    "medscribe_emulator",
    "MedscribeWarning",
]

#: The marker that applies a scenario to one test.
MARKER = "medscribe_scenario"

#: The environment variable naming an already running emulator.
URL_VARIABLE = "MEDSCRIBE_URL"
#: The variable the emulator itself reads for its admin token: one setting for both.
TOKEN_VARIABLE = "MEDSCRIBE_ADMIN_TOKEN"

_MARKER_DOC = (
    f"{MARKER}(scenario, session_id=None): replay `scenario` (a scenario name or an "
    "inline scenario dict) in this test's sessions, or only in session `session_id`; "
    "uses the medscribe_emulator fixture"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("medscribe-emulator", "medscribe emulator")
    group.addoption(
        "--medscribe-url",
        dest="medscribe_url",
        metavar="URL",
        help=f"use the emulator already running at URL (http:// or https://) instead of "
        f"starting one [{URL_VARIABLE}]",
    )
    group.addoption(
        "--medscribe-seed",
        dest="medscribe_seed",
        type=int,
        metavar="N",
        help="seed of the started emulator's random choices (default 0)",
    )
    group.addoption(
        "--medscribe-fixtures",
        dest="medscribe_fixtures",
        metavar="DIR",
        help="fixtures directory (scenarios/, rules.yaml, resources.yaml) of the started "
        "emulator (default: the packaged fixtures)",
    )
    group.addoption(
        "--medscribe-admin-token",
        dest="medscribe_admin_token",
        metavar="TOKEN",
        help=f"bearer token of the --medscribe-url emulator's admin API, if it was started "
        f"with --admin-token [{TOKEN_VARIABLE}]",
    )
    parser.addini("medscribe_url", "URL of an already running medscribe emulator", default="")
    parser.addini("medscribe_seed", "seed of the started medscribe emulator", default="")
    parser.addini(
        "medscribe_fixtures",
        "fixtures directory of the started medscribe emulator, relative to the ini file",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_DOC)
    # Checked where the run starts, as --medscribe-seed is: one usage error, not a
    # traceback in every test (when it is used: not with the option, nor a URL).
    if config.getoption("medscribe_seed") is None and emulator_url(config) is None:
        ini_seed(config)
    # pytest-xdist's -n, seen where the run starts: one usage error, not one per test.
    workers = getattr(config.option, "numprocesses", None)
    url = emulator_url(config)
    if workers and url is not None:
        raise pytest.UsageError(_shared_with_workers(config))
    if url is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("medscribe_fixtures", "medscribe_seed")
            if config.getoption(name) is not None
        ]
        if given:
            # Given on the command line with a URL they could only be a mistake. The
            # ini file's are not: they may serve local runs while CI points the
            # suite at a compose service started with the same fixtures.
            raise pytest.UsageError(
                f"{' and '.join(given)} {'configure' if len(given) > 1 else 'configures'} the "
                "emulator the plugin starts; with "
                f"--medscribe-url ({url}) none is started: give that emulator --fixtures "
                "and --seed itself"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One line when the fixtures use a running emulator: which one, and the ini
    settings it leaves unused (allowed, unlike the options, so say it here)."""
    url, source = _url_and_source(config)
    if url is None:
        return []
    line = f"medscribe: using the emulator at {url} ({source}), none is started"
    unused = _ini_for_started(config)
    if unused:
        flags = " and ".join(f"--{name.removeprefix('medscribe_')}" for name in unused)
        line += (
            f"; ini {' and '.join(unused)} not used with a URL (start that emulator with {flags})"
        )
    return [line]


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """With a URL, one line naming each ``medscribe_settings`` override the
    collected tests would get: unused too, and only known once conftests are
    collected, after the header (quiet runs leave it out, as the header)."""
    if emulator_url(config) is None or config.get_verbosity() < 0:
        return []
    places = _settings_overrides(config, items)
    if not places:
        return []
    return [
        f"medscribe: the medscribe_settings fixture of {', '.join(places)} is not used: it "
        "configures an emulator the plugin starts, and with a URL none is"
    ]


def _ini_for_started(config: pytest.Config) -> list[str]:
    """The ini options that configure only the emulator the plugin starts and are
    set to something other than their default (a seed of 0 is the default's)."""
    unused = []
    for name in ("medscribe_fixtures", "medscribe_seed"):
        raw = str(config.getini(name)).strip()
        if raw and not (name == "medscribe_seed" and _is_zero(raw)):
            unused.append(name)
    return unused


def _is_zero(raw: str) -> bool:
    try:
        return int(raw) == 0
    except ValueError:
        return False


def _settings_overrides(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """Where the ``medscribe_settings`` fixtures that ``items`` would get are
    defined, when not in this module (relative to the rootdir when under it)."""
    # pytest's fixture manager is not part of its public API: a pytest without
    # it (under this name) gets no line.
    manager = config.pluginmanager.get_plugin("funcmanage")
    getfixturedefs = getattr(manager, "getfixturedefs", None)
    if getfixturedefs is None:
        return []
    places: dict[str, None] = {}
    for item in items:
        definitions = getfixturedefs("medscribe_settings", item) or ()
        func = getattr(definitions[-1], "func", None) if definitions else None
        code = getattr(func, "__code__", None)
        if code is None or getattr(func, "__module__", __name__) == __name__:
            continue
        path = Path(code.co_filename)
        if path.is_relative_to(config.rootpath):
            path = path.relative_to(config.rootpath)
        places[str(path)] = None
    return list(places)


def ini_seed(config: pytest.Config) -> int:
    """The ``medscribe_seed`` ini option (0 when unset); raises
    :class:`pytest.UsageError` when it is not an integer."""
    raw = str(config.getini("medscribe_seed")).strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        source = f" in {config.inipath}" if config.inipath is not None else ""
        raise pytest.UsageError(f"medscribe_seed{source} must be an integer, got {raw!r}") from None


def _shared_with_workers(config: pytest.Config) -> str:
    """Why a URL's emulator cannot serve xdist's workers, naming where the URL was
    given (an unset MEDSCRIBE_URL, not an option the user never passed)."""
    url, source = _url_and_source(config)
    return (
        f"{source} ({url}) with pytest-xdist (-n): every worker resets the one "
        "emulator before each of its tests, wiping the rules and sessions of the tests "
        f"the other workers are running. Run without -n, or without {source} "
        "(each worker then starts its own emulator)."
    )


def emulator_url(config: pytest.Config) -> str | None:
    """The URL of an already running emulator to use, or None to start one.

    ``--medscribe-url`` wins over ``MEDSCRIBE_URL``, which wins over the
    ``medscribe_url`` ini option.
    """
    return _url_and_source(config)[0]


def _url_and_source(config: pytest.Config) -> tuple[str | None, str]:
    """(:func:`emulator_url`, where it was given: the option, variable or ini name)."""
    for value, source in (
        (config.getoption("medscribe_url"), "--medscribe-url"),
        (os.environ.get(URL_VARIABLE), URL_VARIABLE),
        (config.getini("medscribe_url"), "ini medscribe_url"),
    ):
        if value:
            return str(value).strip() or None, source
    return None, ""


def admin_token(config: pytest.Config) -> str | None:
    """The admin token of the ``--medscribe-url`` emulator: ``--medscribe-admin-token``,
    else ``MEDSCRIBE_ADMIN_TOKEN``, else None."""
    value = config.getoption("medscribe_admin_token") or os.environ.get(TOKEN_VARIABLE) or ""
    return str(value).strip() or None


def _ini_path(config: pytest.Config, value: str) -> Path:
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    return base / value


@pytest.fixture(scope="session")
def medscribe_settings(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """Settings of the emulator started for this test session (not used with a URL).

    Free ports on 127.0.0.1 and a temporary state directory; ``--medscribe-seed``
    and ``--medscribe-fixtures`` (or their ini options) apply. Override this
    fixture to change anything else (its ``log_level`` is the ``medscribe``
    loggers' level in this process).
    """
    if emulator_url(pytestconfig) is None:
        _quiet_libraries()  # before the import below, whose self-tests log
    from .server import Settings

    seed = pytestconfig.getoption("medscribe_seed")
    if seed is None:
        seed = ini_seed(pytestconfig)
    fixtures: Path | None = None
    if pytestconfig.getoption("medscribe_fixtures"):
        fixtures = Path(pytestconfig.getoption("medscribe_fixtures")).resolve()
    elif str(pytestconfig.getini("medscribe_fixtures")).strip():
        fixtures = _ini_path(pytestconfig, str(pytestconfig.getini("medscribe_fixtures")).strip())
    try:
        yield Settings(
            host="127.0.0.1",
            port=0,
            h2c_port=0,
            state_dir=tmp_path_factory.mktemp("medscribe-state"),
            fixtures=fixtures,
            seed=seed,
        )
    finally:
        # A session that asked for the settings alone started no emulator, whose
        # stop would have put the libraries' levels back.
        _restore_levels()


@pytest.fixture(scope="session")
def medscribe_emulator_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MedscribeEmulator]:
    """The emulator of this test session, started once (or the one at --medscribe-url).

    Never reset by itself: use ``medscribe_emulator`` in tests. Stopped at the
    end of the session; setting up fails if it cannot start or be reached.
    """
    url = emulator_url(request.config)
    if url is None:
        _quiet_libraries()  # before the imports below, whose self-tests log
    from .errors import ConfigError
    from .testing import EmulatorThread, MedscribeAdminError, MedscribeEmulator

    if url is not None and os.environ.get("PYTEST_XDIST_WORKER"):
        # A worker of a run whose controller did not see -n (set in a plugin's hook).
        raise pytest.UsageError(_shared_with_workers(request.config))
    if url is not None:
        yield _or_fail(
            lambda: _connect(
                url,
                ca_dir=tmp_path_factory.mktemp("medscribe-ca"),
                admin_token=admin_token(request.config),
                unknown_scenario_hint=_unknown_scenario_hint(request.config, url),
            ),
            MedscribeAdminError,
            f"the medscribe emulator at {url} cannot be used",
        )
        return
    settings: Settings = request.getfixturevalue("medscribe_settings")
    # A failed test's report then shows its sessions' start and end lines, each
    # end saying why a session failed or paused (info, the default).
    _set_level("medscribe", settings.log_level.upper())
    server = EmulatorThread(settings)
    try:
        # Invalid fixtures: their problems, as `check` lists them.
        running = _or_fail(server.start, ConfigError, "the medscribe emulator cannot start")
        try:
            yield MedscribeEmulator.from_running(running, admin_token=settings.admin_token)
        finally:
            server.stop()
    finally:
        _restore_levels()


#: The loggers whose level the plugin set, with the levels they had, put back
#: when its emulator stops (or its settings are torn down).
_CHANGED_LEVELS: dict[str, int] = {}


def _restore_levels() -> None:
    for name, level in _CHANGED_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    _CHANGED_LEVELS.clear()


def _set_level(name: str, level: int | str) -> None:
    logger = logging.getLogger(name)
    _CHANGED_LEVELS.setdefault(name, logger.level)
    logger.setLevel(level)


def _quiet_libraries() -> None:
    """Keep the HTTP/2 and Faker libraries at info in a process that runs the
    emulator, as its command line does: under pytest's ``--log-level=DEBUG``
    their lines (their import-time self-tests', then about 200 a session) filled
    a failed test's report, and hpack's carry request headers. Called before
    the emulator's modules are imported."""
    for name in QUIET_WHEN_DEBUGGING:
        _set_level(name, logging.INFO)


def _unknown_scenario_hint(
    config: pytest.Config, url: str
) -> Callable[[MedscribeEmulator], str] | None:
    """What a scenario refused as unknown by the emulator at ``url`` adds, as a
    function of that emulator's handle, when the ini file names a fixtures
    directory (its scenarios were likely the ones meant), else None."""
    value = str(config.getini("medscribe_fixtures")).strip()
    if not value:
        return None
    source = _url_and_source(config)[1]
    fixtures = _ini_path(config, value)

    def hint(emulator: MedscribeEmulator) -> str:
        # Only when true: that emulator may well have been started with these fixtures.
        missing = _scenarios_lacking(emulator, fixtures)
        if not missing:
            return ""
        names = ", ".join(repr(name) for name in missing[:3]) + (", ..." if missing[3:] else "")
        return (
            f"; the emulator at {url} ({source}) lacks the ini's medscribe_fixtures "
            f"({fixtures}) scenario{'s' if len(missing) > 1 else ''} {names}: that option "
            "configures only an emulator the plugin starts, and with a URL none is. Start "
            "that emulator with --fixtures and those scenarios, or give use_scenario() an "
            "inline scenario"
        )

    return hint


def _scenarios_lacking(emulator: MedscribeEmulator, fixtures: Path) -> list[str]:
    """The names of the scenarios in ``fixtures`` that ``emulator`` does not list in
    its health answer, sorted; none when either cannot be read."""
    from .documents import scenario_files
    from .scenario import scenario_name
    from .testing import MedscribeAdminError

    try:
        names = {scenario_name(path.stem) for path in scenario_files(fixtures / "scenarios")}
        known = emulator.health().get("scenarios")
    except (OSError, MedscribeAdminError):
        return []
    if not isinstance(known, list):  # an emulator that does not list them
        return []
    return sorted(names - set(known))


def _connect(
    url: str,
    *,
    ca_dir: Path,
    admin_token: str | None,
    unknown_scenario_hint: Callable[[MedscribeEmulator], str] | None,
) -> MedscribeEmulator:
    """:meth:`MedscribeEmulator.connect`, with what ``unknown_scenario_hint`` gives
    for the handle added to the message of each rule the emulator refuses for an
    unknown scenario (by a test, a marker or a fixture: each goes through
    ``add_rule``); raises as ``connect``."""
    from .testing import EmulatorRule, MedscribeAdminError, MedscribeEmulator

    if unknown_scenario_hint is None:
        return MedscribeEmulator.connect(url, ca_dir=ca_dir, admin_token=admin_token)
    hint_for = unknown_scenario_hint

    # A class of this function's: at module level it would import emulator.testing
    # into every pytest run of a project, as the server stack is not (see above).
    class HintingEmulator(MedscribeEmulator):
        def add_rule(self, rule: Mapping[str, Any] | None = None, /, **fields: Any) -> EmulatorRule:
            __tracebackhide__ = True
            try:
                return super().add_rule(rule, **fields)
            except MedscribeAdminError as error:
                if error.status != 400 or "unknown scenario" not in error.message:
                    raise
                hint = hint_for(self)
                if not hint:
                    raise
                refused = error
            # Out of the except block: inside it, the message showed twice (chained).
            raise MedscribeAdminError(refused.status, refused.message + hint, url=refused.url)

    return HintingEmulator.connect(url, ca_dir=ca_dir, admin_token=admin_token)


def _or_fail[T](call: Callable[[], T], errors: type[Exception], what: str) -> T:
    """``call()``, or on one of ``errors`` the test's set-up failed in one line,
    ``what: the error``, for each test that needs the emulator: a traceback
    through the helper (or the server's thread), printed for each, buried it."""
    try:
        return call()
    except errors as error:
        problem = str(error)
    # Out of the except block: inside it, the message showed twice (chained).
    pytest.fail(f"{what}: {problem}", pytrace=False)


def _marker_scenario(marker: pytest.Mark) -> tuple[str | Mapping[str, Any], str | None]:
    """(scenario, session_id) of one marker; fails the test's set-up when malformed."""
    kwargs = dict(marker.kwargs)
    args = list(marker.args)
    if "scenario" in kwargs:
        args.insert(0, kwargs.pop("scenario"))
    session_id = kwargs.pop("session_id", None)
    if len(args) != 1 or kwargs or not isinstance(args[0], str | Mapping):
        pytest.fail(
            f"@pytest.mark.{MARKER} takes one scenario (a name or a dict) and an optional "
            f"session_id=, got args={marker.args!r} kwargs={marker.kwargs!r}",
            pytrace=False,
        )
    return args[0], session_id


@pytest.fixture
def medscribe_emulator(
    medscribe_emulator_server: MedscribeEmulator, request: pytest.FixtureRequest
) -> Iterator[MedscribeEmulator]:
    """The session's emulator with no API-added rules and no sessions, and this test's
    ``@pytest.mark.medscribe_scenario`` applied.

    Yields a :class:`~emulator.testing.MedscribeEmulator`. After the test, the
    rules it (or its marker) added through the handle are removed, so that an
    emulator at ``--medscribe-url`` is not left replaying the last test's scenario.
    """
    from .testing import MedscribeAdminError

    emulator = medscribe_emulator_server
    previous = _last_test.get(id(emulator))
    _last_test[id(emulator)] = request.node.nodeid
    opened = _opened_during.setdefault(id(emulator), {})
    live = _or_fail(
        emulator.reset, MedscribeAdminError, "the medscribe emulator could not be reset"
    )
    # Each open session is named with the test before the one that first saw it
    # (it opened then, if this process opened it), not whichever test ran last.
    for gone in set(opened) - set(live):
        del opened[gone]
    for session_id in live:
        opened.setdefault(session_id, previous or "")
    if live:
        owners = sorted({opened[session_id] for session_id in live} - {""})
        left_by = f", open since {' or '.join(owners)}" if owners else ""
        warnings.warn(
            f"the medscribe emulator kept {len(live)} session(s) whose stream is still open "
            f"({', '.join(live[:5])}{', ...' if len(live) > 5 else ''}{left_by}): a reset "
            "keeps live streams, so this test sees them; close each client's stream before "
            "its test ends (or, at --medscribe-url, another process is using the emulator: a reset "
            "forgets its sessions and rules too, so give each process its own emulator)",
            MedscribeWarning,
            stacklevel=1,
        )
    # The newest matching rule wins: add the farthest marker (module, class)
    # first so the one on the test itself takes precedence.
    try:
        for marker in reversed(list(request.node.iter_markers(MARKER))):
            scenario, marked_session = _marker_scenario(marker)
            _or_fail(
                lambda: emulator.use_scenario(scenario, marked_session),  # noqa: B023
                MedscribeAdminError,
                f"@pytest.mark.{MARKER}({scenario!r})",
            )
        yield emulator
    finally:
        # Even when a nearer marker failed after a farther one's rule was added.
        for rule_id in list(emulator.added_rules):
            try:
                emulator.request("DELETE", f"/_emulator/rules/{rule_id}")
            except MedscribeAdminError as error:
                if error.status != 404:
                    raise
        emulator.added_rules.clear()


#: The last test that used each emulator handle (by id), and, for each session a
#: reset kept for its open stream, the test during which it was first seen open:
#: a warning about open streams names it.
_last_test: dict[int, str] = {}
_opened_during: dict[int, dict[str, str]] = {}


class MedscribeWarning(UserWarning):
    """Something about the emulator a test should know, such as a session kept by its reset."""


@pytest.fixture(autouse=True)
def _medscribe_scenario_marker(request: pytest.FixtureRequest) -> None:
    """Give a test with the marker the emulator even if it does not ask for it."""
    if request.node.get_closest_marker(MARKER) is not None:
        request.getfixturevalue("medscribe_emulator")
