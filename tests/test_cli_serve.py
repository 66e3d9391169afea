"""`medscribe-emulator serve`: options, environment variables, start-up and shutdown."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import hyperframe.frame
import pytest

from emulator.cli import parse_settings

from .support import DOMAIN_ID, SUBSCRIPTION_ID, H2Client, fixtures_path, new_session_id


def test_defaults_match_the_documented_contract():
    command, _, settings = parse_settings([], environ={})
    assert command == "serve"
    assert (settings.host, settings.port, settings.h2c_port) == ("127.0.0.1", 8443, 8080)
    assert settings.state_dir == Path(".medscribe")
    assert settings.scenario == "synthetic" and settings.seed == 0
    assert settings.fixtures is None  # the packaged fixtures


def test_every_flag_has_an_environment_variable_and_flags_win():
    environ = {
        "MEDSCRIBE_HOST": "0.0.0.0",
        "MEDSCRIBE_PORT": "9443",
        "MEDSCRIBE_H2C_PORT": "9080",
        "MEDSCRIBE_STATE_DIR": "/tmp/state",
        "MEDSCRIBE_SCENARIO": "primary-care-visit",
        "MEDSCRIBE_SEED": "42",
        "MEDSCRIBE_TLS_HOSTNAME": "medscribe, emulator.internal",
        "MEDSCRIBE_STRICT_RESOURCES": "true",
    }
    _, _, settings = parse_settings(["--port", "10443", "--seed", "1"], environ=environ)
    assert settings.host == "0.0.0.0"
    assert settings.port == 10443  # flag wins
    assert settings.h2c_port == 9080
    assert settings.state_dir == Path("/tmp/state")
    assert settings.scenario == "primary-care-visit"
    assert settings.seed == 1  # flag wins
    assert settings.tls_hostnames == ["medscribe", "emulator.internal"]
    assert settings.strict_resources is True


@pytest.mark.parametrize("name", ["verify-signatures", "strict-resources", "quotas"])
def test_a_switch_the_environment_turns_on_the_command_line_turns_off(name):
    """Every option is a variable and the command line wins: switches too (--no-...)."""
    variable = "MEDSCRIBE_" + name.upper().replace("-", "_")
    field = name.replace("-", "_")
    _, _, settings = parse_settings([], environ={variable: "true"})
    assert getattr(settings, field) is True
    _, _, settings = parse_settings([f"--no-{name}"], environ={variable: "true"})
    assert getattr(settings, field) is False
    _, _, settings = parse_settings([f"--{name}"], environ={variable: "false"})
    assert getattr(settings, field) is True


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--port", "99999"], {}, "port 99999 is outside 0-65535"),
        (["--seed", "x"], {}, "'x' is not an integer"),
        ([], {"MEDSCRIBE_PORT": "https"}, "MEDSCRIBE_PORT: 'https' is not a port number"),
        ([], {"MEDSCRIBE_STRICT_RESOURCES": "maybe"}, "is not a boolean"),
        (["--certfile", "cert.pem"], {}, "--certfile and --keyfile go together"),
        (["--tls-hostname="], {}, "argument --tls-hostname: empty host name in ''"),
        ([], {"MEDSCRIBE_TLS_HOSTNAME": ",,"}, "MEDSCRIBE_TLS_HOSTNAME: no host name in ',,'"),
        (["--tls-hostname", "hôte"], {}, "must be ASCII (use its xn-- form)"),
        (["--tls-hostname", "a b"], {}, "host name 'a b' is not a DNS name"),
        ([], {"MEDSCRIBE_TLS_HOSTNAME": ",,bad_host!,"}, "'bad_host!' is not a DNS name"),
        (["--s3-endpoint-url", "notaurl"], {}, "'notaurl' is not an http:// or https:// URL"),
        (["--s3-endpoint-url", "http://h:99999"], {}, "is not a URL: Port out of range"),
        (["--idle-timeout", "nan"], {}, "argument --idle-timeout: 'nan' is not a finite number"),
        ([], {"MEDSCRIBE_POST_STREAM_DELAY": "inf"}, "'inf' is not a finite number"),
        (["--quota-start-tps", "0"], {}, "'0' must be greater than 0 (a rate of 0 would"),
        (["--quota-get-tps", "0.0"], {}, "'0.0' must be greater than 0"),
        (["--admin-token", ""], {}, "argument --admin-token: the admin token is empty; give"),
        ([], {"MEDSCRIBE_ADMIN_TOKEN": " \n"}, "MEDSCRIBE_ADMIN_TOKEN: the admin token is empty"),
        (
            ["--port", "6000", "--h2c-port", "6000"],
            {},
            "--port and --h2c-port are both 6000: the TLS and the cleartext port must differ",
        ),
        ([], {"MEDSCRIBE_PORT": "6001", "MEDSCRIBE_H2C_PORT": "6001"}, "are both 6001"),
        (["--port", "8080"], {}, "--port and --h2c-port are both 8080"),  # the default h2c
        (["--host", "*"], {}, "argument --host: '*' is not an address to listen on: give 0.0.0.0"),
        (["--region", "us east 1"], {}, "argument --region: 'us east 1' is not a region"),
        ([], {"MEDSCRIBE_HOST": "a,b"}, "MEDSCRIBE_HOST: 'a,b' is not an address or host name"),
        (["--quotas=true"], {}, "--quotas and --no-quotas take no value, got 'true': give"),
        (
            ["--no-verify-signatures=0"],
            {},
            "take no value, got '0': give --verify-signatures or --no-verify-signatures (the "
            "variable MEDSCRIBE_VERIFY_SIGNATURES takes true or false)",
        ),
    ],
    ids=[
        "port-range",
        "seed-type",
        "env-port",
        "env-bool",
        "cert-without-key",
        "empty-tls-hostname",
        "env-tls-hostnames-all-empty",
        "non-ascii-tls-hostname",
        "tls-hostname-with-a-space",
        "env-tls-hostname-not-dns",
        "s3-endpoint-not-a-url",
        "s3-endpoint-bad-port",
        "nan-idle-timeout",
        "env-infinite-post-stream-delay",
        "zero-start-rate",
        "zero-get-rate",
        "empty-admin-token",
        "blank-admin-token-variable",
        "same-ports",
        "env-same-ports",
        "port-on-the-default-h2c-port",
        "host-star",
        "region-with-spaces",
        "env-host-a-list",
        "switch-given-a-value",
        "no-switch-given-a-value",
    ],
)
def test_bad_options_exit_2_with_one_clear_line(argv, environ, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, environ=environ)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    # The serve options are listed by `serve --help`; the top level's lists commands.
    assert err.rstrip().endswith("(see medscribe-emulator serve --help)")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"MEDSCRIBE_SCENARIO": "no-such"},
            "MEDSCRIBE_SCENARIO (--scenario) 'no-such' is not a known scenario",
        ),
        (
            {"MEDSCRIBE_FIXTURES": "{tmp}/missing"},
            "{tmp}/missing: no such fixtures directory (set by MEDSCRIBE_FIXTURES)",
        ),
        (
            {"MEDSCRIBE_CREDENTIALS_FILE": "{tmp}/missing", "MEDSCRIBE_VERIFY_SIGNATURES": "1"},
            "credentials file {tmp}/missing: cannot be read: No such file or directory (set by "
            "MEDSCRIBE_CREDENTIALS_FILE)",
        ),
        (
            {"MEDSCRIBE_VERIFY_SIGNATURES": "true"},
            "MEDSCRIBE_VERIFY_SIGNATURES (--verify-signatures) needs --access-key-id",
        ),
        (
            {"MEDSCRIBE_STATE_DIR": "{tmp}/a-file"},
            "cannot use MEDSCRIBE_STATE_DIR (--state-dir) {tmp}/a-file: it is a file, not a "
            "directory",
        ),
    ],
    ids=["scenario", "fixtures", "credentials-file", "verify-signatures", "state-dir-a-file"],
)
def test_a_setting_from_the_environment_is_named_as_its_variable(
    tmp_path, monkeypatch, capsys, environ, message
):
    """Checks after the parse named the option: a user who set the variable in a
    compose file was told of an option they never gave."""
    from emulator import cli

    (tmp_path / "a-file").write_text("not a directory")
    for name in [name for name in os.environ if name.startswith("MEDSCRIBE_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    argv = ["--port", "0", "--h2c-port", "0"]
    if "MEDSCRIBE_STATE_DIR" not in environ:
        argv += ["--state-dir", str(tmp_path / "state")]
    assert cli.main(argv) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("primary-care-visit.yaml", "primary-care-visit"),
        ("PRIMARY-CARE-VISIT", "primary-care-visit"),
        ("Telehealth-Two-Channel.YML", "telehealth-two-channel"),
        ("primary-car-visit", "primary-care-visit"),
        ("Synthetic", "synthetic"),
    ],
    ids=["file-suffix", "capitals", "capitals-and-suffix", "misspelt", "the-generated-visit"],
)
@pytest.mark.parametrize("where", ["option", "variable"])
def test_an_unknown_default_scenario_suggests_the_one_meant(
    tmp_path, monkeypatch, capsys, given, meant, where
):
    """As a rule naming an unknown scenario is told, in rules.yaml or the admin API."""
    from emulator import cli

    for name in [name for name in os.environ if name.startswith("MEDSCRIBE_")]:
        monkeypatch.delenv(name)
    argv = ["--port", "0", "--h2c-port", "0", "--state-dir", str(tmp_path / "state")]
    if where == "option":
        argv += ["--scenario", given]
    else:
        monkeypatch.setenv("MEDSCRIBE_SCENARIO", given)
    assert cli.main(argv) == 2
    option = "--scenario" if where == "option" else "MEDSCRIBE_SCENARIO (--scenario)"
    assert (
        f"{option} {given!r} is not a known scenario (did you mean {meant!r}?); known: "
        "synthetic, disconnect-midstream, "
    ) in capsys.readouterr().err


def test_a_certificate_without_its_key_from_the_environment_names_the_variable(capsys):
    with pytest.raises(SystemExit):
        parse_settings([], environ={"MEDSCRIBE_CERTFILE": "cert.pem"})
    assert "MEDSCRIBE_CERTFILE (--certfile) and --keyfile go together" in capsys.readouterr().err


def test_a_bad_access_key_id_is_refused_without_echoing_it(tmp_path, capsys):
    """It ended start-up in a traceback quoting the value: swapped with the secret
    (which often holds a '/'), the secret went to the terminal and the CI log."""
    from emulator import cli

    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    argv = ["--verify-signatures", "--access-key-id", secret, "--secret-access-key", "AKIDX"]
    argv += ["--port", "0", "--h2c-port", "0", "--state-dir", str(tmp_path / "state")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--access-key-id: an access key id must be non-empty" in err
    assert "were the two swapped?" in err and secret not in err and "Traceback" not in err


def test_a_session_token_without_its_key_pair_stops_start_up(tmp_path, capsys):
    from emulator import cli

    argv = ["--verify-signatures", "--session-token", "t0ken", "--credentials-file"]
    argv += [str(tmp_path / "credentials")]
    (tmp_path / "credentials").write_text(
        "[p]\naws_access_key_id = AKIDX\naws_secret_access_key = s3cret\n"
    )
    argv += ["--port", "0", "--h2c-port", "0", "--state-dir", str(tmp_path / "state")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--session-token goes with the --access-key-id and --secret-access-key" in err
    assert "t0ken" not in err and "Traceback" not in err


def test_a_ca_it_cannot_read_stops_start_up_and_a_damaged_one_is_replaced_saying_so(tmp_path):
    """An unreadable CA key (its permissions; a directory stands in, as the tests may
    run as root) was taken for a missing one, and the CA clients trust replaced
    with no word; a damaged one was replaced silently too."""
    from emulator.tls import ensure_certificates

    files = ensure_certificates(tmp_path / "state")
    trusted = files.ca_cert.read_bytes()
    key = tmp_path / "state" / "ca-key.pem"
    key.rename(tmp_path / "ca-key.pem")
    key.mkdir()
    with _start(tmp_path) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "ready" not in out and "Traceback" not in err
    assert f"cannot read {key}: Is a directory" in err
    assert files.ca_cert.read_bytes() == trusted
    key.rmdir()
    files.ca_cert.write_text("damaged")
    with _start(tmp_path) as process, _stopped(process):
        ready = _read_ready(process)
        assert Path(ready["ca"]).read_bytes() != trusted
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        err = process.stderr.read()
    assert "issuing a new local CA: clients that trust the old one must be given the new" in err


def test_a_misspelt_variable_is_named_at_start_up_with_the_one_meant(tmp_path):
    """MEDSCRIBE_TLS_HOSTNAMES (the Settings field's plural) was ignored without a
    word: the certificate left out the container's name, and its clients failed
    their TLS handshakes 23 s later. The variables of `stream`, the pytest
    plugin and the C extension are read elsewhere: not named."""
    env = {
        "MEDSCRIBE_TLS_HOSTNAMES": "medscribe",
        "MEDSCRIBE_H2C_PROT": "9",
        "MEDSCRIBE_ENDPOINT": "https://localhost:8443",
        "MEDSCRIBE_PURE_PYTHON": "",
    }
    with _start(tmp_path, env=env) as process, _stopped(process):
        _read_ready(process)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        err = process.stderr.read()
    warned = [
        line
        for line in re.findall(r"WARNING medscribe: (MEDSCRIBE_\S+) (is set, .*)", err)
        if line[0] in env  # not others this test's environment may have
    ]
    warned = [f"{name} {said}" for name, said in warned]
    assert warned == [
        "MEDSCRIBE_H2C_PROT is set, but the emulator reads no such variable "
        "(did you mean MEDSCRIBE_H2C_PORT?)",
        "MEDSCRIBE_TLS_HOSTNAMES is set, but the emulator reads no such variable "
        "(did you mean MEDSCRIBE_TLS_HOSTNAME?)",
    ]


def test_an_admin_token_is_read_without_the_whitespace_around_it():
    """A secret file's last newline made a token no client could send: every admin
    request was a 401 for the server's life."""
    _, _, settings = parse_settings(["--admin-token", " s3cret\n"], environ={})
    assert settings.admin_token == "s3cret"
    _, _, settings = parse_settings([], environ={"MEDSCRIBE_ADMIN_TOKEN": "s3cret\n"})
    assert settings.admin_token == "s3cret"
    _, _, settings = parse_settings([], environ={"MEDSCRIBE_ADMIN_TOKEN": ""})  # unset
    assert settings.admin_token is None


def test_a_port_is_any_number_from_0_to_65535():
    """0 asks the system for a free port; 65535 is the last; one past either end is refused."""
    _, _, settings = parse_settings(["--port", "65535", "--h2c-port", "0"], environ={})
    assert (settings.port, settings.h2c_port) == (65535, 0)
    for bad in ("65536", "-1"):
        with pytest.raises(SystemExit):
            parse_settings(["--port", bad], environ={})


@pytest.mark.parametrize(
    ("argv", "environ"),
    [(["--log-level", "WARNING"], {}), ([], {"MEDSCRIBE_LOG_LEVEL": "Warning"})],
    ids=["flag", "variable"],
)
def test_the_log_level_is_read_in_any_case(argv, environ):
    _, _, settings = parse_settings(argv, environ=environ)
    assert settings.log_level == "warning"


def test_an_unknown_log_level_still_lists_the_levels(capsys):
    with pytest.raises(SystemExit):
        parse_settings([], environ={"MEDSCRIBE_LOG_LEVEL": "LOUD"})
    assert "MEDSCRIBE_LOG_LEVEL: 'LOUD' is not one of debug, info, warning, error" in (
        capsys.readouterr().err
    )


def _command() -> list[str]:
    script = shutil.which("medscribe-emulator", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "emulator"]


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *_command(),
            "--port",
            "0",
            "--h2c-port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def _stopped(process: subprocess.Popen) -> Iterator[None]:
    """Kill ``process`` on the way out if a test left it running."""
    try:
        yield
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _read_ready(process: subprocess.Popen) -> dict[str, str]:
    lines: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if "endpoint (TLS" in line:
            lines["https"] = line.split()[-1]
        elif "endpoint (cleartext" in line:
            lines["h2c"] = line.split()[-1]
        elif "CA certificate" in line:
            lines["ca"] = line.split()[-1]
            return lines
    raise AssertionError("the emulator exited before it was ready: " + process.stderr.read())


def test_process_prints_endpoints_and_ca_serves_health_and_stops_on_sigterm(tmp_path):
    with _start(tmp_path) as process, _stopped(process):
        ready = _read_ready(process)
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", ready["https"])
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ready["h2c"])
        assert Path(ready["ca"]) == tmp_path / "state" / "ca.pem"
        with urllib.request.urlopen(ready["h2c"] + "/_emulator/health", timeout=5) as response:
            assert response.status == 200
            assert b'"ready"' in response.read()
        with urllib.request.urlopen(ready["h2c"] + "/_emulator/ca.pem", timeout=5) as response:
            assert response.read() == Path(ready["ca"]).read_bytes()
        # The file removed (a clean-up of the state directory): the server still
        # runs with that CA, and serves it. It said "a user-supplied certificate".
        started_with = Path(ready["ca"]).read_bytes()
        Path(ready["ca"]).unlink()
        with urllib.request.urlopen(ready["h2c"] + "/_emulator/ca.pem", timeout=5) as response:
            assert response.read() == started_with
        process.send_signal(signal.SIGTERM)
        # The contract is "within 2 s"; the generous bound only keeps a broken
        # shutdown from hanging the suite.
        assert process.wait(timeout=10) == 0
        # A clean stop says so: its log was a SIGKILL's or an out-of-memory kill's.
        err = process.stderr.read()
    assert "SIGTERM received: stopping" in err
    assert err.rstrip().endswith("medscribe: stopped")


