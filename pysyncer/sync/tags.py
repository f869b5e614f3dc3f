"""The gossip tags a syncer advertises and reads: names, values and the sync protocol version.

Owns the contract between syncers carried in Serf member tags: ``role`` (always
``pysyncer``), ``dc`` (its data center), ``rpc_addr`` (its gRPC sync address, ``HOST:PORT``),
``export`` (``0`` on a syncer that does not export its data center, ``1`` on one that does;
absent counts as exporting), ``sync_proto`` (the version of the sync protocol it speaks) and
``group`` (its ownership group: the syncers of a data center sharing one store,
:func:`pysyncer.sync.trust.ownership_group`) and ``version`` (its pysyncer version).
Pure: builds and reads tag maps, imports no gossip or network code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pysyncer._version import __version__

__all__ = [
    "DC",
    "EXPORT",
    "GROUP",
    "ROLE",
    "ROLE_SYNCER",
    "RPC_ADDR",
    "SYNC_PROTO",
    "SYNC_PROTOCOL_VERSION",
    "VERSION",
    "export_tag",
    "is_exporting",
    "is_syncer",
    "speaks_sync_protocol",
    "syncer_tags",
]

ROLE: Final = "role"
DC: Final = "dc"
RPC_ADDR: Final = "rpc_addr"
EXPORT: Final = "export"
SYNC_PROTO: Final = "sync_proto"
GROUP: Final = "group"
VERSION: Final = "version"  # the pysyncer version of the syncer (the dashboard shows it)

ROLE_SYNCER: Final = "pysyncer"
SYNC_PROTOCOL_VERSION: Final = 1
"""The sync protocol (gRPC service and record shapes) this syncer speaks and follows."""


def syncer_tags(dc: str, rpc_addr: str) -> dict[str, str]:
    """The tags a syncer joins the pool with (``export`` is added once ownership decides)."""
    return {
        ROLE: ROLE_SYNCER,
        DC: dc,
        RPC_ADDR: rpc_addr,
        SYNC_PROTO: str(SYNC_PROTOCOL_VERSION),
        VERSION: __version__,
    }


def export_tag(exporting: bool) -> str:
    """The value of the ``export`` tag."""
    return "1" if exporting else "0"


def is_syncer(tags: Mapping[str, str]) -> bool:
    """True for a pysyncer member (other Serf agents may share the pool)."""
    return tags.get(ROLE) == ROLE_SYNCER


def is_exporting(tags: Mapping[str, str]) -> bool:
    """False for a follower of a scaled-out data center (``export=0``)."""
    return tags.get(EXPORT) != export_tag(False)


def speaks_sync_protocol(tags: Mapping[str, str]) -> bool:
    """True when the member advertises the sync protocol version this syncer speaks."""
    return tags.get(SYNC_PROTO) == str(SYNC_PROTOCOL_VERSION)
