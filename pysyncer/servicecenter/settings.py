"""The embedded Service-Center's limits and options: :class:`ServiceCenterSettings`.

Owns every bound the registry enforces and its default: the request body size and JSON
depth, the quotas (tenants, services per project, instances per service, schemas per
service, properties size; over them: ``400100`` Not enough quota) and the range of an
instance's lease (``healthCheck.interval`` and the TTL ``interval x (times + 1)``; out of
range: ``400001``), plus the RBAC accounts file. ``pysyncer registry`` and the daemon
build one from their settings; the data model and the HTTP app read it. Plain values
only: it must not import the other servicecenter modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_SETTINGS", "ServiceCenterSettings"]

MAX_INT32: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ServiceCenterSettings:
    """Limits of one embedded registry (defaults suit a syncer's local registry).

    ``max_tenants``: domain/project pairs; only writes create one, reads of an unknown
    tenant answer empty. ``max_services`` per project, ``max_instances`` per service,
    ``max_schemas`` per service (Service-Center's default schema quota is 100),
    ``max_properties_bytes``: the UTF-8 size of the keys and values of one properties map.
    ``min_interval``/``max_ttl``: seconds; a lease of ``interval x (times + 1)`` beyond
    ``max_ttl`` is refused. ``rbac_file``: accounts and roles (JSON or TOML); None: RBAC
    off. ``token_ttl``: seconds a token from ``POST /v4/token`` is valid
    (Service-Center: 30 min).
    """

    max_body_bytes: int = 1024 * 1024
    max_json_depth: int = 64
    max_tenants: int = 1000
    max_services: int = 10_000
    max_instances: int = 10_000
    max_schemas: int = 100
    max_properties_bytes: int = 64 * 1024
    min_interval: int = 1
    max_ttl: int = 24 * 3600
    rbac_file: Path | None = None
    token_ttl: float = 1800.0

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_json_depth",
            "max_tenants",
            "max_services",
            "max_instances",
            "max_schemas",
            "max_properties_bytes",
            "min_interval",
            "max_ttl",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.max_ttl > MAX_INT32:
            raise ValueError(f"max_ttl must be at most {MAX_INT32} seconds")
        if self.min_interval > self.max_ttl:
            raise ValueError("min_interval must not exceed max_ttl")
        if not self.token_ttl > 0:
            raise ValueError("token_ttl must be positive")


DEFAULT_SETTINGS: Final = ServiceCenterSettings()