def test_sigterm_stops_the_process_after_a_client_dropped_an_open_stream(tmp_path):
    """A client that opened a stream, read its response headers and vanished without
    sending anything must not keep the server from stopping. (The mechanism, the app's
    last send returning, is pinned in tests/test_hypercorn_h2.py; here the contract.)"""
    with _start(tmp_path) as process, _stopped(process):
        ready = _read_ready(process)
        with _open_stream(ready["h2c"]):
            pass  # the response's headers arrived; the client goes without a word
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_sigterm_stops_the_process_while_a_quiet_client_holds_a_stream_open(tmp_path):
    """Shutdown gives streams a grace period, then drops their connections: a client
    that keeps a stream open and sends nothing (no idle timeout here) cannot hold it."""
    with _start(tmp_path, "--idle-timeout", "0") as process, _stopped(process):
        ready = _read_ready(process)
        with _open_stream(ready["h2c"]) as sock:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            # Whatever came before it (a GOAWAY), the connection then ends.
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(65536):
                    pass


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"])
def test_sigterm_stops_the_process_while_a_tls_client_stalls_in_its_handshake(tmp_path, sent):
    """A client that connects to the TLS port and sends nothing (or half a ClientHello)
    cannot hold shutdown: handshakes are bounded (they take milliseconds here)."""
    with _start(tmp_path) as process, _stopped(process):
        ready = _read_ready(process)
        port = urllib.parse.urlsplit(ready["https"]).port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(sent)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


