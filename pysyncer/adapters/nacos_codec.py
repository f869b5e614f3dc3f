"""Settings and shapes of the Nacos adapter: what Nacos instances and answers hold.

Owns the ``[adapter]`` settings of the Nacos adapter (:class:`NacosSettings`), Nacos's
answer codes, the ``preserved.*`` beat metadata keys and their defaults, the project and
endpoint a native Nacos instance reads as, the identity parameters of an instance
(:class:`NacosWhere`) and the readers of Nacos's loosely typed booleans and milliseconds.

Pure translation: it must not do HTTP or import the other Nacos adapter module.

Imports: adapters, errors, hostport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pysyncer.adapters._retry import RETRY_MAX
from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.errors import ConfigError
from pysyncer.hostport import bracket_host

__all__ = [
    "DEFAULT_BEAT_MS",
    "DEFAULT_TIMEOUT_MS",
    "NACOS_CODE_INSTANCE_NOT_FOUND",
    "NACOS_CODE_OK",
    "NACOS_CODE_RESOURCE_NOT_FOUND",
    "NATIVE_PROJECT",
    "NATIVE_SCHEME",
    "ORIGINALS_KEY",
    "PRESERVED_DELETE",
    "PRESERVED_INTERVAL",
    "PRESERVED_TIMEOUT",
    "NacosSettings",
    "NacosWhere",
    "native_endpoint",
    "read_bool",
    "read_ms",
]

NACOS_CODE_OK: Final = 10200  # v1 beat
NACOS_CODE_RESOURCE_NOT_FOUND: Final = 20404  # v1 beat: instance unknown
NACOS_CODE_INSTANCE_NOT_FOUND: Final = 21003  # v2/v3: instance unknown
NATIVE_PROJECT: Final = "default/default"  # what a native Nacos service's project reads as
NATIVE_SCHEME: Final = "rest"  # the scheme of a native instance's one endpoint

PRESERVED_INTERVAL: Final = "preserved.heart.beat.interval"
PRESERVED_TIMEOUT: Final = "preserved.heart.beat.timeout"
PRESERVED_DELETE: Final = "preserved.ip.delete.timeout"
ORIGINALS_KEY: Final = "pysyncer.nacos.orig"  # the preserved.* values a copy's own metadata had
DEFAULT_BEAT_MS: Final = 5000
DEFAULT_TIMEOUT_MS: Final = 15000


@dataclass(frozen=True, slots=True)
class NacosSettings:
    """Settings of the Nacos adapter (``[adapter]`` table; all have defaults)."""

    namespace: str = "public"
    group: str = "DEFAULT_GROUP"
    cluster: str = "DEFAULT"
    api: str = "v1"
    username: str = ""
    password: str = field(default="", repr=False)
    poll_interval: float = 5.0
    ephemeral: bool = True
    page_size: int = 100
    concurrency: int = 16
    timeout: float = 10.0
    connect_timeout: float = 3.0
    max_body: int = 16 * 1024 * 1024
    retry_max: float = RETRY_MAX
    token_refresh: float = 0.8  # re-login after this fraction of the token's TTL
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> NacosSettings:
        result = settings_from_mapping(cls, "nacos", settings)
        if result.api not in {"v1", "v3"}:
            raise ConfigError(f"nacos adapter: adapter.api must be v1 or v3, not {result.api!r}")
        if result.poll_interval <= 0:
            raise ConfigError("nacos adapter: adapter.poll-interval must be > 0")
        if not 1 <= result.page_size <= 1000 or result.concurrency < 1:
            raise ConfigError("nacos adapter: adapter.page-size 1..1000, adapter.concurrency >= 1")
        if not 0 < result.token_refresh < 1:
            raise ConfigError("nacos adapter: adapter.token-refresh must be in (0, 1)")
        if not result.group or "@@" in result.group:
            raise ConfigError(f"nacos adapter: bad adapter.group {result.group!r}")
        if not result.cluster or not all(c.isalnum() or c == "-" for c in result.cluster):
            raise ConfigError(f"nacos adapter: adapter.cluster {result.cluster!r}: 0-9a-zA-Z-")
        if bool(result.username) != bool(result.password):
            raise ConfigError("nacos adapter: adapter.username and adapter.password go together")
        return result


@dataclass(frozen=True, slots=True)
class NacosWhere:
    """Where an instance sits in Nacos: the identity parameters of its requests."""

    ip: str
    port: int
    cluster: str


def native_endpoint(ip: str, port: int) -> str:
    """The one endpoint a native Nacos instance reads as."""
    host = bracket_host(ip)
    return f"{NATIVE_SCHEME}://{host}:{port}"


def read_bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return default


def read_ms(value: Any, default: int) -> int:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default
