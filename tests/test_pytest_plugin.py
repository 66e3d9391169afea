"""The pytest plugin as a user's project runs it, and the test helpers it is built on."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.errors import ConfigError
from emulator.server import Settings
from emulator.testing import EmulatorThread, MedscribeAdminError, MedscribeEmulator

from .support import new_session_id, pcm_tone, run_session

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent

#: A session id no test streams with (rule match values must be ones a request could carry).
SESSION_S1 = "00000000-0000-4000-8000-0000000000a1"

#: The entry point the package declares (pyproject ``[project.entry-points.pytest11]``).
#: Its name is the module's: ``-p emulator.pytest_plugin`` then finds the plugin
#: already registered instead of registering the same module a second time.
ENTRY_POINT = "emulator.pytest_plugin = emulator.pytest_plugin"

#: The user's side: the minimal SDK streaming code an application would have.
USER_HELPERS = '''
import asyncio
import uuid

from aws_sdk_connecthealth import models as m

DOMAIN_ID = "dom-abcdefghij0123456789"
SUBSCRIPTION_ID = "sub-ABCDEFGHIJ0123456789x"


def new_id():
    return str(uuid.uuid4())


def configuration():
    return m.MedicalScribeInputStreamConfigurationEvent(
        value=m.MedicalScribeConfigurationEvent(
            post_stream_action_settings=m.MedicalScribePostStreamActionSettings(
                output_s3_uri="s3://bucket/output",
                clinical_note_generation_settings=m.ClinicalNoteGenerationSettings(
                    note_template_settings=m.NoteTemplateSettingsManagedTemplate(
                        value=m.ManagedTemplate(template_type="HISTORY_AND_PHYSICAL")
                    )
                ),
            )
        )
    )


async def stream(client, session_id, seconds=1.0):
    """Stream `seconds` of silence; return (final transcripts, error or None)."""
    audio = bytes(2 * int(16000 * seconds))
    finals, error = [], None

    async def send(input_stream):
        await input_stream.send(configuration())
        for i in range(0, len(audio), 3200):
            await input_stream.send(
                m.MedicalScribeInputStreamAudioEvent(
                    value=m.MedicalScribeAudioEvent(audio_chunk=audio[i : i + 3200])
                )
            )
        await input_stream.send(
            m.MedicalScribeInputStreamSessionControlEvent(
                value=m.MedicalScribeSessionControlEvent(type="END_OF_SESSION")
            )
        )
        await input_stream.close()

    sender = None
    try:
        session = await client.start_medical_scribe_listening_session(
            input=m.StartMedicalScribeListeningSessionInput(
                session_id=session_id,
                domain_id=DOMAIN_ID,
                subscription_id=SUBSCRIPTION_ID,
                language_code="en-US",
                media_sample_rate_hertz=16000,
                media_encoding="pcm",
            )
        )
        sender = asyncio.create_task(send(session.input_stream))
        _, output = await session.await_output()
        async for event in output:
            segment = event.value.transcript_segment
            if not segment.is_partial:
                finals.append(segment.content)
    except Exception as exc:
        error = exc
    if sender is not None:
        # After a refused stream the SDK's input side may never finish.
        done, _ = await asyncio.wait({sender}, timeout=5)
        if not done:
            sender.cancel()
    return finals, error
'''

USER_INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
medscribe_fixtures = emulator-fixtures
"""

#: A scenario of the user's own, in the fixtures directory the ini file names.
USER_SCENARIO = """
segments:
  - {channel: 0, begin: 0.1, end: 0.5, content: "Hello from the project's scenario."}
"""

#: In-process runs see the plugin module this process already imported, which
#: pytest warns it cannot assertion-rewrite: those warnings are not errors there.
INPROCESS_INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""