@contextlib.contextmanager
def _open_stream(h2c_url: str) -> Iterator[socket.socket]:
    """Open a streaming request on a new h2c connection, send no event, and yield the
    socket once the response's headers have arrived; closed on the way out."""
    with _open_stream_and_client(h2c_url) as (sock, _):
        yield sock


STREAM_HEADERS = [
    ("x-amzn-medscribe-domain-id", DOMAIN_ID),
    ("x-amzn-medscribe-subscription-id", SUBSCRIPTION_ID),
    ("x-amzn-medscribe-language-code", "en-US"),
    ("x-amzn-medscribe-sample-rate", "16000"),
    ("x-amzn-medscribe-media-encoding", "pcm"),
    ("content-type", "application/vnd.amazon.eventstream"),
]


def _request_headers() -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", "/medical-scribe-stream/"),
        ("x-amzn-medscribe-session-id", new_session_id()),
        *STREAM_HEADERS,
    ]


def test_sigterm_tells_http2_clients_goaway_and_refuses_their_new_streams(tmp_path):
    """RFC 9113 §6.8: a GOAWAY (NO_ERROR) at once, the stream under way kept for the
    grace period; a stream opened after it is REFUSED_STREAM, which a client may retry
    elsewhere (hypercorn's NO_ERROR reset said nothing)."""
    with _start(tmp_path, "--idle-timeout", "0") as process, _stopped(process):
        ready = _read_ready(process)
        with _open_stream_and_client(ready["h2c"]) as (sock, client):
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # the GOAWAY is sent; this client has not read it yet
            late = client.get_next_available_stream_id()
            client.send_headers(late, _request_headers())
            sock.sendall(client.data_to_send())
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while data := sock.recv(65536):
                    received += data
            assert process.wait(timeout=10) == 0
    frames = []  # read raw: h2's client state machine stops at the GOAWAY
    while len(received) >= 9:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(received[:9]))
        frame.parse_body(memoryview(received[9 : 9 + length]))
        frames.append(frame)
        received = received[9 + length :]
    (goaway,) = [f for f in frames if isinstance(f, hyperframe.frame.GoAwayFrame)]
    assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == 1  # the stream under way
    assert goaway.additional_data == b"server shutting down"
    refused = [f for f in frames if isinstance(f, hyperframe.frame.RstStreamFrame)]
    # The late stream refused; the one under way reset once the grace period ends.
    assert [(f.stream_id, f.error_code) for f in refused] == [
        (late, h2.errors.ErrorCodes.REFUSED_STREAM),
        (1, h2.errors.ErrorCodes.INTERNAL_ERROR),
    ]


