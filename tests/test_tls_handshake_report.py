"""A client that does not trust the emulator's CA is told of in the log.

The SDK's CRT client closes a connection whose certificate it refuses and
fails 10-25 s later with "TLS (SSL) negotiation failed", while the emulator
logged nothing: the one place a user looks said everything was fine. Now a
handshake that a client started and did not finish is logged (at most once
every few seconds), and a connection that sent no ClientHello is not.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time

import pytest

from emulator import hypercorn_tcp
from emulator.logs import Throttle

LOGGER = "medscribe.tls"
ADVICE = (
    "it does not trust the emulator's CA (give it <state-dir>/ca.pem, also served at GET "
    "/_emulator/ca.pem; the AWS SDK then closes this way), or it asked for a host name the "
    "certificate does not cover (add it with --tls-hostname)"
)


@pytest.fixture(autouse=True)
def fresh_reports(monkeypatch):
    """Each test starts with no report made, so the interval does not hide one."""
    monkeypatch.setattr(
        hypercorn_tcp, "_HANDSHAKE_REPORTS", Throttle(hypercorn_tcp.HANDSHAKE_REPORT_INTERVAL)
    )


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _reports(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def _wait_for_report(caplog, seconds: float = 10.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while not _reports(caplog) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _reports(caplog)


def test_the_sdks_crt_client_without_the_ca_is_reported(emulator, caplog):
    """The SDK's own TLS stack (awscrt, as its transport uses it) with the
    system's trust store instead of the emulator's CA, as an SDK config whose
    transport lost the CA has: it closes without an alert."""
    from awscrt import http, io

    caplog.set_level(logging.WARNING, logger=LOGGER)
    options = io.ClientTlsContext(io.TlsContextOptions()).new_connection_options()
    options.set_server_name("localhost")
    options.set_alpn_list(["h2"])
    connecting = http.HttpClientConnection.new(
        host_name="127.0.0.1", port=_port(emulator.endpoint_url), tls_connection_options=options
    )
    with pytest.raises(Exception, match="TLS"):
        connecting.result(30)
    [report] = _wait_for_report(caplog)
    assert re.fullmatch(
        r"127\.0\.0\.1:\d+ did not finish its TLS handshake \((it closed the connection|SSL "
        r"handshake is taking longer than [0-9.]+ seconds: aborting the connection)\): maybe "
        + re.escape(ADVICE),
        report,
    ), report


def test_a_client_alert_is_reported_as_refusing_the_certificate(emulator, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    context = ssl.create_default_context()  # the system's CAs: not the emulator's
    with socket.create_connection(("127.0.0.1", _port(emulator.endpoint_url)), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="localhost")
    [report] = _wait_for_report(caplog)
    assert re.fullmatch(
        r"127\.0\.0\.1:\d+ refused the emulator's certificate \(TLSV1_ALERT_UNKNOWN_CA\): "
        r"either " + re.escape(ADVICE),
        report,
    ), report


def test_a_host_name_the_certificate_does_not_cover_is_named_as_a_cause(emulator, caplog):
    """A client that trusts the CA but asks for another name (compose's service
    name without --tls-hostname) was told to give it the CA it had."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    context = ssl.create_default_context(cafile=str(emulator.ca_file))
    with socket.create_connection(("127.0.0.1", _port(emulator.endpoint_url)), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            context.wrap_socket(raw, server_hostname="medscribe")
    [report] = _wait_for_report(caplog)
    assert "refused the emulator's certificate (SSLV3_ALERT_BAD_CERTIFICATE): either" in report
    assert report.endswith(
        "or it asked for a host name the certificate does not cover (add it with --tls-hostname)"
    )


def test_reports_are_at_most_one_per_interval_and_count_the_rest(emulator, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    context = ssl.create_default_context()

    def refuse() -> None:
        port = _port(emulator.endpoint_url)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                context.wrap_socket(raw, server_hostname="localhost")

    refuse()
    assert len(_wait_for_report(caplog)) == 1
    refuse()
    refuse()
    time.sleep(0.3)
    assert len(_reports(caplog)) == 1  # within the interval: counted, not logged
    monkeypatch.setattr(hypercorn_tcp._HANDSHAKE_REPORTS, "_last", float("-inf"))
    refuse()
    deadline = time.monotonic() + 10
    while len(_reports(caplog)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _reports(caplog)[1].endswith("; 2 more since the last report")


def test_a_connection_that_sends_no_client_hello_is_not_reported(emulator, caplog):
    """A port probe (wait-for-port scripts) or bytes that are not TLS."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    port = _port(emulator.endpoint_url)
    socket.create_connection(("127.0.0.1", port), timeout=10).close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x00" * 64)
        sock.settimeout(10)
        while sock.recv(4096):
            pass
    time.sleep(0.5)
    assert _reports(caplog) == []


@pytest.mark.parametrize(
    "error, words",
    [
        (ConnectionResetError, "it closed the connection"),  # asyncio hands over the class
        (ConnectionResetError("Connection lost"), "it closed the connection"),
        (None, "it closed the connection"),
        (TimeoutError, "TimeoutError"),
        (ssl.SSLError(1, "[SSL] record layer failure"), "[SSL] record layer failure"),
    ],
)
def test_a_handshake_error_is_said_in_words(error, words):
    assert hypercorn_tcp._handshake_error(error) == words
