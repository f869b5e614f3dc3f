"""Making the TLS material of a pool: a CA, and syncer certificates that name their identity.

Owns ``pysyncer tls ca create`` and ``pysyncer tls cert create`` (what they write, where,
with which modes) and the same functions for the demo and the tests: :func:`create_ca`
writes ``ca.pem`` and ``ca-key.pem``; :func:`create_cert` writes ``<dc>-<node>.pem`` and
``<dc>-<node>-key.pem``, a certificate for both TLS server and client use whose subject
alternative names are the syncer's identity (:mod:`pysyncer.rpc.identity`) plus any extra
DNS names or IP addresses. Keys are ECDSA P-256, written with mode 0600; nothing is ever
overwritten. Uses ``cryptography`` only; must not import gRPC, the daemon or the sync layer.

Imports: errors, rpc.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pysyncer.errors import PysyncerError
from pysyncer.rpc.identity import check_names, dns_name, spiffe_uri

__all__ = [
    "CA_CERT_FILE",
    "CA_DAYS",
    "CA_KEY_FILE",
    "CERT_DAYS",
    "CertFiles",
    "TlsFileError",
    "cert_file_names",
    "create_ca",
    "create_cert",
]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CA_DAYS = 1825  # five years, as `consul tls ca create`
CERT_DAYS = 365
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate a little clock skew between hosts


class TlsFileError(PysyncerError, OSError):
    """A TLS file cannot be written (it exists) or read (missing, not PEM)."""


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The two files one command wrote."""

    cert: Path
    key: Path


def cert_file_names(dc: str, node: str) -> tuple[str, str]:
    """(``<dc>-<node>.pem``, ``<dc>-<node>-key.pem``)."""
    return f"{dc}-{node}.pem", f"{dc}-{node}-key.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet, created with ``mode`` (not the umask's)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise TlsFileError(f"{path} exists: refusing to overwrite it") from None
    except OSError as exc:
        raise TlsFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise TlsFileError(f"{path} exists: refusing to overwrite it")


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates; a syncer signs its TLS handshakes (ECDSA: and agrees keys)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not signs_certificates,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _validity(days: int, now: datetime.datetime | None) -> tuple[datetime.datetime, ...]:
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    start = now or datetime.datetime.now(datetime.UTC)
    return start - _BACKDATE, start + datetime.timedelta(days=days)


def create_ca(
    directory: Path,
    *,
    days: int = CA_DAYS,
    common_name: str = "pysyncer CA",
    now: datetime.datetime | None = None,
) -> CertFiles:
    """Write ``ca.pem`` and ``ca-key.pem`` (0600) under ``directory`` (created 0700)."""
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    _refuse_existing(cert_path, key_path)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days, now)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_new(key_path, _key_pem(key), 0o600)
    _write_new(cert_path, _cert_pem(cert), 0o644)
    return CertFiles(cert_path, key_path)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise TlsFileError(
            f"cannot read the CA in {ca_dir}: {exc.strerror or exc} "
            "(create one with 'pysyncer tls ca create')"
        ) from None
    except (ValueError, TypeError) as exc:
        raise TlsFileError(f"the CA in {ca_dir} is not a PEM certificate and key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsFileError(f"{key_path} is not an ECDSA key (made by 'pysyncer tls ca create')")
    return cert, key


def _extra_san(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        if not text or not text.isascii() or any(c.isspace() for c in text):
            raise ValueError(f"--san {text!r} is neither an IP address nor a DNS name") from None
        return x509.DNSName(text)


def create_cert(
    dc: str,
    node: str,
    *,
    ca_dir: Path,
    out_dir: Path,
    days: int = CERT_DAYS,
    extra_sans: Sequence[str] = (),
    now: datetime.datetime | None = None,
) -> CertFiles:
    """Write ``<dc>-<node>.pem`` and ``<dc>-<node>-key.pem`` (0600) under ``out_dir``,
    signed by the CA of ``ca_dir``; valid ``days`` days from ``now``."""
    check_names(dc, node)
    extra = [_extra_san(text) for text in extra_sans]
    cert_name, key_name = cert_file_names(dc, node)
    cert_path, key_path = out_dir / cert_name, out_dir / key_name
    _refuse_existing(cert_path, key_path)
    ca_cert, ca_key = _load_ca(ca_dir)
    start, end = _validity(days, now)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_uri(dc, node)),
        x509.DNSName(dns_name(dc, node)),
        *extra,
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{node}.{dc}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_new(key_path, _key_pem(key), 0o600)
    _write_new(cert_path, _cert_pem(cert), 0o644)
    return CertFiles(cert_path, key_path)