#: A user's test module exercising the fixture, the marker, reset and the SDK client.
USER_TESTS = """
import sys
import threading

import pytest
from aws_sdk_connecthealth import models as m

import emulator.pytest_plugin
from emulator.testing import MedscribeAdminError
from helpers import new_id, stream

SCRIPT = {"segments": [
    {"channel": 0, "begin": 0.1, "end": 0.6, "content": "Hello from the plugin.", "partials": 1},
]}
MARKED = "aaaaaaaa-0000-4000-8000-000000000001"


def test_plugin_is_registered_once_through_its_entry_point(pytestconfig):
    manager = pytestconfig.pluginmanager
    plugin = emulator.pytest_plugin
    names = [name for name, p in manager.list_name_plugin() if p is plugin]
    assert names == ["emulator.pytest_plugin"]
    assert [p for p, _ in manager.list_plugin_distinfo() if p is plugin] == [plugin]


def test_no_emulator_is_started_or_imported_before_a_test_asks_for_one():
    assert "medscribe-emulator" not in [t.name for t in threading.enumerate()]
    assert "emulator.server" not in sys.modules


def test_settings_use_free_local_ports_and_the_seed_option(medscribe_settings):
    assert (medscribe_settings.host, medscribe_settings.port) == ("127.0.0.1", 0)
    assert medscribe_settings.h2c_port == 0 and medscribe_settings.seed == 3


async def test_client_streams_a_scripted_session(medscribe_emulator):
    session_id = new_id()
    assert medscribe_emulator.endpoint_url.startswith("https://127.0.0.1:")
    assert medscribe_emulator.h2c_url.startswith("http://127.0.0.1:")
    with medscribe_emulator.use_scenario(SCRIPT, session_id=session_id) as rule:
        async with await medscribe_emulator.client() as client:
            finals, error = await stream(client, session_id)
    assert error is None
    assert finals == ["Hello from the plugin."]
    assert rule.id not in [r["id"] for r in medscribe_emulator.rules()]
    assert [s["sessionId"] for s in medscribe_emulator.sessions()] == [session_id]
    details = medscribe_emulator.session(session_id)
    assert details["status"] == "COMPLETED" and details["finalsSent"] == 1


@pytest.mark.medscribe_scenario(
    {"segments": [{"channel": 0, "begin": 0.1, "end": 0.5, "content": "Marked."}]},
    session_id=MARKED,
)
async def test_marker_applies_its_scenario(medscribe_emulator):
    async with await medscribe_emulator.client() as client:
        finals, error = await stream(client, MARKED)
        other, _ = await stream(client, new_id(), seconds=0.5)
    assert error is None and finals == ["Marked."]
    assert other != ["Marked."]


@pytest.mark.medscribe_scenario("greeting")
def test_marker_alone_brings_the_emulator_with_the_projects_scenarios(request):
    emulator = request.getfixturevalue("medscribe_emulator")
    assert [r["scenario"] for r in emulator.rules()] == ["greeting"]


def test_rule_added_by_a_test(medscribe_emulator):
    assert medscribe_emulator.sessions() == []
    medscribe_emulator.add_rule(
        match={"sessionId": "00000000-0000-4000-8000-000000000001"}, error="ThrottlingException"
    )
    assert len(medscribe_emulator.rules()) == 1


def test_is_gone_in_the_next_test(medscribe_emulator):
    assert medscribe_emulator.rules() == []


async def test_injected_throttling_is_raised_by_the_sdk(medscribe_emulator):
    session_id = new_id()
    medscribe_emulator.add_rule(
        match={"sessionId": session_id},
        error={"type": "ThrottlingException", "message": "slow down"},
    )
    async with await medscribe_emulator.client() as client:
        finals, error = await stream(client, session_id)
    assert isinstance(error, m.ThrottlingException) and error.message == "slow down"
    assert finals == []


def test_invalid_rule_raises_the_emulators_message(medscribe_emulator):
    with pytest.raises(MedscribeAdminError, match=r"^400 invalid rule: .*no-such-scenario"):
        medscribe_emulator.use_scenario("no-such-scenario")


@pytest.mark.medscribe_scenario()
def test_marker_without_a_scenario(medscribe_emulator):
    pass
"""

#: A user's test module run against an emulator that was already running.
REMOTE_TESTS = """
import os
import sys
import threading

from helpers import stream


async def test_uses_the_running_emulator(medscribe_emulator):
    assert "medscribe-emulator" not in [t.name for t in threading.enumerate()]
    assert "emulator.server" not in sys.modules
    assert medscribe_emulator.endpoint_url == os.environ["EXPECTED_ENDPOINT"]
    assert medscribe_emulator.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    session_id = os.environ["EXPECTED_SESSION"]
    async with await medscribe_emulator.client() as client:
        finals, error = await stream(client, session_id, seconds=0.5)
    assert error is None
    assert [s["sessionId"] for s in medscribe_emulator.sessions()] == [session_id]
    # Left for the fixture to remove: the shared emulator must not keep it.
    medscribe_emulator.add_rule(
        match={"sessionId": "00000000-0000-4000-8000-0000000000fe"}, error="ThrottlingException"
    )
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedscribeEmulator]:
    """A second emulator, started with EmulatorThread, playing an already running one."""
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path_factory.mktemp("remote")
    )
    with EmulatorThread(settings) as server:
        yield MedscribeEmulator.from_running(server)


@pytest.fixture
def remote(running: MedscribeEmulator) -> MedscribeEmulator:
    running.reset()
    return running


def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tests: str) -> None:
    """Lay out a user's project and make the package importable in its pytest runs."""
    pytester.makeini(USER_INI)
    pytester.makepyfile(helpers=USER_HELPERS, test_user=tests)
    scenarios = pytester.mkdir("emulator-fixtures") / "scenarios"
    scenarios.mkdir()
    (scenarios / "greeting.yaml").write_text(USER_SCENARIO)
    path = [str(REPO), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in path if p))
    monkeypatch.delenv("MEDSCRIBE_URL", raising=False)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)


def install_entry_point(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declare the plugin's pytest11 entry point in a distribution on PYTHONPATH."""
    site = pytester.mkdir("site")
    dist = site / "medscribe_emulator_entry-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: medscribe-emulator-entry\nVersion: 0.0.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{ENTRY_POINT}\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ["PYTHONPATH"]]))


def test_user_project_gets_fixture_marker_reset_and_sdk_client(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded by entry point and by -p at once, the plugin serves a user's test module."""
    user_project(pytester, monkeypatch, USER_TESTS)
    install_entry_point(pytester, monkeypatch)
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", "--medscribe-seed=3", "-v", timeout=110
    )
    result.assert_outcomes(passed=10, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_marker_without_a_scenario*",
            "*@pytest.mark.medscribe_scenario takes one scenario*",
        ]
    )


def test_medscribe_url_points_the_fixture_at_a_running_emulator(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote: MedscribeEmulator
) -> None:
    """--medscribe-url wins over MEDSCRIBE_URL, and no emulator is started."""
    user_project(pytester, monkeypatch, REMOTE_TESTS)
    session_id = new_session_id()
    remote.add_rule(
        match={"sessionId": "00000000-0000-4000-8000-0000000000ff"}, error="ThrottlingException"
    )
    monkeypatch.setenv("MEDSCRIBE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("EXPECTED_ENDPOINT", remote.endpoint_url)
    monkeypatch.setenv("EXPECTED_SESSION", session_id)
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", f"--medscribe-url={remote.endpoint_url}", timeout=110
    )
    result.assert_outcomes(passed=1)
    # The fixture reset the running emulator first, and removed the test's rule after.
    assert remote.rules() == []
    assert remote.session(session_id)["status"] == "COMPLETED"