@contextlib.contextmanager
def _open_stream_and_client(
    h2c_url: str,
) -> Iterator[tuple[socket.socket, h2.connection.H2Connection]]:
    port = urllib.parse.urlsplit(h2c_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, _request_headers())
        sock.sendall(client.data_to_send())
        answered = False
        while not answered:
            data = sock.recv(65536)
            assert data, "the emulator closed the connection before answering"
            events = client.receive_data(data)
            answered = any(isinstance(e, h2.events.ResponseReceived) for e in events)
        yield sock, client


def test_sigint_stops_the_process_cleanly(tmp_path):
    with _start(tmp_path) as process, _stopped(process):
        _read_ready(process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in process.stderr.read()


def test_invalid_scenario_file_refuses_to_start_naming_file_and_field(tmp_path):
    fixtures = tmp_path / "fixtures"
    shutil.copytree(fixtures_path(), fixtures)
    (fixtures / "scenarios" / "broken.yaml").write_text(
        "segments:\n  - begin: 3\n    end: 1\n    content: backwards\n"
    )
    with _start(tmp_path, "--fixtures", str(fixtures)) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "broken.yaml:3" in err and "segments[0].end" in err
    assert "ready" not in out


def test_start_up_lists_the_problems_of_every_fixture_file_as_check_does(tmp_path):
    """A broken scenario used to hide the rules' problems until it was fixed and
    the emulator started again; start-up now lists what ``check`` lists."""
    fixtures = tmp_path / "fixtures"
    (fixtures / "scenarios").mkdir(parents=True)
    (fixtures / "scenarios" / "broken.yaml").write_text(
        "segments:\n  - begin: 3\n    end: 1\n    content: backwards\n"
    )
    (fixtures / "rules.yaml").write_text("- match: {domainId: 5}\n  scenario: nope\n")
    (fixtures / "resources.yaml").write_text("domains: 3\n")
    checked = subprocess.run(
        [*_command(), "check", str(fixtures)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 1
    problems = checked.stdout.splitlines()
    assert len(problems) == 4, problems  # the scenario's, two of the rules', the resources'
    with _start(tmp_path, "--fixtures", str(fixtures)) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "ready" not in out
    for problem in problems:
        assert problem in err.splitlines()
    assert "Traceback" not in err


def test_a_settings_error_is_kept_beside_the_fixture_files_problems(tmp_path):
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "rules.yaml").write_text("- match: {domainId: 5}\n  scenario: synthetic\n")
    with _start(tmp_path, "--fixtures", str(fixtures), "--scenario", "no-such-visit") as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "ready" not in out
    assert "rules.yaml:1: [0].match.domainId: must be a string" in err
    assert "--scenario 'no-such-visit' is not a known scenario" in err


def test_a_fixtures_directory_that_does_not_exist_refuses_to_start(tmp_path):
    """A typo used to start the emulator with the generated visit alone."""
    missing = tmp_path / "fixtrues"
    with _start(tmp_path, "--fixtures", str(missing)) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "ready" not in out
    assert f"{missing}: no such fixtures directory" in err


def test_a_fixtures_path_that_is_a_file_says_so(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("[]\n")
    with _start(tmp_path, "--fixtures", str(rules)) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "ready" not in out
    assert f"{rules}: a file, not a fixtures directory" in err


def test_a_fixtures_path_that_is_a_scenario_file_names_its_fixtures_directory(tmp_path):
    """The natural first try with one scenario: the directory to give is named."""
    scenario = tmp_path / "fixtures" / "scenarios" / "visit.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text("segments: [{begin: 0, end: 1, content: Hello.}]\n")
    with _start(tmp_path, "--fixtures", str(scenario)) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "ready" not in out
    assert (
        f"{scenario}: a file, not a fixtures directory: give the fixtures directory "
        f"holding its scenarios/ folder, {tmp_path / 'fixtures'}"
    ) in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "missing.pem", d / "missing-key.pem"), "--certfile {cert}: No such file"),
        (lambda d: (Path("/etc/hostname"), Path("/etc/hostname")), "not a PEM certificate"),
        (lambda d: _pair(d, swap_key=True), "--keyfile {key}: not an unencrypted PEM private key"),
        (lambda d: _pair(d, other_key=True), "--keyfile {key} is not the private key of"),
    ],
    ids=["missing", "not-pem", "key-is-a-certificate", "key-of-another-certificate"],
)
def test_an_unusable_certificate_pair_refuses_to_start_naming_the_file(tmp_path, make, message):
    """It printed 'ready' and its endpoints, then six tracebacks ending in
    '[SSL] PEM lib', naming no file."""
    cert, key = make(tmp_path)
    with _start(tmp_path, "--certfile", str(cert), "--keyfile", str(key)) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2, err
    assert "ready" not in out and "Traceback" not in err
    assert message.format(cert=cert, key=key) in err


