"""Typed daemon configuration: defaults < config file < ``PYSYNCER_*`` env vars < flags.

Each setting is declared once in :data:`SETTINGS` (key, aliases, flag, env var, default,
parser, help): every default lives there and nowhere else. The command line builds its
options from that table, and :func:`load_config` merges the four sources into one frozen
:class:`~pysyncer.daemonconfig.DaemonConfig` (re-exported here), which hands each layer its
own typed settings (:class:`~pysyncer.gossip.settings.GossipSettings`,
:class:`~pysyncer.sync.settings.SyncSettings`). This is the top layer: it may import the
value parsers of :mod:`pysyncer.configvalues`, the sources of :mod:`pysyncer.configsources`,
the checks of :mod:`pysyncer.configchecks` and the record of :mod:`pysyncer.daemonconfig`;
no layer imports it. The config file is TOML with the same keys as the flags
(``registry-url = ["http://127.0.0.1:30100"]``), plus tables:
``[adapter]`` for the adapter's settings and ``[[export.include]]``, ``[[export.exclude]]``,
``[[import.include]]``, ``[[import.exclude]]`` for the filter rules
(:mod:`pysyncer.sync.filters`). Every bad value raises
:class:`~pysyncer.errors.ConfigError` whose one-line message names the key and where the
value came from. ``sc-addr`` and ``plugin`` are aliases of ``registry-url`` and
``registry-kind`` (flag, env var and key); giving an alias and its main name different
values is an error.

Secure by default: a daemon whose gossip (``bind``) or sync (``rpc-addr``) address is not
loopback must have gossip encryption (``encrypt``, ``encrypt-file`` or a keyring file in its
data directory) and mutual TLS (``tls-ca``, ``tls-cert``, ``tls-key``), unless ``insecure``
is set; :meth:`DaemonConfig.insecure_reasons` says what such a daemon runs without.

Imports: admin, configchecks, configsources, configvalues, daemonconfig, errors, hostport,
servicecenter, sync.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncer import configvalues as parsers
from pysyncer.admin.auth import AdminAuth
from pysyncer.configchecks import (
    check_bind_host,
    check_exposure,
    check_registry_limits,
    read_admin_auth,
    read_key_file,
)
from pysyncer.configsources import (
    ENV_PREFIX,
    adapter_settings,
    attr_name,
    env_name,
    flag_name,
    read_file,
    setting_value,
)
from pysyncer.daemonconfig import DaemonConfig
from pysyncer.errors import ConfigError
from pysyncer.hostport import ADMIN_PORT, GOSSIP_PORT, LOOPBACK, REGISTRY_PORT, SYNC_PORT
from pysyncer.servicecenter.settings import DEFAULT_SETTINGS as REGISTRY_LIMITS
from pysyncer.sync.filters import FilterConfigError, filters_from_config

__all__ = ["SETTINGS", "DaemonConfig", "Setting", "default_dc", "load_config", "setting"]

_ADMIN_POLICY = AdminAuth()  # its read_auth and metrics_auth defaults are the settings' defaults


@dataclass(frozen=True)
class Setting:
    """One configuration key: its flag, env var, default and parser."""

    key: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    metavar: str = "VALUE"
    aliases: tuple[str, ...] = ()  # older names, accepted as flag, env var and file key
    live: bool = False  # a running daemon applies a new value on SIGHUP (else: restart)

    @property
    def meaning(self) -> str:
        """The help text, and whether SIGHUP applies it live (for --help and the docs)."""
        return self.help + (" (changes live on SIGHUP)" if self.live else "")

    @property
    def flag(self) -> str:
        return flag_name(self.key)

    @property
    def env(self) -> str:
        return env_name(self.key)

    @property
    def attr(self) -> str:
        return attr_name(self.key)

    @property
    def names(self) -> tuple[str, ...]:
        """The key, then its aliases."""
        return (self.key, *self.aliases)


SETTINGS: tuple[Setting, ...] = (
    Setting("node", None, parsers.name, "node name in the gossip pool (default: hostname)", "NAME"),
    Setting(
        "dc", None, parsers.name, "data center name (default: derived from --registry-url)", "NAME"
    ),
    Setting(
        "bind",
        f"{LOOPBACK}:{GOSSIP_PORT}",
        parsers.host_port(GOSSIP_PORT),
        "gossip address, UDP+TCP; an address other than loopback needs gossip encryption "
        "and TLS (or --insecure)",
        "HOST:PORT",
    ),
    Setting(
        "advertise",
        None,
        parsers.optional_host_port(GOSSIP_PORT),
        "gossip address others use",
        "HOST:PORT",
    ),
    Setting(
        "rpc-addr",
        f"{LOOPBACK}:{SYNC_PORT}",
        parsers.host_port(SYNC_PORT),
        "gRPC sync address; an address other than loopback needs gossip encryption and TLS "
        "(or --insecure)",
        "HOST:PORT",
    ),
    Setting(
        "admin-addr",
        f"{LOOPBACK}:{ADMIN_PORT}",
        parsers.host_port(ADMIN_PORT),
        "HTTP admin API; an address other than loopback needs --admin-token-file",
        "HOST:PORT",
    ),
    Setting(
        "admin-token-file",
        None,
        parsers.path,
        "file holding the admin API token (Authorization: Bearer), required by every "
        "mutating route and key management; chmod 600",
        "FILE",
    ),
    Setting(
        "admin-read-auth",
        _ADMIN_POLICY.read_auth,
        parsers.auth_mode,
        "token (the read-only admin routes need the token, when one is set) or open; "
        "/v1/health is always open",
        "MODE",
    ),
    Setting(
        "metrics-auth",
        _ADMIN_POLICY.metrics_auth,
        parsers.auth_mode,
        "open (Prometheus scrapes /metrics without the token) or token",
        "MODE",
    ),
    Setting("join", (), parsers.join_list, "pool members to join", "ADDR[,ADDR]"),
    Setting(
        "registry-url",
        (),
        parsers.address_list,
        "local registry address(es), for any --registry-kind; omitted: an embedded "
        "registry on --registry-addr (alias: --sc-addr)",
        "URL[,URL]",
        aliases=("sc-addr",),
    ),
    Setting(
        "registry-addr",
        f"{LOOPBACK}:{REGISTRY_PORT}",
        parsers.host_port(REGISTRY_PORT),
        "where the embedded registry listens when --registry-url is omitted",
        "HOST:PORT",
    ),
    Setting(
        "registry-rbac-file",
        None,
        parsers.path,
        "accounts and roles (JSON or TOML) of the embedded registry: its v4 API then needs "
        "a token from POST /v4/token (docs/registry.md)",
        "FILE",
    ),
    Setting(
        "registry-max-tenants",
        REGISTRY_LIMITS.max_tenants,
        parsers.positive_int,
        "domain/project pairs the embedded registry holds (only writes create one)",
        "N",
    ),
    Setting(
        "registry-max-services",
        REGISTRY_LIMITS.max_services,
        parsers.positive_int,
        "services per project in the embedded registry",
        "N",
    ),
    Setting(
        "registry-max-instances",
        REGISTRY_LIMITS.max_instances,
        parsers.positive_int,
        "instances per service in the embedded registry",
        "N",
    ),
    Setting(
        "registry-max-ttl",
        REGISTRY_LIMITS.max_ttl,
        parsers.positive_int,
        "longest instance lease the embedded registry accepts: healthCheck interval x "
        "(times + 1), seconds",
        "SECONDS",
    ),
    Setting(
        "registry-kind",
        "servicecomb",
        parsers.name,
        "registry adapter: servicecomb, consul, zookeeper, ... (alias: --plugin)",
        "NAME",
        aliases=("plugin",),
    ),
    Setting(
        "store",
        "embedded",
        parsers.store,
        "embedded or etcd://HOST:PORT[,HOST:PORT][?prefix=/p/&...]",
        "STORE",
    ),
    Setting(
        "data-dir", None, parsers.path, "state directory (default ./pysyncer-data/NODE)", "DIR"
    ),
    Setting(
        "encrypt",
        None,
        parsers.encryption_key,
        "Serf-compatible gossip key (base64); prefer --encrypt-file, which ps does not show",
        "KEY",
    ),
    Setting(
        "encrypt-file",
        None,
        parsers.path,
        "file holding the gossip key (base64, as 'pysyncer keygen' prints it); chmod 600",
        "FILE",
    ),
    Setting(
        "tls-ca",
        None,
        parsers.path,
        "CA certificate(s) (PEM) that sign the pool's syncers; with --tls-cert and --tls-key "
        "every sync connection is mutual TLS (re-read when the files change)",
        "FILE",
    ),
    Setting(
        "tls-cert",
        None,
        parsers.path,
        "this syncer's certificate (PEM), naming its --dc and --node ('pysyncer tls cert create')",
        "FILE",
    ),
    Setting("tls-key", None, parsers.path, "the key of --tls-cert (PEM); chmod 600", "FILE"),
    Setting(
        "insecure",
        False,
        parsers.switch,
        "allow a non-loopback --bind or --rpc-addr without gossip encryption and TLS "
        "(a WARNING at start and every hour; /v1/health says insecure)",
        "BOOL",
    ),
    Setting(
        "gossip-protocol",
        2,
        parsers.protocol_version,
        "memberlist protocol version to speak, 2-5 (all of 1-5 are understood)",
        "N",
    ),
    Setting(
        "gossip-label", "", parsers.label, "label that isolates this gossip pool (<= 255 B)", "TEXT"
    ),
    Setting(
        "gossip-profile",
        "pysyncer",
        parsers.gossip_profile,
        "failure detector timings: pysyncer (tuned, the default), lan (Serf's), wan, local "
        "(see docs/gossip.md)",
        "NAME",
    ),
    Setting(
        "origin-grace",
        3600.0,
        parsers.seconds,
        "seconds a data center may be gone before --origin-policy applies to its copies",
        "SECONDS",
    ),
    Setting(
        "origin-policy",
        "expire",
        parsers.origin_policy,
        "expire (stop renewing: copies end by TTL) or remove (unregister them)",
        "POLICY",
    ),
    Setting(
        "member-ttl",
        10.0,
        parsers.seconds,
        "lease of this syncer in a shared (etcd) store: after it lapses, the other syncers "
        "of the data center take over its slots",
        "SECONDS",
    ),
    Setting(
        "anti-entropy-interval",
        60.0,
        parsers.seconds,
        "seconds between slot-digest comparisons with each remote data center",
        "SECONDS",
    ),
    Setting(
        "import-rate-bootstrap",
        20_000.0,
        parsers.writes_per_second,
        "registry writes per second the importer may make while a data center is caught up "
        "(first sync, or a backlog after a heal); 0 = unlimited",
        "N",
    ),
    Setting(
        "import-rate-steady",
        5_000.0,
        parsers.writes_per_second,
        "registry writes per second the importer may make otherwise; 0 = unlimited",
        "N",
    ),
    Setting(
        "change-log-size",
        100_000,
        parsers.positive_int,
        "changes kept in the export log; a peer further behind repairs by digests",
        "N",
    ),
    Setting(
        "direction",
        "both",
        parsers.direction,
        "both, send (export only, never import) or receive (import only, export nothing)",
        "DIRECTION",
    ),
    Setting(
        "log-level",
        "info",
        parsers.log_level,
        "debug, info, warning or error",
        "LEVEL",
        live=True,
    ),
    Setting(
        "log-format",
        "text",
        parsers.log_format,
        "text (one line per record) or json (one JSON object per line)",
        "FORMAT",
        live=True,
    ),
)

_BY_KEY = {setting.key: setting for setting in SETTINGS}
_ALIASES = {alias: setting for setting in SETTINGS for alias in setting.aliases}
EMBEDDED_REGISTRY_URL = f"http://{_BY_KEY['registry-addr'].default}"
"""Stands for the embedded registry in :func:`default_dc` (a registry URL is not given)."""


def setting(key: str) -> Setting:
    """The setting whose main name is ``key`` (for commands that share its default)."""
    return _BY_KEY[key]


def default_dc(registry_urls: Sequence[str]) -> str:
    """A data center name shared by every syncer pointing at the same registry.

    As in the original syncer: derived from the sorted registry addresses, so syncers
    of one registry group together without configuration.
    """
    addresses = sorted(registry_urls) or [EMBEDDED_REGISTRY_URL]
    return "dc-" + hashlib.md5(",".join(addresses).encode(), usedforsecurity=False).hexdigest()[:12]


def load_config(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> DaemonConfig:
    """Merge defaults < config file < env < flags into a validated :class:`DaemonConfig`.

    ``flags`` maps setting keys or aliases (``"registry-url"``, ``"sc-addr"``) to values
    given on the command line; ``None`` values mean "not given". ``config_file`` falls
    back to ``PYSYNCER_CONFIG``.
    """
    flags = {key: value for key, value in (flags or {}).items() if value is not None}
    environ = os.environ if environ is None else environ
    unknown = sorted(set(flags) - set(_BY_KEY) - set(_ALIASES))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    file_name = config_file if config_file is not None else environ.get(ENV_PREFIX + "CONFIG")
    file_path = Path(file_name).expanduser() if file_name else None
    from_file = read_file(file_path, (*_BY_KEY, *_ALIASES)) if file_path else {}

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.attr] = setting_value(setting, flags, environ, from_file, file_path)

    if values["node"] is None:
        values["node"] = parsers.name(socket.gethostname() or "pysyncer")
    if values["dc"] is None:
        values["dc"] = default_dc(values["registry_url"])
    if values["data_dir"] is None:
        values["data_dir"] = Path("pysyncer-data") / values["node"]
    check_bind_host(values["bind"], "bind")
    _check_tls_files(values)
    if values["encrypt"] is not None and values["encrypt_file"] is not None:
        raise ConfigError("config keys 'encrypt' and 'encrypt-file' are both set: give one")
    if values["encrypt_file"] is not None:
        read_key_file(values["encrypt_file"])  # a bad file fails here, with its name
    admin_auth = read_admin_auth(values)
    check_registry_limits(values)
    try:
        filters = filters_from_config(
            from_file.get("export"),
            from_file.get("import"),
            direction=values["direction"],
            dc=values["dc"],
        )
    except FilterConfigError as exc:
        raise ConfigError(
            f"config key {exc.key!r} (config file {file_path}): {exc.message}"
        ) from None
    values["store_url"] = values.pop("store")
    config = DaemonConfig(
        **values,
        adapter_settings=adapter_settings(from_file, environ),
        config_file=file_path,
        filters=filters,
        admin_auth=admin_auth,
    )
    check_exposure(config)
    return config


def _check_tls_files(values: Mapping[str, Any]) -> None:
    given = [key for key in ("tls-ca", "tls-cert", "tls-key") if values[attr_name(key)] is not None]
    if given and len(given) != 3:
        raise ConfigError(
            f"config key {given[0]!r}: 'tls-ca', 'tls-cert' and 'tls-key' go together"
        )