def test_medscribe_url_under_xdist_is_refused_naming_the_clash(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote: MedscribeEmulator
) -> None:
    """Workers sharing one emulator would reset it under each other's tests."""
    user_project(pytester, monkeypatch, REMOTE_TESTS)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")  # what xdist sets in each worker
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", f"--medscribe-url={remote.endpoint_url}", timeout=110
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--medscribe-url*with pytest-xdist (-n)*"])


def test_medscribe_url_with_xdists_n_is_one_usage_error_at_the_start(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote: MedscribeEmulator
) -> None:
    """Where the run starts, before any worker: -n is the option xdist adds (mimicked
    here by a conftest, xdist not being a dependency)."""
    user_project(pytester, monkeypatch, REMOTE_TESTS)
    pytester.makeconftest(
        "def pytest_addoption(parser):\n"
        "    parser.getgroup('xdist')._addoption(\n"  # as xdist adds it
        "        '-n', '--numprocesses', dest='numprocesses', type=int, default=None\n"
        "    )\n"
    )
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", "-n", "2", f"--medscribe-url={remote.endpoint_url}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--medscribe-url*with pytest-xdist (-n)*"])
    assert "Traceback" not in result.stderr.str()
    # Given by the variable (a CI job's), it is the variable that is named.
    monkeypatch.setenv("MEDSCRIBE_URL", remote.endpoint_url)
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*MEDSCRIBE_URL (*) with pytest-xdist (-n)*without MEDSCRIBE_URL*"]
    )
    assert "--medscribe-url" not in result.stderr.str()


def test_a_marker_naming_an_unknown_scenario_fails_in_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_project(
        pytester,
        monkeypatch,
        "import pytest\n\n"
        "@pytest.mark.medscribe_scenario('no-such-scenario')\n"
        "def test_marked(medscribe_emulator):\n    pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.medscribe_scenario('no-such-scenario'): 400 invalid rule*"]
    )
    assert "testing.py" not in result.stdout.str()  # no traceback through the handle
    assert "During handling" not in result.stdout.str()  # nor the message twice, chained


def test_an_emulator_at_a_url_it_cannot_reach_fails_each_test_in_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test printed the admin helper's source, 80 lines, before the one that said
    what was wrong (1,675 lines for 21 tests)."""
    user_project(
        pytester,
        monkeypatch,
        "def test_a(medscribe_emulator):\n    pass\n\ndef test_b(medscribe_emulator):\n    pass\n",
    )
    pytester.makeini(USER_INI.replace("medscribe_fixtures = emulator-fixtures\n", ""))
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", "--medscribe-url=http://127.0.0.1:1", timeout=110
    )
    result.assert_outcomes(errors=2)
    problem = (
        "*the medscribe emulator at http://127.0.0.1:1 cannot be used: cannot reach the "
        "medscribe emulator at http://127.0.0.1:1/_emulator/*"
    )
    result.stdout.fnmatch_lines([problem, problem])
    output = result.stdout.str()
    assert "testing.py" not in output and "def request(" not in output
    assert len(output.splitlines()) < 60, output


def test_an_ini_seed_that_is_no_integer_is_one_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was a traceback in every test's set-up."""
    user_project(pytester, monkeypatch, "def test_a(medscribe_emulator):\n    pass\n")
    pytester.makeini(USER_INI + 'medscribe_seed = "abc"\n')
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*medscribe_seed in *tox.ini must be an integer, got '\"abc\"'*"])
    assert "Traceback" not in result.stderr.str()
    # Unused, it stops nothing: the option wins over it.
    given = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", "--medscribe-seed=3", timeout=110
    )
    given.assert_outcomes(passed=1)


def test_invalid_fixtures_fail_each_test_that_needs_the_emulator_in_their_own_words(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rules file naming an unknown scenario: each test asking for the emulator
    errors with the problem as `check` words it, with no traceback through the
    server's thread; a test that does not need the emulator still runs."""
    user_project(
        pytester,
        monkeypatch,
        "def test_a(medscribe_emulator):\n    pass\n\n"
        "def test_b(medscribe_emulator):\n    pass\n\n"
        "def test_c():\n    pass\n",
    )
    fixtures = pytester.mkdir("broken")
    (fixtures / "rules.yaml").write_text("- {scenario: nosuch}\n")
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", f"--medscribe-fixtures={fixtures}", timeout=110
    )
    result.assert_outcomes(passed=1, errors=2)
    problem = "*the medscribe emulator cannot start: *rules.yaml:1: [[]0[]].scenario: unknown*"
    result.stdout.fnmatch_lines([problem, problem])
    output = result.stdout.str()
    assert "Traceback" not in output and "server.py" not in output and "testing.py" not in output
    assert "During handling" not in output


