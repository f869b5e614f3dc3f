"""Typed settings of one gossip pool member, built by :mod:`pysyncer.config`.

Owns the shape of what the gossip side is told: node name, bind and advertise addresses,
the members to join, the pool label, the memberlist protocol version, the detector
profile, the encryption key given on the command line and the directory of the keyring
and snapshot files. Holds no
defaults: every default lives in :data:`pysyncer.config.SETTINGS`. Must not import the
configuration, the daemon or the sync layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pysyncer.hostport import HostPort

__all__ = ["GossipSettings"]


@dataclass(frozen=True)
class GossipSettings:
    """Everything the gossip stack of one syncer is configured with."""

    node: str
    bind: HostPort
    advertise: HostPort | None  # None: the bound address (a wildcard bind picks one)
    join: tuple[HostPort, ...]
    label: str  # isolates pools sharing a network (<= 255 bytes)
    protocol_version: int  # memberlist protocol spoken, 2-5
    profile: str  # a name of pysyncer.gossip.timing.PROFILES (pysyncer, lan, wan, local)
    encryption_key: bytes | None  # --encrypt; the keyring file wins once it exists
    data_dir: Path  # holds the keyring and snapshot files
