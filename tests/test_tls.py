"""Rules of the local CA and server certificate in emulator.tls."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from emulator.tls import SERVER_VALIDITY, TLSFiles, ensure_certificates


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(path: Path) -> tuple[set[str], set[str]]:
    san = _cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return dns, ips


def _snapshot(state_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state_dir.glob("*.pem"))}


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return ensure_certificates(tmp_path, hostnames=["emulator.test", "10.1.2.3"])


def test_files_are_written_under_the_state_dir(tmp_path: Path, files: TLSFiles) -> None:
    """ca.pem, ca-key.pem, server.pem and server-key.pem land in state_dir."""
    assert files == TLSFiles(
        ca_cert=tmp_path / "ca.pem", cert=tmp_path / "server.pem", key=tmp_path / "server-key.pem"
    )
    assert sorted(p.name for p in tmp_path.glob("*.pem")) == [
        "ca-key.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]


def test_server_cert_names_defaults_and_extra_hosts(files: TLSFiles) -> None:
    """Names become DNS SANs and IP literals IP SANs, defaults included."""
    dns, ips = _sans(files.cert)
    assert dns == {"localhost", "streaming.localhost", "emulator.test"}
    assert ips == {"127.0.0.1", "::1", "10.1.2.3"}


def test_ca_is_a_ten_year_cert_signing_ca(files: TLSFiles) -> None:
    """The CA is self-signed, CA:true (critical), keyCertSign, valid about ten years."""
    ca = _cert(files.ca_cert)
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3600) < lifetime < datetime.timedelta(days=3700)


def test_server_cert_is_a_server_auth_leaf_within_825_days(files: TLSFiles) -> None:
    """The server cert is CA:false, serverAuth, signed by the CA, and at most 825 days long."""
    cert = _cert(files.cert)
    cert.verify_directly_issued_by(_cert(files.ca_cert))
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    # The validity window includes the back-dating for clock skew.
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_after_utc <= now + SERVER_VALIDITY
    assert cert.not_valid_after_utc > now + SERVER_VALIDITY - datetime.timedelta(days=1)


def test_key_files_are_private(files: TLSFiles) -> None:
    """ca-key.pem and server-key.pem are mode 0600."""
    for key in (files.key, files.ca_cert.with_name("ca-key.pem")):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_second_call_reuses_every_file(tmp_path: Path, files: TLSFiles) -> None:
    """A second call with names already covered leaves all files byte-identical."""
    before = _snapshot(tmp_path)
    again = ensure_certificates(tmp_path, hostnames=["10.1.2.3", "EMULATOR.test"])
    assert again == files
    assert _snapshot(tmp_path) == before


def test_new_hostname_reissues_server_cert_and_keeps_ca(tmp_path: Path, files: TLSFiles) -> None:
    """A name not covered re-issues the server cert (old names kept); the CA stays."""
    before = _snapshot(tmp_path)
    ensure_certificates(tmp_path, hostnames=["other.test"])
    after = _snapshot(tmp_path)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["ca-key.pem"] == before["ca-key.pem"]
    assert after["server.pem"] != before["server.pem"]
    assert after["server-key.pem"] != before["server-key.pem"]
    dns, ips = _sans(files.cert)
    assert {"other.test", "emulator.test", "localhost"} <= dns
    assert "10.1.2.3" in ips


def test_server_cert_not_signed_by_current_ca_is_reissued(tmp_path: Path, files: TLSFiles) -> None:
    """Replacing the CA makes the next call issue a server cert the new CA signed."""
    (tmp_path / "ca.pem").unlink()
    ensure_certificates(tmp_path)
    _cert(files.cert).verify_directly_issued_by(_cert(files.ca_cert))


def test_corrupt_server_cert_is_replaced(tmp_path: Path, files: TLSFiles) -> None:
    """An unreadable server.pem is re-issued rather than raised."""
    files.cert.write_text("not a certificate")
    ensure_certificates(tmp_path)
    _cert(files.cert).verify_directly_issued_by(_cert(files.ca_cert))


def test_concurrent_first_calls_agree_on_one_consistent_set(tmp_path: Path) -> None:
    """Callers racing on an empty state dir end with a server cert and key from one CA."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ensure_certificates(tmp_path), range(4)))
    assert len(set(results)) == 1
    files = results[0]
    ca = _cert(files.ca_cert)
    _cert(files.cert).verify_directly_issued_by(ca)
    # A mismatched key would make load_cert_chain fail.
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files.cert, files.key)
    ca_key = serialization.load_pem_private_key(
        (tmp_path / "ca-key.pem").read_bytes(), password=None
    )
    assert ca_key.public_key() == ca.public_key()
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_empty_hostname_is_rejected(tmp_path: Path) -> None:
    """An empty host name raises ValueError."""
    with pytest.raises(ValueError, match="empty host name"):
        ensure_certificates(tmp_path, hostnames=[" "])