def test_a_session_kept_open_by_a_reset_is_warned_about(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream still open when the next test starts survives its reset: said, by id."""
    user_project(
        pytester,
        monkeypatch,
        "def test_leaving_a_stream_open(medscribe_emulator):\n    pass\n\n"
        "def test_after_an_open_stream(medscribe_emulator):\n    pass\n\n"
        "def test_two_after(medscribe_emulator):\n    pass\n",
    )
    # The stream is open from the second reset on: opened by the first test.
    pytester.makeconftest(
        "from emulator.testing import MedscribeEmulator\n"
        "resets = []\n"
        "def reset(self):\n"
        "    resets.append(1)\n"
        "    return ['11111111-2222-4333-8444-555555555555'] if len(resets) > 1 else []\n"
        "MedscribeEmulator.reset = reset\n"
    )
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    result.assert_outcomes(passed=1, errors=2)  # the project turns warnings into errors
    result.stdout.fnmatch_lines(
        ["*MedscribeWarning: the medscribe emulator kept 1 session(s) whose stream is still*"]
    )
    # Both name the test it has been open since, the third not the second.
    since = "*(11111111-2222-4333-8444-555555555555, open since test_user.py::test_leaving_a_st*"
    result.stdout.fnmatch_lines([since, since])
    assert "open since test_user.py::test_after" not in result.stdout.str()


def test_medscribe_url_variable_is_read_when_no_option_is_given(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emulator.pytest_plugin import emulator_url

    pytester.makeini(INPROCESS_INI)
    monkeypatch.setenv("MEDSCRIBE_URL", "http://emulator:8080")
    config = pytester.parseconfigure("-p", "emulator.pytest_plugin")
    assert emulator_url(config) == "http://emulator:8080"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedscribeEmulator]:
    """An emulator whose admin API needs a token (``--admin-token``); the handle has it."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path_factory.mktemp("guarded"),
        admin_token="plugin-token",
    )
    with EmulatorThread(settings) as server:
        yield MedscribeEmulator.from_running(server, admin_token="plugin-token")


def test_a_running_emulators_admin_token_comes_from_the_option_or_its_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, guarded: MedscribeEmulator
) -> None:
    """With --medscribe-url at an emulator that has --admin-token, the fixture's admin
    calls carry the token from MEDSCRIBE_ADMIN_TOKEN (the emulator's own variable) or
    --medscribe-admin-token; without one, set-up fails saying how to give it."""
    guarded.reset()
    user_project(pytester, monkeypatch, REMOTE_TESTS)
    monkeypatch.setenv("EXPECTED_ENDPOINT", guarded.endpoint_url)
    url = f"--medscribe-url={guarded.endpoint_url}"
    for given in ("variable", "option"):
        session_id = new_session_id()
        monkeypatch.setenv("EXPECTED_SESSION", session_id)
        args = ["-p", "emulator.pytest_plugin", url]
        if given == "variable":
            monkeypatch.setenv("MEDSCRIBE_ADMIN_TOKEN", "plugin-token")
        else:
            monkeypatch.setenv("MEDSCRIBE_ADMIN_TOKEN", "a-stale-token")  # the option wins
            args.append("--medscribe-admin-token=plugin-token")
        result = pytester.runpytest_subprocess(*args, timeout=110)
        result.assert_outcomes(passed=1)
        assert guarded.session(session_id)["status"] == "COMPLETED"
        guarded.reset()
    monkeypatch.delenv("MEDSCRIBE_ADMIN_TOKEN")
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", url, timeout=110)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*401*--medscribe-admin-token / MEDSCRIBE_ADMIN_TOKEN*"])


def test_a_started_emulators_admin_token_comes_from_its_settings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project that overrides medscribe_settings with an admin token still gets a
    fixture that can reset and read the emulator it started."""
    user_project(pytester, monkeypatch, "")
    pytester.makeconftest(
        """
import pytest

@pytest.fixture(scope="session")
def medscribe_settings(medscribe_settings):
    medscribe_settings.admin_token = "settings-token"
    return medscribe_settings
"""
    )
    pytester.makepyfile(
        test_token="""
import json
import urllib.error
import urllib.request

import pytest


def test_admin_calls_carry_the_token(medscribe_emulator):
    medscribe_emulator.add_rule(
        match={"sessionId": "00000000-0000-4000-8000-000000000002"}, error="ThrottlingException"
    )
    assert len(medscribe_emulator.rules()) == 1
    with pytest.raises(urllib.error.HTTPError) as refused:  # the API is guarded
        urllib.request.urlopen(medscribe_emulator.h2c_url + "/_emulator/rules")
    assert refused.value.code == 401
    refused.value.close()  # its socket: left to the collector, a ResourceWarning
"""
    )
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    result.assert_outcomes(passed=1)


def test_help_lists_the_plugin_options(pytester: pytest.Pytester) -> None:
    pytester.makeini(INPROCESS_INI)
    result = pytester.runpytest_inprocess("-p", "emulator.pytest_plugin", "--help")
    result.stdout.fnmatch_lines(
        ["*--medscribe-url=URL*", "*--medscribe-seed=N*", "*--medscribe-admin-token=TOKEN*"]
    )
    # The fixtures directory is described as `check --help` and the README do.
    assert (
        "--medscribe-fixtures=DIR fixtures directory (scenarios/, rules.yaml, resources.yaml)"
        in " ".join(result.stdout.str().split())
    )


# -- emulator.testing on its own ------------------------------------------------


def test_emulator_thread_stops_its_thread(tmp_path: Path) -> None:
    thread = EmulatorThread(Settings(host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path))
    with thread as running:
        assert MedscribeEmulator.from_running(running).health()["status"] == "ready"
        assert thread.alive
    assert not thread.alive


def test_emulator_thread_raises_the_start_up_error(tmp_path: Path) -> None:
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, scenario="no-such-scenario"
    )
    with pytest.raises(ConfigError, match="no-such-scenario"):
        EmulatorThread(settings).start()


def test_a_fixtures_directory_that_does_not_exist_is_a_start_up_error(tmp_path: Path) -> None:
    """What --medscribe-fixtures with a typo gets: an error naming the path, not an
    emulator without the project's scenarios."""
    missing = tmp_path / "emulator-fixtrues"
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path / "state", fixtures=missing
    )
    with pytest.raises(ConfigError, match=f"^{missing}: no such fixtures directory$"):
        EmulatorThread(settings).start()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_connect_finds_both_endpoints_and_downloads_the_ca(
    remote: MedscribeEmulator, tmp_path: Path, scheme: str
) -> None:
    url = remote.endpoint_url if scheme == "https" else remote.h2c_url
    handle = MedscribeEmulator.connect(url, ca_dir=tmp_path)
    assert (handle.endpoint_url, handle.h2c_url) == (remote.endpoint_url, remote.h2c_url)
    assert handle.admin_url == url
    assert handle.ca_file == tmp_path / "ca.pem"
    assert handle.ca_file.read_bytes() == Path(remote.ca_file).read_bytes()
    assert handle.health()["status"] == "ready"


