# mypy: disable-error-code="import-untyped"
"""TLS of the sync RPC: credentials with real verification, and the daemon's reloaded files.

Two ways to give TLS to :class:`~pysyncer.rpc.server.SyncServer` and
:class:`~pysyncer.rpc.client.SyncClient`:

* :class:`TlsConfig`: paths of PEM files read once, when credentials are built. A server
  presents ``cert_file``/``key_file``; with ``require_client_cert`` it accepts only clients
  whose certificate ``ca_file`` signed. A client verifies the server against ``ca_file``
  (the system roots when None) and presents its certificate when given.
* :class:`TlsFiles`: the daemon's ``--tls-ca``/``--tls-cert``/``--tls-key``: always mutual
  TLS with syncer identities (:mod:`pysyncer.rpc.identity`). The files are re-read when
  they change (size or mtime): a server picks the new certificate up at its next
  handshake (``grpc.dynamic_ssl_server_credentials``), a client at its next connection.
  A reload that fails (a file half written, a key that does not match, a certificate of
  another syncer) keeps the material in use and logs an ERROR once per change.

A missing or unreadable file at start raises ConfigError naming it. Must not import the
sync layer, gossip or the configuration.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from pysyncer.errors import ConfigError
from pysyncer.rpc.identity import Identity, IdentityError, certificate_identity

__all__ = [
    "TlsConfig",
    "TlsFiles",
    "TlsMaterial",
    "channel_credentials",
    "peer_identity",
    "server_credentials",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Paths of PEM files; ``server_name`` overrides the name checked in the server cert."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    require_client_cert: bool = False
    server_name: str | None = None


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls {what} {path!r} cannot be read: {exc.strerror or exc}") from None


def server_credentials(tls: TlsConfig) -> Any:
    """grpc server credentials; cert and key are required, the CA when clients must auth."""
    if not tls.cert_file or not tls.key_file:
        raise ConfigError("tls: a server needs cert_file and key_file")
    if tls.require_client_cert and not tls.ca_file:
        raise ConfigError("tls: require_client_cert needs ca_file to verify clients with")
    key, cert = _read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file")
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=_read(tls.ca_file, "ca_file"),
        require_client_auth=tls.require_client_cert,
    )


def channel_credentials(tls: TlsConfig) -> Any:
    """grpc channel credentials verifying the server, presenting a client cert if given."""
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls: a client certificate needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "ca_file"),
        private_key=_read(tls.key_file, "key_file"),
        certificate_chain=_read(tls.cert_file, "cert_file"),
    )


# -- the daemon's files, reloaded ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """One consistent read of the CA, certificate and key, checked against each other."""

    ca: bytes
    cert: bytes
    key: bytes
    identity: Identity  # what the certificate names
    cert_expires: float  # Unix time
    ca_expires: float


def _load_material(ca_path: Path, cert_path: Path, key_path: Path) -> TlsMaterial:
    """Read and check the three files; ValueError naming the defect."""
    ca, cert, key = ca_path.read_bytes(), cert_path.read_bytes(), key_path.read_bytes()
    try:
        authorities = x509.load_pem_x509_certificates(ca)
    except ValueError:
        raise ValueError(f"{ca_path} holds no PEM certificate") from None
    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise ValueError(f"{cert_path} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{key_path} holds no unencrypted PEM private key ({exc})") from None
    if private.public_key() != leaf.public_key():
        raise ValueError(f"{key_path} is not the key of the certificate in {cert_path}")
    for authority in authorities:
        try:
            leaf.verify_directly_issued_by(authority)
            break
        except (InvalidSignature, ValueError, TypeError):
            continue
    else:
        raise ValueError(f"{cert_path} is not signed by the CA in {ca_path}")
    try:
        identity = certificate_identity(leaf)
    except IdentityError as exc:
        raise ValueError(f"{cert_path}: {exc}") from None
    return TlsMaterial(
        ca=ca,
        cert=cert,
        key=key,
        identity=identity,
        cert_expires=leaf.not_valid_after_utc.timestamp(),
        ca_expires=min(a.not_valid_after_utc.timestamp() for a in authorities),
    )


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int], ...]:
    stamps = []
    for path in paths:
        info = os.stat(path)
        stamps.append((info.st_mtime_ns, info.st_size))
    return tuple(stamps)


class TlsFiles:
    """The daemon's CA, certificate and key files, read at start and whenever they change.

    ``expected``: the identity the certificate must keep naming (this syncer's data
    center and node): a new certificate naming another syncer is refused.
    """

    def __init__(
        self, ca_file: Path, cert_file: Path, key_file: Path, *, expected: Identity | None = None
    ) -> None:
        self.paths = (Path(ca_file), Path(cert_file), Path(key_file))
        self.expected = expected
        self.reloads = 0  # new material taken into use after the first
        self.reload_failures = 0
        self._lock = threading.Lock()  # grpc calls the server's fetcher from its own threads
        try:
            self._stamp = _stamp(self.paths)
            material = _load_material(*self.paths)
        except OSError as exc:
            raise ConfigError(
                f"tls file {exc.filename} cannot be read: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"tls: {exc}") from None
        if expected is not None and material.identity != expected:
            raise ConfigError(
                f"tls: {self.paths[1]} names {material.identity}, but this syncer is "
                f"{expected} (make one with 'pysyncer tls cert create --dc {expected.dc} "
                f"--node {expected.node}')"
            )
        self._material = material
        self._failed_stamp: tuple[tuple[int, int], ...] | None = None
        self._served: TlsMaterial | None = None  # what the server's fetcher last gave grpc

    @property
    def identity(self) -> Identity:
        return self.current().identity

    def current(self) -> TlsMaterial:
        """The material in use, re-read first when a file changed since the last look."""
        with self._lock:
            try:
                stamp = _stamp(self.paths)
            except OSError:
                return self._material  # a file replaced by a rename: look again next time
            if stamp == self._stamp or stamp == self._failed_stamp:
                return self._material
            try:
                material = _load_material(*self.paths)
                if self.expected is not None and material.identity != self.expected:
                    raise ValueError(
                        f"{self.paths[1]} now names {material.identity}, not {self.expected}"
                    )
            except (OSError, ValueError) as exc:
                self._failed_stamp = stamp
                self.reload_failures += 1
                log.error("tls: keeping the certificate in use, the new files are refused: %s", exc)
                return self._material
            self._stamp, self._failed_stamp, self._material = stamp, None, material
            self.reloads += 1
            log.info(
                "tls: new certificate for %s taken into use (expires %s)",
                material.identity,
                _utc(material.cert_expires),
            )
            return material

    def server_credentials(self) -> Any:
        """Mutual-TLS server credentials that take new files at the next handshake."""
        first = self.current()
        self._served = first

        def fetch() -> Any:
            material = self.current()
            if material is self._served:
                return None
            self._served = material
            return _server_config(material)

        return grpc.dynamic_ssl_server_credentials(
            _server_config(first), fetch, require_client_authentication=True
        )

    def channel_credentials(self) -> Any:
        """Client credentials of the current files (for a new connection)."""
        material = self.current()
        return grpc.ssl_channel_credentials(
            root_certificates=material.ca,
            private_key=material.key,
            certificate_chain=material.cert,
        )


def _server_config(material: TlsMaterial) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.cert)], root_certificates=material.ca
    )


def _utc(timestamp: float) -> str:
    import datetime  # noqa: PLC0415 - only for a log line

    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


_IDENTITY_CACHE: dict[bytes, Identity | str] = {}
_IDENTITY_CACHE_SIZE = 256


def peer_identity(context: Any) -> Identity | str:
    """The syncer identity of the client of a call, or a one-line reason it has none.

    Reads the certificate the TLS handshake verified (``context.auth_context()``).
    """
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return "no client certificate"
    pem = bytes(pems[0])
    known = _IDENTITY_CACHE.get(pem)
    if known is not None:
        return known
    try:
        found: Identity | str = certificate_identity(x509.load_pem_x509_certificate(pem))
    except (IdentityError, ValueError) as exc:
        found = str(exc)
    if len(_IDENTITY_CACHE) >= _IDENTITY_CACHE_SIZE:
        _IDENTITY_CACHE.clear()
    _IDENTITY_CACHE[pem] = found
    return found
