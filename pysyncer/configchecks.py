"""The checks :func:`pysyncer.config.load_config` runs on merged settings values.

Owns the rules that span several settings or read files: a bind address is an IP, the
embedded registry's limits and RBAC file, the gossip key file, the admin API's access
policy (token file, loopback), and secure by default (a non-loopback gossip or sync
address needs encryption and TLS, or ``insecure``). Each failure is a one-line
:class:`~pysyncer.errors.ConfigError` naming the key. Knows nothing of the settings
table or of the value sources: must not import :mod:`pysyncer.config` at run time.

Imports: admin, configvalues, errors, hostport, servicecenter.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pysyncer import configvalues as parsers
from pysyncer.admin.auth import AdminAuth, AuthMode, is_loopback, read_token_file
from pysyncer.errors import ConfigError
from pysyncer.hostport import HostPort
from pysyncer.servicecenter.settings import ServiceCenterSettings

if TYPE_CHECKING:
    from pysyncer.daemonconfig import DaemonConfig

__all__ = [
    "check_bind_host",
    "check_exposure",
    "check_registry_limits",
    "read_admin_auth",
    "read_key_file",
]


def check_registry_limits(values: Mapping[str, Any]) -> None:
    """The embedded registry's limits hold together and its RBAC file reads (when used)."""
    from pysyncer.servicecenter.rbac import load_rbac  # noqa: PLC0415 - only when given

    try:
        limits = ServiceCenterSettings(
            max_ttl=values["registry_max_ttl"], rbac_file=values["registry_rbac_file"]
        )
    except ValueError as exc:
        raise ConfigError(f"config key 'registry-max-ttl': {exc}") from None
    if limits.rbac_file is not None and not values["registry_url"]:
        load_rbac(limits.rbac_file)  # a bad file fails here: ConfigError naming it


def check_exposure(config: DaemonConfig) -> None:
    """A non-loopback gossip or sync address needs gossip encryption and TLS, or
    ``insecure``: ConfigError naming what is missing."""
    exposed = [(k, a) for k, a in (("bind", config.bind), ("rpc-addr", config.rpc_addr))
               if not is_loopback(a.host)]  # fmt: skip
    if not exposed or config.insecure:
        return
    missing = []
    if not config.gossip_encrypted():
        missing.append("'encrypt-file' (or 'encrypt')")
    if not config.tls:
        missing.append("'tls-ca', 'tls-cert' and 'tls-key'")
    if missing:
        key, address = exposed[0]
        raise ConfigError(
            f"config key {key!r}: {address} is not a loopback address; set "
            f"{' and '.join(missing)}, or 'insecure' to run unprotected"
        )


def read_key_file(path: Path) -> str:
    """The gossip key in ``path``; ConfigError naming the file when it holds none."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"config key 'encrypt-file': {path} cannot be read: {exc.strerror or exc}"
        ) from None
    try:
        key = parsers.encryption_key(text)
    except ValueError as exc:
        raise ConfigError(f"config key 'encrypt-file': the key in {path} {exc}") from None
    if key is None:
        raise ConfigError(f"config key 'encrypt-file': {path} is empty")
    return key


def read_admin_auth(values: Mapping[str, Any]) -> AdminAuth:
    """The admin API's access policy; reads the token file. A non-loopback admin address
    without a token, or ``metrics-auth token`` without one, is a ConfigError."""
    token_file: Path | None = values["admin_token_file"]
    address: HostPort = values["admin_addr"]
    token = read_token_file(token_file) if token_file is not None else None
    if token is None and not is_loopback(address.host):
        raise ConfigError(
            f"config key 'admin-addr': {address} is not a loopback address; "
            "set 'admin-token-file' (the admin API would be open to the network)"
        )
    if token is None and values["metrics_auth"] == "token":
        raise ConfigError("config key 'metrics-auth': 'token' needs 'admin-token-file'")
    return AdminAuth(
        token=token,
        read_auth=cast("AuthMode", values["admin_read_auth"]),
        metrics_auth=cast("AuthMode", values["metrics_auth"]),
        listen_host=address.host,
    )


def check_bind_host(address: HostPort, key: str) -> None:
    try:
        ipaddress.ip_address(address.host)
    except ValueError:
        if address.host != "localhost":
            raise ConfigError(
                f"config key {key!r}: {address.host!r} must be an IP address to bind"
            ) from None