def test_connect_to_nothing_raises_a_clear_error() -> None:
    with pytest.raises(MedscribeAdminError, match="cannot reach the medscribe emulator"):
        MedscribeEmulator.connect("http://127.0.0.1:9")


def test_use_scenario_as_context_manager_removes_its_rule(remote: MedscribeEmulator) -> None:
    with remote.use_scenario("primary-care-visit", session_id=SESSION_S1) as rule:
        assert remote.rules() == [rule.data]
        assert rule.data["match"] == {"sessionId": SESSION_S1}
    assert remote.rules() == []
    rule.remove()  # already gone: not an error


def test_add_rule_takes_a_whole_rule_or_keywords_not_both(remote: MedscribeEmulator) -> None:
    rule = remote.add_rule({"match": {}, "error": {"type": "ThrottlingException"}, "times": 2})
    assert (rule.data["times"], rule.data["error"]["type"]) == (2, "ThrottlingException")
    with pytest.raises(TypeError):
        remote.add_rule({"match": {}}, times=1)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("primary-care-visit",), {}, "use_scenario('primary-care-visit')"),
        ((), {"match": "dom-abcdefghij0123456789", "error": "ThrottlingException"}, "match="),
    ],
    ids=["scenario-name-as-rule", "id-as-match"],
)
def test_add_rule_misused_says_how_to_call_it(
    remote: MedscribeEmulator, args, kwargs, message
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        remote.add_rule(*args, **kwargs)
    assert remote.rules() == []


async def test_reset_names_the_sessions_it_kept_for_their_open_stream(
    remote: MedscribeEmulator,
) -> None:
    from aws_sdk_connecthealth import models as m

    from .support import configuration_event, stream_input

    session_id = new_session_id()
    async with await remote.client() as client:
        stream = await client.start_medical_scribe_listening_session(input=stream_input(session_id))
        await stream.input_stream.send(configuration_event())
        await stream.await_output()  # the stream is open
        assert remote.reset() == [session_id]
        await stream.input_stream.send(
            m.MedicalScribeInputStreamSessionControlEvent(
                value=m.MedicalScribeSessionControlEvent(type="END_OF_SESSION")
            )
        )
        await stream.input_stream.close()
        async for _ in (await stream.await_output())[1]:
            pass
    assert remote.reset() == []


async def test_session_and_events_pick_one_of_two_sessions_sharing_an_id(
    remote: MedscribeEmulator,
) -> None:
    from .support import DOMAIN_ID

    other = "dom-otherdomain00000001"
    session_id = new_session_id()
    async with await remote.client() as client:
        for domain_id, seconds in ((DOMAIN_ID, 0.2), (other, 0.4)):
            result = await run_session(
                client, session_id, audio=pcm_tone(seconds), domain_id=domain_id
            )
            assert result.error is None
    assert remote.session(session_id)["domainId"] == other  # the newest
    first = remote.session(session_id, domain_id=DOMAIN_ID)
    assert (first["domainId"], first["audioSeconds"]) == (DOMAIN_ID, pytest.approx(0.2))
    events = remote.events(session_id, domain_id=DOMAIN_ID)
    assert sum(e["type"] == "audioEvent" for e in events) == 2
    with pytest.raises(MedscribeAdminError) as info:
        remote.session(session_id, subscription_id="sub-NOSUCHSUBSCRIPTION001")
    assert info.value.status == 404


async def test_a_chaos_rule_for_one_session_keeps_the_tests_scenario(
    remote: MedscribeEmulator,
) -> None:
    """``use_scenario`` for the test, then a chaos rule for one of its sessions:
    that session replayed the default scenario (the generated visit), and a test
    checking only statuses passed on the wrong visit. The chaos now adds to the
    visit the session would have had, the scenario rule's use is counted, and
    the session names the rule its scenario came from."""
    visit = {"segments": [{"channel": 0, "begin": 0.1, "end": 0.4, "content": "The test's."}]}
    scenario_rule = remote.use_scenario(visit)
    once = remote.use_scenario("primary-care-visit", session_id=new_session_id())
    once_id = once.id
    troubled, calm = new_session_id(), new_session_id()
    chaos_rule = remote.add_rule(match={"sessionId": troubled}, chaos={"slow": 0.001})
    async with await remote.client() as client:
        for session_id in (troubled, calm):
            result = await run_session(client, session_id, audio=pcm_tone(0.6))
            assert result.error is None
            assert [s.content for s in result.finals] == ["The test's."], session_id
    details = remote.session(troubled)
    assert (details["ruleId"], details["scenarioRuleId"]) == (chaos_rule.id, scenario_rule.id)
    assert remote.session(calm)["scenarioRuleId"] is None
    uses = {r["id"]: r["uses"] for r in remote.rules()}
    assert uses[scenario_rule.id] == 2 and uses[chaos_rule.id] == 1 and uses[once_id] == 0


async def test_a_chaos_rule_on_a_resumed_session_keeps_its_starting_rules_scenario(
    remote: MedscribeEmulator,
) -> None:
    """A session whose first stream ended before its configuration has no scenario
    yet: its resumed stream, matched by a chaos-only rule, replayed the default
    (its starting rule spent) or counted that rule's use a second time. It now
    replays what it would have without the chaos rule: a newer rule's scenario
    for it, else that of the rule that started it, whose one use counts once."""
    from .support import stream_input

    visit = {"segments": [{"channel": 0, "begin": 0.1, "end": 0.4, "content": "Its own."}]}
    newer = {"segments": [{"channel": 0, "begin": 0.1, "end": 0.4, "content": "The newer."}]}
    for times, replaced in ((1, False), (2, False), (1, True)):
        remote.reset()
        session_id = new_session_id()
        starter = remote.add_rule(match={"sessionId": session_id}, scenario=visit, times=times)
        async with await remote.client() as client:
            stream = await client.start_medical_scribe_listening_session(
                input=stream_input(session_id)
            )
            await stream.input_stream.close()  # no configuration: no scenario chosen
            async for _ in (await stream.await_output())[1]:
                pass
            assert remote.session(session_id)["status"] == "PAUSED"
            if replaced:
                later = remote.add_rule(match={"sessionId": session_id}, scenario=newer)
            remote.add_rule(match={"sessionId": session_id}, chaos={"slow": 0.001})
            result = await run_session(client, session_id, audio=pcm_tone(0.6))
        assert result.error is None
        details = remote.session(session_id)
        uses = {r["id"]: r["uses"] for r in remote.rules()}
        if replaced:
            assert [s.content for s in result.finals] == ["The newer."]
            assert (details["ruleId"], details["scenarioRuleId"]) == (starter.id, later.id)
        else:
            assert [s.content for s in result.finals] == ["Its own."], times
            assert (details["ruleId"], details["scenarioRuleId"]) == (starter.id, None)
        assert uses[starter.id] == 1, (times, replaced)


def test_unknown_session_raises_404(remote: MedscribeEmulator) -> None:
    with pytest.raises(MedscribeAdminError) as info:
        remote.session("no-such-session")
    assert info.value.status == 404
    assert "no-such-session" in info.value.message


async def test_events_return_the_session_journal_in_order(remote: MedscribeEmulator) -> None:
    session_id = new_session_id()
    remote.use_scenario(
        {"segments": [{"channel": 0, "begin": 0.1, "end": 0.2, "content": "Hi."}]}, session_id
    )
    async with await remote.client() as client:
        result = await run_session(client, session_id, audio=pcm_tone(0.3))
    assert result.error is None
    events = remote.events(session_id)
    inputs = [e["type"] for e in events if e["direction"] == "in"]
    assert inputs == ["configurationEvent", *["audioEvent"] * 3, "sessionControlEvent"]
    finals = [
        e["transcriptSegment"]["content"]
        for e in events
        if e["direction"] == "out" and not e["transcriptSegment"]["isPartial"]
    ]
    assert finals == ["Hi."]


async def test_the_handles_client_signs_with_the_key_pair_it_is_given(tmp_path: Path) -> None:
    """Against --verify-signatures the handle's default (dummy) client is refused and a
    client given the emulator's key pair streams."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=tmp_path,
        verify_signatures=True,
        access_key_id="AKIDHANDLETEST",
        secret_access_key="handle-secret",
    )
    with EmulatorThread(settings) as server:
        handle = MedscribeEmulator.from_running(server)
        async with await handle.client() as client:
            refused = await run_session(client, new_session_id(), audio=pcm_tone(0.2))
        assert type(refused.error).__name__ == "AccessDeniedException"
        async with await handle.client(
            access_key_id="AKIDHANDLETEST", secret_access_key="handle-secret"
        ) as client:
            signed = await run_session(client, new_session_id(), audio=pcm_tone(0.2))
        assert signed.error is None


def test_started_emulator_options_with_medscribe_url_are_one_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote: MedscribeEmulator
) -> None:
    """--medscribe-fixtures and --medscribe-seed were silently unused with a URL, and
    the test then failed on an unknown scenario with no hint why."""
    user_project(pytester, monkeypatch, REMOTE_TESTS)
    result = pytester.runpytest_subprocess(
        "-p",
        "emulator.pytest_plugin",
        f"--medscribe-url={remote.endpoint_url}",
        "--medscribe-fixtures=emulator-fixtures",
        "--medscribe-seed=7",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--medscribe-fixtures and --medscribe-seed configure the emulator the plugin "
            f"starts; with --medscribe-url ({remote.endpoint_url}) none is started*"
        ]
    )


def test_a_url_is_named_in_the_header_with_the_ini_settings_and_override_it_leaves_unused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ini file may keep medscribe_fixtures and medscribe_seed for local runs while CI
    gives a URL: allowed, but they (and a medscribe_settings override) were unused
    without a word."""
    user_project(pytester, monkeypatch, "def test_a(medscribe_emulator):\n    pass\n")
    pytester.makeini(USER_INI + "medscribe_seed = 7\n")
    pytester.makeconftest(
        "import dataclasses\n"
        "import pytest\n\n"
        "@pytest.fixture(scope='session')\n"
        "def medscribe_settings(medscribe_settings):\n"
        "    return dataclasses.replace(medscribe_settings, post_stream_delay=0.0)\n"
    )
    monkeypatch.setenv("MEDSCRIBE_URL", "http://127.0.0.1:9")  # collected only: never reached
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", "--collect-only")
    result.stdout.fnmatch_lines(
        [
            "medscribe: using the emulator at http://127.0.0.1:9 (MEDSCRIBE_URL), none is "
            "started; ini medscribe_fixtures and medscribe_seed not used with a URL (start "
            "that emulator with --fixtures and --seed)",
            "collected 1 item",
            "medscribe: the medscribe_settings fixture of conftest.py is not used: it "
            "configures an emulator the plugin starts, and with a URL none is",
        ]
    )
    # Quiet runs leave both out, as pytest's own header; without a URL there is none.
    quiet = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", "--collect-only", "-q")
    assert "medscribe:" not in quiet.stdout.str()
    monkeypatch.delenv("MEDSCRIBE_URL")
    started = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", "--collect-only")
    assert started.ret == pytest.ExitCode.OK
    assert "medscribe:" not in started.stdout.str()
    # The option is named as the source, and an ini without those settings leaves one part.
    pytester.makeini(INPROCESS_INI)
    given = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", "--collect-only", "--medscribe-url=http://127.0.0.1:9"
    )
    given.stdout.fnmatch_lines(
        ["medscribe: using the emulator at http://127.0.0.1:9 (--medscribe-url), none is started"]
    )