def _pair(directory: Path, *, swap_key: bool = False, other_key: bool = False) -> tuple[Path, Path]:
    """A certificate and key made by the emulator's own TLS set-up, spoiled as asked."""
    from emulator.tls import ensure_certificates

    files = ensure_certificates(directory / "tls-a")
    if swap_key:
        return files.cert, files.cert
    if other_key:
        return files.cert, ensure_certificates(directory / "tls-b").key
    return files.cert, files.key


def test_a_good_certificate_pair_of_ones_own_serves_tls(tmp_path):
    import ssl

    cert, key = _pair(tmp_path)
    with (
        _start(tmp_path, "--certfile", str(cert), "--keyfile", str(key)) as process,
        _stopped(process),
    ):
        assert process.stdout is not None
        https = next(line.split()[-1] for line in process.stdout if "endpoint (TLS" in line)
        context = ssl.create_default_context(cafile=str(tmp_path / "tls-a" / "ca.pem"))
        url = https.replace("127.0.0.1", "localhost") + "/_emulator/health"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def _log_of_a_clean_run(tmp_path: Path, *args: str, **variables: str) -> str:
    """Start with ``args`` (and ``MEDSCRIBE_<name>`` variables), stop at once with
    SIGTERM; return what it logged, once it exited with 0."""
    env = {f"MEDSCRIBE_{name}": value for name, value in variables.items()}
    with _start(tmp_path, *args, env=env) as process, _stopped(process):
        _read_ready(process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    return err


def test_key_pairs_given_without_verification_are_said_to_be_ignored(tmp_path):
    """A user who forgot --verify-signatures is told so, not left believing the
    emulator checks signatures."""
    args = ("--access-key-id", "AKIDEXAMPLE", "--credentials-file", str(tmp_path / "none"))
    err = _log_of_a_clean_run(tmp_path, *args)
    assert (
        "--access-key-id, --credentials-file: ignored without --verify-signatures "
        "(any credentials are accepted)"
    ) in err


def test_a_second_emulator_on_the_same_state_dir_refuses_to_start(tmp_path):
    """Both started, numbered their sessions from 1 and overwrote each other's."""
    with _start(tmp_path) as first, _stopped(first):
        _read_ready(first)
        with _start(tmp_path) as second:
            out, err = second.communicate(timeout=30)
        assert second.returncode == 2 and "ready" not in out
        assert (
            f"--state-dir {tmp_path / 'state'} is in use by another emulator "
            f"(process {first.pid}): two on one state directory would overwrite each "
            "other's sessions; give each its own --state-dir"
        ) in err
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=10) == 0
    # Once the first has stopped, the directory is free again.
    with _start(tmp_path) as third, _stopped(third):
        _read_ready(third)


