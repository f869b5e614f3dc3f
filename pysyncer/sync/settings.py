"""Typed settings of the sync engine, built by :mod:`pysyncer.config` from its one table.

Owns the shape of what the engine is told: its data center and node, where the local
registry is (a URL list and adapter kind, or none: then the daemon runs the embedded one
and hands it to the engine), the store, the gRPC address, the anti-entropy and
origin-loss policy and the filters. Holds no defaults: every default lives in
:data:`pysyncer.config.SETTINGS`. Must not import the configuration, the daemon or the
service center (the embedded one's address and limits are the daemon's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pysyncer.hostport import HostPort
from pysyncer.sync.filters import Filters

if TYPE_CHECKING:  # the store package loads its backends (gRPC): only when a store opens
    from pysyncer.store.url import StoreURL

__all__ = ["OriginPolicy", "RegistrySettings", "SyncSettings"]

OriginPolicy = Literal["expire", "remove"]


@dataclass(frozen=True)
class RegistrySettings:
    """The local registry: given by URL(s) and kind, or embedded (no URL, run by the daemon)."""

    urls: tuple[str, ...]
    kind: str  # adapter name: servicecomb, consul, zookeeper, ...
    adapter_settings: Mapping[str, Any]

    @property
    def embedded(self) -> bool:
        """True when no registry URL was given: the engine follows one the daemon runs."""
        return not self.urls


@dataclass(frozen=True)
class SyncSettings:
    """Everything the sync engine of one syncer is configured with."""

    dc: str
    node: str
    registry: RegistrySettings
    store: StoreURL
    data_dir: Path
    rpc_addr: HostPort
    member_ttl: float  # lease in a shared store before other syncers take the slots over
    anti_entropy_interval: float  # seconds between digest comparisons per remote dc
    import_rate_bootstrap: float  # registry writes/s while a dc is caught up (0: unlimited)
    import_rate_steady: float  # registry writes/s otherwise (0: unlimited)
    change_log_size: int  # changes kept in the export log
    origin_grace: float  # seconds a dc may be gone before origin_policy applies
    origin_policy: OriginPolicy
    filters: Filters  # export/import rules and the direction