def test_an_ini_seed_equal_to_the_default_is_not_called_unused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``medscribe_seed = 0`` changes nothing: the header called it unused with a URL."""
    user_project(pytester, monkeypatch, "def test_a(medscribe_emulator):\n    pass\n")
    for seed in ("0", "+0", " 00 "):
        pytester.makeini(INPROCESS_INI + f"medscribe_seed = {seed}\n")
        result = pytester.runpytest_subprocess(
            "-p", "emulator.pytest_plugin", "--collect-only", "--medscribe-url=http://127.0.0.1:9"
        )
        header = [line for line in result.stdout.lines if line.startswith("medscribe:")]
        assert header == [
            "medscribe: using the emulator at http://127.0.0.1:9 (--medscribe-url), none is started"
        ], seed


#: A user's tests naming a scenario of the ini's fixtures directory, as an emulator
#: started with the packaged fixtures refuses it.
PROJECT_SCENARIO_TESTS = """
import pytest

from emulator.testing import MedscribeAdminError


def test_by_name(medscribe_emulator):
    medscribe_emulator.use_scenario("greeting")


@pytest.mark.medscribe_scenario("greeting")
def test_marked(medscribe_emulator):
    pass


def test_other_refusals_are_as_the_emulator_words_them(medscribe_emulator):
    with pytest.raises(MedscribeAdminError) as refused:
        medscribe_emulator.add_rule(match={}, error="NoSuchException")
    assert refused.value.status == 400 and "medscribe_fixtures" not in refused.value.message
