"""The embedded service center: a ServiceComb Service-Center v4 REST subset, in process.

Owns what ``pysyncer registry`` serves and what the daemon starts when no ``--sc-addr``
is given: microservices, instances with leases (TTL = interval x (times + 1)),
per-tenant revisions with 304 answers, and a long-poll change feed (a pysyncer
extension, see ``docs/registry.md``). It knows nothing of gossip, sync or the store;
the ServiceComb adapter talks to it over HTTP like to any Service-Center.

- :class:`EmbeddedRegistry` (``core``): services and instances, no HTTP; it composes
  request checks (``validation``), instance leases (``leases``), revisions with the
  change feed (:class:`Change`, :class:`FeedBatch`: ``feed``), look-ups by key and
  version rule (``lookup``), the govern views (``governance``) and the tenants
  (``tenants``).
- :func:`build_app`, :class:`RegistryServer`, :func:`run_registry` (``app``): HTTP.
- :class:`RegistryError` (``errors``): Service-Center's error codes.
- :class:`ServiceCenterSettings` (``settings``): quotas, limits, lease bounds, RBAC file.
- :class:`Rbac`, :func:`load_rbac`, :func:`hash_password` (``rbac``): optional RBAC
  after Service-Center's (``POST /v4/token``, bearer tokens, admin/developer roles).

Imports: aiowait, errors, hostport, httpbody, shardeddict, supervisor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pysyncer.servicecenter.app import (
        CHANGE_FEED_HEADER,
        MAX_BODY_BYTES,
        REVISION_HEADER,
        RegistryServer,
        build_app,
        run_registry,
    )
    from pysyncer.servicecenter.core import EmbeddedRegistry
    from pysyncer.servicecenter.errors import RegistryError
    from pysyncer.servicecenter.feed import Change, FeedBatch
    from pysyncer.servicecenter.rbac import Rbac, hash_password, load_rbac
    from pysyncer.servicecenter.settings import DEFAULT_SETTINGS, ServiceCenterSettings

# Where each name lives: imported on first use, so that reading the settings (the CLI,
# the configuration) does not load aiohttp.
_HOMES = {
    "CHANGE_FEED_HEADER": "app",
    "MAX_BODY_BYTES": "app",
    "REVISION_HEADER": "app",
    "RegistryServer": "app",
    "build_app": "app",
    "run_registry": "app",
    "EmbeddedRegistry": "core",
    "RegistryError": "errors",
    "Change": "feed",
    "FeedBatch": "feed",
    "Rbac": "rbac",
    "hash_password": "rbac",
    "load_rbac": "rbac",
    "DEFAULT_SETTINGS": "settings",
    "ServiceCenterSettings": "settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "CHANGE_FEED_HEADER",
    "DEFAULT_SETTINGS",
    "MAX_BODY_BYTES",
    "REVISION_HEADER",
    "Change",
    "EmbeddedRegistry",
    "FeedBatch",
    "Rbac",
    "RegistryError",
    "RegistryServer",
    "ServiceCenterSettings",
    "build_app",
    "hash_password",
    "load_rbac",
    "run_registry",
]