def _damaged_header(database: Path) -> None:
    database.write_bytes(b"not sqlite at all" * 100)


def _a_directory(database: Path) -> None:
    database.mkdir()  # opened by the resource registry first: it ended in a traceback


def _old_session_table(database: Path) -> None:
    import sqlite3

    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE scribe_sessions (domain_id TEXT, subscription_id TEXT)")


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_damaged_header, "file is not a database (the file is damaged or not SQLite"),
        (_old_session_table, "(it was probably written by another version of the emulator"),
        (_a_directory, "(a directory is at its path: move it aside"),
    ],
    ids=["not-sqlite", "a-session-table-of-another-version", "a-directory"],
)
def test_an_unusable_state_database_refuses_to_start_naming_it(tmp_path, spoil, message):
    """A table missing a column ended in a traceback; a damaged file was called
    "not a resource database"."""
    database = tmp_path / "state" / "medscribe.sqlite3"
    database.parent.mkdir()
    spoil(database)
    with _start(tmp_path) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2 and "ready" not in out and "Traceback" not in err
    assert f"cannot use the state database {database}: " in err and message in err


def test_unknown_default_scenario_refuses_to_start(tmp_path):
    with _start(tmp_path, "--scenario", "no-such-visit") as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "no-such-visit" in err and "primary-care-visit" in err


def test_s3_endpoint_without_boto3_refuses_to_start_saying_what_to_install(tmp_path):
    """boto3 is an extra (``s3``): without it, --s3-endpoint-url is a configuration
    error naming the option and the install, not a traceback."""
    hidden = tmp_path / "no-boto3"
    (hidden / "boto3").mkdir(parents=True)
    (hidden / "boto3" / "__init__.py").write_text("raise ImportError('No module named boto3')\n")
    env = {"PYTHONPATH": str(hidden)}
    with _start(tmp_path, "--s3-endpoint-url", "http://127.0.0.1:9", env=env) as process:
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "--s3-endpoint-url http://127.0.0.1:9" in err
    assert "pip install 'medscribe-emulator[s3]'" in err
    assert "Traceback" not in err and "ready" not in out


def test_a_bracketed_ipv6_host_is_its_address():
    _, _, settings = parse_settings(["--host", "[::1]"], environ={})
    assert settings.host == "::1"