"""


def test_an_unknown_scenario_at_a_url_says_the_ini_fixtures_are_not_loaded_there(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote: MedscribeEmulator
) -> None:
    """A project's scenario, in the ini's medscribe_fixtures, refused by the emulator
    CI gave through MEDSCRIBE_URL: the refusal said only "unknown scenario"."""
    user_project(pytester, monkeypatch, PROJECT_SCENARIO_TESTS)
    monkeypatch.setenv("MEDSCRIBE_URL", remote.h2c_url)
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    result.assert_outcomes(passed=1, failed=1, errors=1)
    hint = (
        f"; the emulator at {remote.h2c_url} (MEDSCRIBE_URL) lacks the ini's "
        f"medscribe_fixtures ({pytester.path / 'emulator-fixtures'}) scenario 'greeting': "
        "that option configures only an emulator the plugin starts, and with a URL none "
        "is. Start that emulator with --fixtures and those scenarios, or give "
        "use_scenario() an inline scenario"
    )
    result.stdout.fnmatch_lines(
        [  # pytest reports the marker's set-up error before the test's failure
            "*@pytest.mark.medscribe_scenario('greeting'): 400 invalid rule: *unknown "
            f"scenario 'greeting'*{hint}",
            f"E *.MedscribeAdminError: 400 invalid rule: *unknown scenario 'greeting'*{hint}",
        ]
    )
    assert "During handling" not in result.stdout.str()
    # Without the ini setting there is nothing to point at: the emulator's words alone.
    pytester.makeini(USER_INI.replace("medscribe_fixtures = emulator-fixtures\n", ""))
    plain = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    plain.assert_outcomes(passed=1, failed=1, errors=1)
    assert "unknown scenario 'greeting'" in plain.stdout.str()
    assert "medscribe_fixtures" not in plain.stdout.str()


def test_an_unknown_scenario_at_a_url_started_with_the_ini_fixtures_gets_no_hint(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator at the URL was started with the ini's fixtures: a typo's refusal
    said they were "not loaded" into it, advice it had followed already."""
    typo = (
        "\n\ndef test_typo(medscribe_emulator):\n    medscribe_emulator.use_scenario('greting')\n"
    )
    user_project(pytester, monkeypatch, PROJECT_SCENARIO_TESTS + typo)
    settings = Settings(
        host="127.0.0.1",
        port=0,
        h2c_port=0,
        state_dir=pytester.mkdir("state"),
        fixtures=pytester.path / "emulator-fixtures",
    )
    with EmulatorThread(settings) as server:
        monkeypatch.setenv("MEDSCRIBE_URL", server.h2c_url)
        result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["E *unknown scenario 'greting' (did you mean 'greeting'?)*"])
    assert "medscribe_fixtures (" not in result.stdout.str()


def test_a_failed_start_is_raised_once_not_again_by_stop(tmp_path: Path) -> None:
    """The usual fixture, start() in a try and stop() in its finally, reported the
    start-up error twice: stop() raised it again."""
    settings = Settings(
        host="127.0.0.1", port=0, h2c_port=0, state_dir=tmp_path, scenario="no-such-scenario"
    )
    thread = EmulatorThread(settings)
    with pytest.raises(ConfigError, match="no-such-scenario"):
        thread.start()
    thread.stop()  # raised the same error again
    assert not thread.alive