def test_ipv6_literal_in_brackets_becomes_ip_san(tmp_path: Path) -> None:
    """A bracketed IPv6 literal, as in a URL, becomes an IP SAN."""
    files = ensure_certificates(tmp_path, hostnames=["[fd00::1]"])
    _, ips = _sans(files.cert)
    assert str(ipaddress.ip_address("fd00::1")) in ips


@pytest.mark.parametrize("server_hostname", ["localhost", "streaming.localhost"])
def test_python_ssl_client_trusting_ca_accepts_server(
    files: TLSFiles, server_hostname: str
) -> None:
    """A Python ssl client trusting only ca.pem completes a handshake with the server cert."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    # Python 3.13 sets this by default; check the certificates pass it on 3.12 too.
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        errors: list[BaseException] = []

        def accept_one() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(4))
            except BaseException as exc:  # reported to the test thread below
                errors.append(exc)

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                tls.sendall(b"ping")
                assert tls.recv(4) == b"ping"
                assert tls.getpeercert()["subjectAltName"]
        thread.join(timeout=10)
        assert not errors


def test_python_ssl_client_rejects_name_not_in_cert(files: TLSFiles) -> None:
    """A client asking for a name the cert does not cover fails verification."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert, files.key)
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept_one() -> None:
            conn, _ = listener.accept()
            try:
                server_ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()  # the client aborts the handshake: expected

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                client_ctx.wrap_socket(raw, server_hostname="not-covered.test")
        thread.join(timeout=10)


def test_a_corrupt_or_half_missing_ca_is_replaced_saying_clients_need_the_new_one(
    tmp_path: Path, files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """A replaced CA breaks every client that trusts the old one: it was replaced
    without a word, which left a TLS failure with nothing in the log to explain it."""
    caplog.set_level("INFO", logger="medscribe.tls")
    files.ca_cert.write_text("garbage")
    ensure_certificates(tmp_path)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "not a PEM certificate and key" in warned[0]
    assert warned[0].startswith(f"{files.ca_cert} (and ca-key.pem): not a PEM")
    assert "issuing a new local CA: clients that trust the old one" in warned[0]
    caplog.clear()
    (tmp_path / "ca-key.pem").unlink()
    ensure_certificates(tmp_path)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and f"{tmp_path / 'ca-key.pem'} is missing" in warned[0]
    _cert(files.cert).verify_directly_issued_by(_cert(files.ca_cert))


def test_a_first_start_and_a_reuse_say_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="medscribe.tls")
    ensure_certificates(tmp_path)
    ensure_certificates(tmp_path)
    assert caplog.records == []


def test_a_tls_file_that_cannot_be_read_stops_naming_it_and_keeps_the_ca(
    tmp_path: Path, files: TLSFiles
) -> None:
    """An unreadable CA key (its permissions; a directory stands in for them here,
    as the tests may run as root) was taken for a missing one and the CA replaced."""
    before = files.ca_cert.read_bytes()
    key = tmp_path / "ca-key.pem"
    key.unlink()
    key.mkdir()
    with pytest.raises(OSError, match=rf"cannot read {key}: Is a directory .*permissions"):
        ensure_certificates(tmp_path)
    assert files.ca_cert.read_bytes() == before


def test_an_emulator_listening_on_one_address_has_it_in_its_certificate(tmp_path: Path) -> None:
    """``--host 127.0.0.2`` printed ``https://127.0.0.2:PORT`` with a CA whose server
    certificate did not name that address: a client trusting the CA failed TLS."""
    import json
    import urllib.request

    from emulator.server import Settings

    from .support import running_emulator

    settings = Settings(host="127.0.0.2", port=0, h2c_port=0, state_dir=tmp_path / "state")
    with running_emulator(settings) as running:
        assert running.endpoint_url.startswith("https://127.0.0.2:")
        assert running.ca_file is not None
        context = ssl.create_default_context(cafile=str(running.ca_file))
        url = running.endpoint_url + "/_emulator/health"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            assert json.loads(response.read())["status"] == "ready"
    dns, ips = _sans(tmp_path / "state" / "server.pem")
    assert "127.0.0.2" in ips and "localhost" in dns


def test_a_ca_about_to_expire_is_renewed_saying_when_it_expires(
    tmp_path: Path, files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning read "not valid until" the expiry less 30 days, a date past."""
    from datetime import UTC
    from datetime import datetime as clock

    from emulator.tls import CA_VALIDITY, _cert_pem, _issue_ca, _key_pem

    # Issued a CA_VALIDITY ago and 10 days: 10 days left.
    cert, key = _issue_ca(clock.now(UTC) - CA_VALIDITY + datetime.timedelta(days=10))
    expires = cert.not_valid_after_utc
    files.ca_cert.write_bytes(_cert_pem(cert))
    (tmp_path / "ca-key.pem").write_bytes(_key_pem(key))
    caplog.set_level("INFO", logger="medscribe.tls")
    ensure_certificates(tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"the local CA expires on {expires:%Y-%m-%d}, within 30 days; issuing a new one" in (
        warning
    )
    assert _cert(files.ca_cert).not_valid_after_utc > expires
