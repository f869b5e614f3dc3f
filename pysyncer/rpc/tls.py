# mypy: disable-error-code="import-untyped"
"""TLS settings of the sync RPC: server and client credentials with real verification.

A server presents ``cert_file``/``key_file``; with ``require_client_cert`` it accepts
only clients whose certificate is signed by ``ca_file`` (mutual TLS). A client verifies
the server against ``ca_file`` (the system roots when None) and presents
``cert_file``/``key_file`` when given. Files are read once, when credentials are built;
a missing or unreadable file raises ConfigError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pysyncer.errors import ConfigError

__all__ = ["TlsConfig", "channel_credentials", "server_credentials"]


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