def test_connect_without_a_ca_dir_removes_its_temporary_one_at_exit(
    remote: MedscribeEmulator, tmp_path: Path
) -> None:
    script = (
        "import sys\n"
        "from emulator.testing import MedscribeEmulator\n"
        "print(MedscribeEmulator.connect(sys.argv[1]).ca_file)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, remote.endpoint_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    ca_file = Path(result.stdout.strip())
    assert ca_file.name == "ca.pem" and ca_file.parent.name.endswith("-medscribe-ca")
    assert not ca_file.parent.exists()


def test_a_failed_tests_report_shows_its_sessions_lines_and_no_library_debug(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed assertion about a session showed nothing of the emulator: its
    session lines (each end saying why a session failed) reached the report only
    with --log-level=INFO, and with --log-level=DEBUG about 200 lines of hpack and
    Faker came with them. A settings override's log_level was ignored."""
    tests = (
        "from helpers import new_id, stream\n\n"
        "async def test_failing(medscribe_emulator):\n"
        "    session_id = new_id()\n"
        "    medscribe_emulator.use_scenario('greeting', session_id=session_id)\n"
        "    async with await medscribe_emulator.client() as client:\n"
        "        finals, error = await stream(client, session_id)\n"
        "    assert finals == ['something else']\n"
    )
    user_project(pytester, monkeypatch, tests)
    # Faker's own pytest plugin makes a Faker (and logs) in every test: not ours.
    result = pytester.runpytest_subprocess(
        "-p", "emulator.pytest_plugin", "-p", "no:faker", "--log-level=DEBUG", timeout=110
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert re.search(r"INFO +medscribe\.sessions:\S+ session \S+ ended: COMPLETED", out), out
    assert "DEBUG    hpack" not in out and "DEBUG    faker" not in out
    pytester.makeconftest(
        "import dataclasses\nimport pytest\n\n"
        "@pytest.fixture(scope='session')\n"
        "def medscribe_settings(medscribe_settings):\n"
        "    return dataclasses.replace(medscribe_settings, log_level='warning')\n"
    )
    quiet = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    quiet.assert_outcomes(failed=1)
    assert "medscribe.sessions" not in quiet.stdout.str()


def test_a_session_asking_only_for_the_settings_puts_the_library_levels_back(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin keeps hpack, h2 and Faker at info while it runs an emulator, and
    put their levels back only when that emulator stopped: a session whose tests
    asked for ``medscribe_settings`` alone (to start an emulator of its own) kept
    them changed for whatever ran after it."""
    tests = "def test_settings(medscribe_settings):\n    assert medscribe_settings.port == 0\n"
    user_project(pytester, monkeypatch, tests)
    pytester.makeconftest(
        "import logging\n\n"
        "def pytest_configure(config):\n"
        "    for name in ('hpack', 'h2', 'faker'):\n"
        "        logging.getLogger(name).setLevel(logging.DEBUG)\n\n"
        "def pytest_unconfigure(config):\n"
        "    levels = [logging.getLogger(n).level for n in ('hpack', 'h2', 'faker')]\n"
        "    print('levels after the session:', levels)\n"
    )
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", "-s", timeout=110)
    result.assert_outcomes(passed=1)
    debug = logging.DEBUG
    result.stdout.fnmatch_lines([f"levels after the session: [[]{debug}, {debug}, {debug}[]]"])


def test_the_handles_admin_calls_read_no_certificate_store(medscribe_emulator, monkeypatch):
    """Each admin call built its opener, whose default HTTPS handler read the
    system's CA store: about 20 ms a call over http://, most of the fixture's
    per-test cost (a 200-test suite 21.5 s against 2.7)."""
    import ssl

    made = []
    real = ssl.SSLContext.load_default_certs

    def load_default_certs(self, *args, **kwargs):
        made.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", load_default_certs)
    for _ in range(5):
        medscribe_emulator.health()
    medscribe_emulator.sessions()
    assert made == []


async def test_the_handles_boto3_client_looks_up_its_sessions(medscribe_emulator):
    """The control plane was two README sections put together by hand (the boto3
    recipe, the handle's CA file): the handle now gives its client."""
    from botocore.config import Config

    from .support import DOMAIN_ID, SUBSCRIPTION_ID

    session_id = new_session_id()
    async with await medscribe_emulator.client() as client:
        assert (await run_session(client, session_id, audio=pcm_tone(0.3))).error is None
    boto = medscribe_emulator.boto3_client(config=Config(retries={"total_max_attempts": 1}))
    details = boto.get_medical_scribe_listening_session(
        sessionId=session_id, domainId=DOMAIN_ID, subscriptionId=SUBSCRIPTION_ID
    )["medicalScribeListeningSessionDetails"]
    assert (details["sessionId"], details["streamStatus"]) == (session_id, "COMPLETED")
    assert boto.meta.config.retries["total_max_attempts"] == 1


def test_add_rule_takes_chaos_and_probability_as_keywords(medscribe_emulator):
    """The keyword form took neither, though the README's Rules have both: a bare
    TypeError sent the user looking for the dict form."""
    rule = medscribe_emulator.add_rule(
        match={"domainId": "dom-flakynetwork000001"}, chaos={"slow": 0.01}, probability=0.5
    )
    (listed,) = [r for r in medscribe_emulator.rules() if r["id"] == rule.id]
    assert listed["chaos"] == {"slow": 0.01} and listed["probability"] == 0.5


def test_a_handle_error_shows_the_tests_line_and_the_message_not_the_helpers_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest printed the whole add_rule (50 lines, its docstring included) between
    the test's line and the one-line error."""
    user_project(
        pytester,
        monkeypatch,
        "def test_typo(medscribe_emulator):\n    medscribe_emulator.use_scenario('greetng')\n",
    )
    result = pytester.runpytest_subprocess("-p", "emulator.pytest_plugin", timeout=110)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "unknown scenario 'greetng' (did you mean 'greeting'?)" in out
    assert "def add_rule(" not in out and "def use_scenario(" not in out
