"""Registry adapters: one module per registry kind, the protocol they share, and the loader.

Owns every conversation with a local registry (list, change detection, service creation,
register/renew/unregister of copies) and the translation of registry shapes into
:mod:`pysyncer.model` values. It must not touch gossip, the store, RPC or the sync engine.

Adapters are found by name through the ``pysyncer.adapters`` entry-point group; each
entry point names a factory ``(addresses, settings) -> Adapter``. The built-ins are also
known directly, so an editable checkout works before the package is reinstalled.

The larger adapters keep their other jobs in modules beside them, named after the kind:
settings and encoding in ``<kind>_codec``, change detection in ``<kind>_watch`` (and the
etcd gRPC requests in ``etcd_conn``); the entry point always names ``<kind>:create``.

Imports: aiowait, credentials, errors, etcdchannels, hostport, model, redact, servicecenter,
supervisor.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from typing import Any

from pysyncer.adapters.base import (
    Adapter,
    AdapterError,
    BadResponseError,
    ChangeBatch,
    ChangeEvent,
    ConflictError,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
    UnavailableError,
)
from pysyncer.errors import ConfigError

__all__ = [
    "BUILTIN_ADAPTERS",
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AdapterError",
    "BadResponseError",
    "ChangeBatch",
    "ChangeEvent",
    "ConflictError",
    "LocalRef",
    "NotFoundError",
    "RenewResult",
    "Snapshot",
    "UnavailableError",
    "available_adapters",
    "load_adapter",
]

ENTRY_POINT_GROUP = "pysyncer.adapters"

# name -> "module:factory" (the same values the entry points declare)
BUILTIN_ADAPTERS: Mapping[str, str] = {
    "servicecomb": "pysyncer.adapters.servicecomb:create",
    "embedded": "pysyncer.adapters.embedded:create",
    "zookeeper": "pysyncer.adapters.zookeeper:create",
    "etcd": "pysyncer.adapters.etcd:create",
    "eureka": "pysyncer.adapters.eureka:create",
    "nacos": "pysyncer.adapters.nacos:create",
    "consul": "pysyncer.adapters.consul:create",
}

Factory = Callable[[Sequence[str], Mapping[str, Any]], Adapter]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_adapters() -> list[str]:
    """Names of every adapter that can be loaded (entry points and built-ins)."""
    return sorted(set(_entry_points()) | set(BUILTIN_ADAPTERS))


def _resolve(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        target = getattr(target, part)
    return target


def load_adapter(
    name: str,
    addresses: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
) -> Adapter:
    """Build the adapter registered as ``name`` (not started: call ``start()``).

    Raises ConfigError naming the available adapters when ``name`` is unknown.
    """
    entry = _entry_points().get(name)
    try:
        if entry is not None:
            factory = entry.load()
        elif name in BUILTIN_ADAPTERS:
            factory = _resolve(BUILTIN_ADAPTERS[name])
        else:
            raise ConfigError(
                f"unknown registry adapter {name!r}; available: " + ", ".join(available_adapters())
            )
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"registry adapter {name!r} cannot be loaded: {exc}") from exc
    adapter = factory(list(addresses), dict(settings or {}))
    if not isinstance(adapter, Adapter):
        raise ConfigError(f"registry adapter {name!r}: factory did not return an Adapter")
    return adapter
