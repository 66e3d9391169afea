"""Local TLS material: a private CA and a server certificate it signs.

The real SDK's CRT transport only negotiates HTTP/2 (by ALPN) over ``https://``,
so the emulator needs a certificate that clients can be told to trust. Users
trust one file, ``ca.pem``; the server certificate can be re-issued (new host
names, near expiry) without them changing anything.

Files under ``state_dir``::

    ca.pem             the CA certificate users trust
    ca-key.pem         the CA private key (0600)
    server.pem         the server certificate, signed by the CA
    server-key.pem     the server private key (0600)
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError
from .logs import get_logger

try:  # POSIX only; elsewhere the atomic renames alone have to do.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TLSFiles",
    "DEFAULT_HOSTNAMES",
    "CA_VALIDITY",
    "SERVER_VALIDITY",
    "RENEW_BEFORE",
    "CA_NAME",
    "ensure_certificates",
    "check_hostname",
    "check_key_pair",
]

#: Names every server certificate covers. ``streaming.localhost`` because the
#: model's ``hostPrefix: "streaming."`` makes boto3 call ``streaming.<host>``.
DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost", "streaming.localhost", "127.0.0.1", "::1")

#: A CA that outlives many server certificates, so users trust it once.
CA_VALIDITY = datetime.timedelta(days=3650)
#: Apple platforms (and clients copying their rules) reject TLS server
#: certificates valid for more than 825 days.
SERVER_VALIDITY = datetime.timedelta(days=825)
#: Re-issue this long before expiry so a running emulator never serves a dead cert.
RENEW_BEFORE = datetime.timedelta(days=30)
#: Back-date ``not_valid_before`` to tolerate clients whose clock runs behind.
_CLOCK_SKEW = datetime.timedelta(hours=1)

log = get_logger("medscribe.tls")

#: The local CA's common name: what tells a client its endpoint's certificate is
#: an emulator's (the stream command then names the CA to give it).
CA_NAME = "medscribe-emulator local CA"
_SERVER_NAME = "medscribe-emulator"

_PUBLIC_MODE = 0o644
_PRIVATE_MODE = 0o600

type _SAN = x509.DNSName | x509.IPAddress


@dataclass(frozen=True, kw_only=True)
class TLSFiles:
    """Paths of the TLS material in a state directory."""

    ca_cert: Path
    cert: Path
    key: Path


def ensure_certificates(state_dir: Path, *, hostnames: Sequence[str] = ()) -> TLSFiles:
    """Create, or reuse, a local CA and a server certificate under ``state_dir``.

    The CA is kept while it is valid for at least :data:`RENEW_BEFORE` and its
    key matches. The server certificate is re-issued when it does not cover
    :data:`DEFAULT_HOSTNAMES` plus ``hostnames`` (IP literals become IP SANs,
    anything else DNS SANs), expires within :data:`RENEW_BEFORE`, or was not
    signed by the current CA; a re-issued certificate keeps the names of the one
    it replaces, so emulators asking for different names do not undo each other.
    Corrupt files are replaced, saying so in the log; a file that cannot be read
    (its permissions) stops with an :class:`OSError` naming it. Every write is a temp file plus
    :func:`os.replace`, under an advisory lock on POSIX.

    Returns the :class:`TLSFiles` paths. Raises :class:`ValueError` for an empty
    or non-ASCII host name, :class:`OSError` when ``state_dir`` is unusable, and
    :class:`~emulator.errors.ConfigError` when its lock file is a symlink. A private
    key open to others is made 0600 when this user owns it, saying so.
    """
    state_dir = Path(state_dir)
    wanted = _san_set([*DEFAULT_HOSTNAMES, *hostnames])
    files = TLSFiles(
        ca_cert=state_dir / "ca.pem",
        cert=state_dir / "server.pem",
        key=state_dir / "server-key.pem",
    )
    ca_key_path = state_dir / "ca-key.pem"
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    with _locked(state_dir / ".tls.lock"):
        ca = _load_pair(files.ca_cert, ca_key_path, ca=True)
        if ca is not None and (problem := _ca_problem(ca[0], now)) is not None:
            log.warning(
                "%s: the local CA %s; issuing a new one: clients that trust the old one "
                "must be given the new %s",
                state_dir,
                problem,
                files.ca_cert.name,
            )
            ca = None
        if ca is None:
            ca = _issue_ca(now)
            _write(ca_key_path, _key_pem(ca[1]), mode=_PRIVATE_MODE)
            _write(files.ca_cert, _cert_pem(ca[0]), mode=_PUBLIC_MODE)
        ca_cert, ca_key = ca

        _keep_private(
            ca_key_path, files.ca_cert, "issue certificates that clients trusting ca.pem accept"
        )
        server = _load_pair(files.cert, files.key, ca=False)
        if server is None or not _server_usable(server[0], ca_cert, wanted, now):
            names = wanted | (_sans_of(server[0]) if server is not None else set())
            cert, key = _issue_server(ca_cert, ca_key, names, now)
            _write(files.key, _key_pem(key), mode=_PRIVATE_MODE)
            _write(files.cert, _cert_pem(cert), mode=_PUBLIC_MODE)
        _keep_private(files.key, files.cert, "pass for this emulator to its clients")
    return files


def _keep_private(key: Path, cert: Path, reader_could: str) -> None:
    """Warn when the private ``key`` is open to its group or others (found so in a
    state directory: the emulator writes its keys 0600), and make it 0600 when
    this user owns it. Whoever read it could ``reader_could``; deleting it and its
    ``cert`` has new ones issued. Nothing on Windows, whose files have no such modes."""
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows
        return
    try:
        info = os.stat(key)
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return
    who = " and ".join(
        name for name, bits in (("its group", 0o070), ("others", 0o007)) if mode & bits
    )
    how = "readable" if mode & 0o044 else "writable"
    if info.st_uid != os.geteuid():
        log.warning(
            "%s is %s by %s (mode %04o) and another user's (uid %d): left as it is. Whoever "
            "reads it can %s: use a state directory of your own",
            key,
            how,
            who,
            mode,
            info.st_uid,
            reader_could,
        )
        return
    try:
        os.chmod(key, _PRIVATE_MODE)
    except OSError as error:
        done = f"could not make it 0600 ({error.strerror or error})"
    else:
        done = "made it 0600"
    log.warning(
        "%s was %s by %s (mode %04o): %s. Whoever read it could %s: if anyone else "
        "could have, delete it and %s to have new ones issued",
        key,
        how,
        who,
        mode,
        done,
        reader_could,
        cert.name,
    )


# -- names -------------------------------------------------------------------


def _san_set(hostnames: Sequence[str]) -> set[_SAN]:
    return {_san(name) for name in hostnames}


def check_key_pair(certfile: Path, keyfile: Path) -> None:
    """Raise :class:`~emulator.errors.ConfigError` saying which file is wrong when
    the certificate and key given with ``--certfile``/``--keyfile`` cannot serve
    TLS (missing, unreadable, not PEM, or not a pair): checked before the server
    says it is ready, where hypercorn found out only after, in a traceback."""
    import ssl

    from .errors import ConfigError

    def read(flag: str, path: Path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(f"{flag} {path}: {error.strerror or error}") from None

    cert, key = read("--certfile", certfile), read("--keyfile", keyfile)
    try:
        x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ConfigError(f"--certfile {certfile}: not a PEM certificate") from None
    try:
        serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"--keyfile {keyfile}: not an unencrypted PEM private key ({error})"
        ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except OSError as error:  # ssl.SSLError included
        raise ConfigError(
            f"--keyfile {keyfile} is not the private key of --certfile {certfile} "
            f"({getattr(error, 'reason', None) or error})"
        ) from None


def check_hostname(hostname: str) -> None:
    """Raise :class:`ValueError`, saying why, when ``hostname`` cannot name the
    certificate's subject (empty, or not ASCII)."""
    _san(hostname)


