"""The validated settings of one daemon, and the typed settings it hands each layer.

:class:`DaemonConfig` holds every value :func:`pysyncer.config.load_config` merged and
checked; :meth:`~DaemonConfig.gossip`, :meth:`~DaemonConfig.sync` and
:meth:`~DaemonConfig.service_center` build each layer's own settings from it, and
:meth:`~DaemonConfig.insecure_reasons` says what an ``insecure`` daemon runs without. Holds
no defaults and reads no sources: every default lives in :data:`pysyncer.config.SETTINGS`,
and this module must not import :mod:`pysyncer.config`.

Imports: admin, configchecks, gossip, hostport, rpc, servicecenter, sync.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pysyncer.admin.auth import AdminAuth, is_loopback
from pysyncer.configchecks import read_key_file
from pysyncer.gossip.settings import GossipSettings
from pysyncer.hostport import GOSSIP_PORT, HostPort, parse_host_port
from pysyncer.servicecenter.settings import ServiceCenterSettings
from pysyncer.sync.filters import Filters
from pysyncer.sync.settings import OriginPolicy, RegistrySettings, SyncSettings

if TYPE_CHECKING:
    from pysyncer.rpc.tls import TlsFiles
    from pysyncer.store.url import StoreURL

__all__ = ["DaemonConfig"]


@dataclass(frozen=True)
class DaemonConfig:
    """Every setting of one daemon, validated; :meth:`gossip` and :meth:`sync` hand each
    layer its part."""

    node: str
    dc: str
    bind: HostPort
    advertise: HostPort | None
    rpc_addr: HostPort
    admin_addr: HostPort
    admin_token_file: Path | None
    admin_read_auth: str
    metrics_auth: str
    join: tuple[str, ...]
    registry_url: tuple[str, ...]
    registry_addr: HostPort
    registry_kind: str
    registry_rbac_file: Path | None
    registry_max_tenants: int
    registry_max_services: int
    registry_max_instances: int
    registry_max_ttl: int
    store_url: StoreURL
    data_dir: Path
    encrypt: str | None
    encrypt_file: Path | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    insecure: bool
    gossip_protocol: int
    gossip_label: str
    gossip_profile: str
    origin_grace: float
    origin_policy: OriginPolicy
    member_ttl: float
    anti_entropy_interval: float
    import_rate_bootstrap: float
    import_rate_steady: float
    change_log_size: int
    direction: str
    log_level: str
    log_format: str
    adapter_settings: Mapping[str, Any]
    config_file: Path | None
    filters: Filters = field(default_factory=Filters)  # export/import rules and direction
    admin_auth: AdminAuth = field(default_factory=AdminAuth)  # token read, addresses checked

    @property
    def sc_addr(self) -> tuple[str, ...]:
        """Alias of :attr:`registry_url` (the ``--sc-addr`` name)."""
        return self.registry_url

    @property
    def plugin(self) -> str:
        """Alias of :attr:`registry_kind` (the ``--plugin`` name)."""
        return self.registry_kind

    @property
    def store(self) -> str:
        """The ``--store`` URL as given."""
        return str(self.store_url)

    @property
    def embedded_registry(self) -> bool:
        """True when no registry address was given: the daemon runs its own."""
        return not self.registry_url

    def encryption_key(self) -> bytes | None:
        """The gossip key of ``encrypt`` or, when it is not given, of ``encrypt-file``."""
        if self.encrypt is not None:
            return base64.b64decode(self.encrypt)
        if self.encrypt_file is not None:
            return base64.b64decode(read_key_file(self.encrypt_file))
        return None

    @property
    def tls(self) -> bool:
        """True when the sync RPC runs mutual TLS (all three files given)."""
        return self.tls_cert is not None

    def tls_files(self) -> TlsFiles | None:
        """The TLS files, read and checked (the certificate must name this dc and node)."""
        if self.tls_ca is None or self.tls_cert is None or self.tls_key is None:
            return None
        from pysyncer.rpc.identity import Identity  # noqa: PLC0415 - loads grpc: on use
        from pysyncer.rpc.tls import TlsFiles  # noqa: PLC0415

        return TlsFiles(
            self.tls_ca, self.tls_cert, self.tls_key, expected=Identity(self.dc, self.node)
        )

    def gossip_encrypted(self) -> bool:
        """True when gossip is encrypted: a key given, or a keyring file in the data dir."""
        from pysyncer.gossip.stack import KEYRING_FILE  # noqa: PLC0415

        given = self.encrypt is not None or self.encrypt_file is not None
        return given or (self.data_dir / KEYRING_FILE).exists()

    def insecure_reasons(self) -> list[str]:
        """What this daemon exposes without protection (empty: nothing); only an
        ``insecure`` daemon starts with any."""
        reasons = []
        if not is_loopback(self.bind.host) and not self.gossip_encrypted():
            reasons.append(f"gossip on {self.bind} is not encrypted")
        if not is_loopback(self.rpc_addr.host) and not self.tls:
            reasons.append(f"sync RPC on {self.rpc_addr} is not TLS")
        return reasons

    def gossip(self) -> GossipSettings:
        """The gossip stack's settings."""
        return GossipSettings(
            node=self.node,
            bind=self.bind,
            advertise=self.advertise,
            join=tuple(parse_host_port(a, GOSSIP_PORT) for a in self.join),
            label=self.gossip_label,
            protocol_version=self.gossip_protocol,
            profile=self.gossip_profile,
            encryption_key=self.encryption_key(),
            data_dir=self.data_dir,
        )

    def service_center(self) -> ServiceCenterSettings:
        """The embedded registry's limits and RBAC file."""
        return ServiceCenterSettings(
            max_tenants=self.registry_max_tenants,
            max_services=self.registry_max_services,
            max_instances=self.registry_max_instances,
            max_ttl=self.registry_max_ttl,
            rbac_file=self.registry_rbac_file,
        )

    def sync(self) -> SyncSettings:
        """The sync engine's settings."""
        return SyncSettings(
            dc=self.dc,
            node=self.node,
            registry=RegistrySettings(
                urls=self.registry_url,
                kind=self.registry_kind,
                adapter_settings=self.adapter_settings,
            ),
            store=self.store_url,
            data_dir=self.data_dir,
            rpc_addr=self.rpc_addr,
            member_ttl=self.member_ttl,
            anti_entropy_interval=self.anti_entropy_interval,
            import_rate_bootstrap=self.import_rate_bootstrap,
            import_rate_steady=self.import_rate_steady,
            change_log_size=self.change_log_size,
            origin_grace=self.origin_grace,
            origin_policy=self.origin_policy,
            filters=self.filters,
        )