def test_a_port_in_use_is_blamed_on_its_variable_not_the_hosts(tmp_path, monkeypatch, capsys):
    """With the image's variables, a cleartext port in use read "cannot listen on
    0.0.0.0:8080: Address already in use (set by MEDSCRIBE_HOST)": the host's
    value was in the text, the port's variable nowhere, nor which port it was."""
    import socket

    from emulator import cli

    for name in [name for name in os.environ if name.startswith("MEDSCRIBE_")]:
        monkeypatch.delenv(name)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("MEDSCRIBE_HOST", "127.0.0.1")
        monkeypatch.setenv("MEDSCRIBE_H2C_PORT", str(port))
        assert cli.main(["--port", "0", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"medscribe-emulator: cannot listen on 127.0.0.1:{port}, the cleartext port "
        f"(MEDSCRIBE_HOST (--host) 127.0.0.1, MEDSCRIBE_H2C_PORT (--h2c-port) {port}): "
        "Address already in use\n"
    )


def test_a_message_naming_its_option_is_not_also_blamed_on_another_with_that_value(tmp_path):
    """One PEM file given as both certificate and key: the certificate's problem
    was said to be "set by MEDSCRIBE_KEYFILE" too."""
    from emulator.cli import as_given

    both = str(tmp_path / "both.pem")
    environ = {"MEDSCRIBE_CERTFILE": both, "MEDSCRIBE_KEYFILE": both}
    _, _, settings = parse_settings([], environ=environ)
    assert as_given(f"--certfile {both}: not a PEM certificate", settings) == (
        f"MEDSCRIBE_CERTFILE (--certfile) {both}: not a PEM certificate"
    )
    # A message naming no option still names the variable its value came from.
    assert as_given(f"{both}: cannot be read", settings) == (
        f"{both}: cannot be read (set by MEDSCRIBE_CERTFILE, MEDSCRIBE_KEYFILE)"
    )


def test_port_in_use_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with subprocess.Popen(
            [*_command(), "--port", str(port), "--h2c-port", "0", "--state-dir", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert (
        f"cannot listen on 127.0.0.1:{port}, the TLS port (--host 127.0.0.1, --port {port})" in err
    )
    assert "Traceback" not in err


def test_each_session_logs_one_start_and_one_end_line(tmp_path):
    import asyncio
    import uuid

    from .support import run_session

    with _start(tmp_path) as process, _stopped(process):
        ready = _read_ready(process)

        async def one() -> None:
            from emulator.sdk import make_client

            client = await make_client(endpoint_url=ready["https"], ca_file=ready["ca"])
            result = await run_session(client, str(uuid.uuid4()), audio=b"\0" * 32000)
            assert result.error is None

        asyncio.run(one())
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        err = process.stderr.read()
    assert len(re.findall(r"session \S+ started", err)) == 1
    assert len(re.findall(r"session \S+ ended: COMPLETED", err)) == 1
    # hypercorn's "Running on ... (CTRL + C to quit)", twice, under "hypercorn.error".
    assert "Running on" not in err and "hypercorn.error" not in err


def test_debug_logging_is_the_emulators_not_the_admin_token(tmp_path):
    """hpack logged every decoded header at debug, the admin token among them, and
    Faker's locale look-ups were most of a session's lines."""
    import h2.config
    import h2.connection
    import h2.events

    token = "s3cr3t-admin-token"
    with _start(tmp_path, "--log-level", "debug", "--admin-token", token) as process:
        with _stopped(process):
            ready = _read_ready(process)
            host, port = ready["h2c"].removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                conn.initiate_connection()
                conn.send_headers(
                    1,
                    [
                        (":method", "GET"),
                        (":scheme", "http"),
                        (":authority", f"{host}:{port}"),
                        (":path", "/_emulator/sessions"),
                        ("authorization", f"Bearer {token}"),
                    ],
                    end_stream=True,
                )
                sock.sendall(conn.data_to_send())
                answered = False
                while not answered:
                    data = sock.recv(65536)
                    assert data, "the connection closed before an answer"
                    for event in conn.receive_data(data):
                        answered |= isinstance(event, h2.events.ResponseReceived)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
            err = process.stderr.read()
    assert token not in err
    assert re.search(r"DEBUG medscribe", err) or re.search(r"INFO medscribe", err), err
    assert not re.search(r"DEBUG (hpack|h2|faker)\b", err), err


def test_a_sigterm_before_the_commands_own_handler_ends_it_with_143(monkeypatch, capsys):
    """As a container's PID 1 a SIGTERM has no default action: one sent while the
    server started up was lost, and docker stop waited 10 s to kill it."""
    import time

    from emulator import __main__ as entry
    from emulator import cli

    def terminated_while_loading(argv=None):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises out of this
        raise AssertionError("the SIGTERM was not handled")

    monkeypatch.setattr(cli, "main", terminated_while_loading)
    before = signal.getsignal(signal.SIGTERM)
    assert entry.console() == 143
    assert signal.getsignal(signal.SIGTERM) is before  # put back for whoever runs next
    assert capsys.readouterr().err == "medscribe-emulator: SIGTERM received: stopped\n"


def test_a_state_dir_locked_from_another_container_names_its_host(tmp_path):
    """The holder's process id is of its own container's namespace: alone it named
    nothing, or another process, in the refused container."""
    import fcntl

    from emulator.errors import ConfigError
    from emulator.server import STATE_LOCK, claim_state_dir

    with open(tmp_path / STATE_LOCK, "w", encoding="ascii") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        held.write("18 3f2a9c1b7d4e\n")
        held.flush()
        with pytest.raises(ConfigError) as caught:
            claim_state_dir(tmp_path)
    assert "in use by another emulator (process 18 on host 3f2a9c1b7d4e, another " in str(
        caught.value
    )
    mine = claim_state_dir(tmp_path)  # free again: it records its own host
    assert mine is not None
    with mine:
        assert (tmp_path / STATE_LOCK).read_text() == f"{os.getpid()} {socket.gethostname()}\n"


def test_the_log_escapes_what_a_client_sent_and_gives_utc_times(tmp_path):
    """A header's escape sequence (ESC, BEL) reaches the server log as text
    (``\\x1b``), not as bytes a terminal or a CI log viewer would act on, and a
    UTF-8 value reads as sent; each line's time is UTC to the millisecond, as
    the journal and Get give times."""
    with _start(tmp_path, "--log-level", "info") as process, _stopped(process):
        ready = _read_ready(process)
        client = H2Client("127.0.0.1", urllib.parse.urlsplit(ready["h2c"]).port)
        try:
            headers = dict(STREAM_HEADERS)
            headers["x-amzn-medscribe-session-id"] = "\x1b[2K\x1b[32mALL TESTS PASSED\x1b[0m"
            headers["x-amzn-medscribe-language-code"] = "ën-US\x07"
            stream_id = client.request({k: v.encode() for k, v in headers.items()}, end_stream=True)
            response = client.wait(stream_id)
        finally:
            client.close()
        assert response["headers"][":status"] == "400"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        err = process.stderr.read()
    assert "\x1b" not in err and "\x07" not in err
    [line] = [line for line in err.splitlines() if " rejected: ValidationException" in line]
    assert "(session \\x1b[2K\\x1b[32mALL TESTS PASSED\\x1b[0m)" in line
    assert "Value 'ën-US\\x07' at 'x-amzn-medscribe-language-code'" in line
    assert all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) ", line)
        for line in err.splitlines()
        if line.strip()
    ), err


def test_quota_numbers_given_without_quotas_are_said_to_be_ignored(tmp_path):
    """A test that set a quota low to reach it in seconds, and forgot --quotas,
    passed for the wrong reason; now the log says so, as for unused key pairs."""
    err = _log_of_a_clean_run(tmp_path, "--quota-start-tps", "1", QUOTA_GET_TPS="1")
    assert (
        "--quota-start-tps, --quota-get-tps: ignored without --quotas (no per-key quota applies)"
    ) in err
    err = _log_of_a_clean_run(tmp_path, "--quotas", "--quota-start-tps", "1")
    assert "ignored without --quotas" not in err


def test_a_paused_sessions_end_line_says_why(tmp_path):
    """A client ending its input, a stream reset and the emulator stopping under a
    stream all logged "ended: PAUSED" alike: the first things to tell apart when
    a flaky CI run is looked into."""
    import time

    from .support import H2Client, admin, pcm_tone
    from .test_stream_wire import audio, config_event, headers

    names = ("closed", "reset", "stopped", "failed", "ended-in-the-grace")
    ids = {name: new_session_id() for name in names}
    body = config_event() + audio(pcm_tone(0.2))
    refused = config_event({})  # a configuration without its channel definitions
    with _start(tmp_path) as process, _stopped(process):
        ready = _read_ready(process)
        client = H2Client("127.0.0.1", int(ready["h2c"].rsplit(":", 1)[1]))
        try:
            closed = client.request(headers(ids["closed"]))
            client.send(closed, body, end_stream=True)
            reset = client.request(headers(ids["reset"]))
            client.send(reset, body)
            stopped = client.request(headers(ids["stopped"]))
            client.send(stopped, body)
            grace = client.request(headers(ids["ended-in-the-grace"]))
            client.send(grace, body)

            def status(session_id: str) -> str | None:
                code, details = admin(ready["h2c"], "GET", f"/_emulator/sessions/{session_id}")
                return details.get("status") if code == 200 else None

            deadline = time.monotonic() + 10
            while status(ids["reset"]) != "IN_PROGRESS" or any(
                status(ids[name]) is None for name in ("stopped", "ended-in-the-grace")
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client.conn.reset_stream(reset)
            client._flush()
            while status(ids["closed"]) != "PAUSED" or status(ids["reset"]) != "PAUSED":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            failed = client.request(headers(ids["failed"]))
            client.send(failed, refused, end_stream=True)
            resumed = client.request(headers(ids["closed"]))  # a resume it refuses
            client.send(resumed, refused, end_stream=True)
            client.wait(failed)
            client.wait(resumed)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # within the stop's grace second: the client's own end
            client.send(grace, b"", end_stream=True)
            process.wait(timeout=10)
        finally:
            client.close()
        err = process.stderr.read()
    said = {
        (name, found.group(1), found.group(2))
        for name, session_id in ids.items()
        for found in re.finditer(
            rf"session {session_id} ended: (\w+) \(stream \d, scenario \S+\) "
            r".* results? sent \((.*)\)$",
            err,
            re.M,
        )
    }
    invalid = (
        "validationException: 1 validation error detected: Value null at "
        "'configurationEvent.postStreamActionSettings' failed to satisfy constraint: Member "
        "must not be null"
    )
    assert said == {
        ("closed", "PAUSED", "its input ended without END_OF_SESSION"),
        ("closed", "PAUSED", f"its resume was refused: {invalid}"),
        ("reset", "PAUSED", "the stream was reset or its connection closed"),
        ("stopped", "PAUSED", "the emulator stopped"),
        ("ended-in-the-grace", "PAUSED", "its input ended without END_OF_SESSION"),
        ("failed", "FAILED", invalid),
    }, err


def test_a_host_that_does_not_resolve_is_blamed_alone(tmp_path, monkeypatch, capsys):
    """An unresolvable --host read "cannot listen on x:0, the TLS port (--host x,
    --port 0)": the port had nothing to do with it."""
    from emulator import cli

    for name in [name for name in os.environ if name.startswith("MEDSCRIBE_")]:
        monkeypatch.delenv(name)
    host = "no-such-host.invalid"
    assert cli.main(["--host", host, "--port", "0", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"medscribe-emulator: cannot listen on --host {host}: "), err
    assert "port" not in err