def _san(hostname: str) -> _SAN:
    name = hostname.strip().removeprefix("[").removesuffix("]")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name:
        raise ValueError(f"empty host name in {hostname!r}")
    if not name.isascii():
        raise ValueError(f"host name {hostname!r} must be ASCII (use its xn-- form)")
    dns = name.rstrip(".")
    labels = dns.split(".")
    if labels[0] == "*" and len(labels) > 1:  # a wildcard certificate's first label
        labels = labels[1:]
    if len(dns) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"host name {hostname!r} is not a DNS name: dot-separated labels of 1-63 "
            "letters, digits, hyphens (not first or last) and underscores, as docker "
            "service names may have, up to 253 characters; or an IP address"
        )
    # DNS names compare case-insensitively (RFC 4343); store one spelling.
    return x509.DNSName(dns.lower())


#: One label of a host name (RFC 1123), with the underscores of container names.
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _sans_of(cert: x509.Certificate) -> set[_SAN]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    names: set[_SAN] = set()
    for general_name in ext.value:
        if isinstance(general_name, x509.DNSName):
            names.add(x509.DNSName(general_name.value.lower()))
        elif isinstance(general_name, x509.IPAddress):
            names.add(general_name)
    return names


# -- checks ------------------------------------------------------------------


def _load_pair(
    cert_path: Path, key_path: Path, *, ca: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """Return the certificate and its key, or None if missing, corrupt or mismatched
    (logged when there was something to replace: for the ``ca``, clients that
    trust the old one must be given the new one).

    Raises :class:`OSError` naming the file when one exists but cannot be read
    (its permissions): replacing it would throw away a CA that clients trust.
    """
    try:
        cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    except FileNotFoundError as error:
        if not cert_path.exists() and not key_path.exists():
            return None  # a first start: nothing to replace
        problem = f"{error.filename} is missing"
    except OSError as error:
        raise OSError(
            error.errno,
            f"cannot read {error.filename or cert_path}: {error.strerror} (the emulator's "
            "TLS files: fix their owner or permissions, or remove them to have new ones "
            "issued)",
        ) from None
    else:
        parsed = _parse_pair(cert_bytes, key_bytes)
        if isinstance(parsed, tuple):
            return parsed
        problem = parsed
    # Named by both files: "the state directory" left a user looking for which.
    where = f"{cert_path} (and {key_path.name})"
    if ca:
        log.warning(
            "%s: %s; issuing a new local CA: clients that trust the old one must be given "
            "the new %s",
            where,
            problem,
            cert_path.name,
        )
    else:
        log.info("%s: %s; issuing a new server certificate", where, problem)
    return None


def _parse_pair(
    cert_bytes: bytes, key_bytes: bytes
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | str:
    """The certificate and key read from PEM, or what is wrong with them."""
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as error:
        return f"not a PEM certificate and key ({error})"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return "the key is not an EC key"
    if key.public_key() != cert.public_key():
        return "the key does not match the certificate"
    return cert, key


def _ca_problem(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    """Why the CA ``cert`` is not kept (for a log line), or None: it must be valid
    now and for :data:`RENEW_BEFORE` more, and a CA."""
    if now < cert.not_valid_before_utc:
        return f"is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    if now > cert.not_valid_after_utc - RENEW_BEFORE:
        return f"expires on {cert.not_valid_after_utc:%Y-%m-%d}, within {RENEW_BEFORE.days} days"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    return None if constraints is not None and constraints.ca else "is not a CA certificate"


def _server_usable(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    wanted: set[_SAN],
    now: datetime.datetime,
) -> bool:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc - RENEW_BEFORE:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return wanted <= _sans_of(cert)


# -- issuing -----------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: accepted by OpenSSL, s2n (awscrt) and every mainstream client, and fast.
    return ec.generate_private_key(ec.SECP256R1())


def _issue_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        # path_length=0: this CA signs leaf certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_server(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: set[_SAN],
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # Never outlive the CA: a chain with an expired issuer fails anyway.
    not_after = min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _SERVER_NAME)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_sorted(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Strict verifiers (Python 3.13's VERIFY_X509_STRICT) require the AKI.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _sorted(names: set[_SAN]) -> list[_SAN]:
    # A stable order keeps the certificate readable and diffs meaningful.
    dns = sorted((n for n in names if isinstance(n, x509.DNSName)), key=lambda n: n.value)
    ips = sorted(
        (n for n in names if isinstance(n, x509.IPAddress)),
        key=lambda n: (n.value.version, n.value),
    )
    return [*dns, *ips]


# -- files -------------------------------------------------------------------


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` atomically so a concurrent reader sees old or new, never half."""
    # mkstemp creates the file 0600, so a key is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise check-and-issue across processes sharing one state directory.

    Without it two emulators starting together could each issue a CA and leave
    one's certificate beside the other's key.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    # Not through a symlink planted there: opening it would create its target.
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        if not lock_path.is_symlink():
            raise
        raise ConfigError(
            f"{lock_path} is a symlink (to {os.readlink(lock_path)}): the emulator does not "
            "follow one there; remove it"
        ) from None
    with os.fdopen(fd, "r+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
