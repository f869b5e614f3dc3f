"""Which members of the gossip pool a syncer follows, and the RPC client that reaches one.

Owns the choice of remote syncers from member tags: alive, of another data center,
exporting (not a follower of a scaled-out data center), speaking this syncer's sync
protocol and, under TLS, named so a certificate can carry the name; an RPC address bound
to a wildcard is reached where the member gossips. Each member refused for its protocol
or its name is warned about once. Also owns how one is called: a
:class:`~pysyncer.rpc.client.SyncClient` that, under TLS, expects the certificate to name
that data center and node. Reads the pool only through
:class:`~pysyncer.sync.membership.Membership` and the tags of :mod:`pysyncer.sync.tags`;
must not import the engine, the peers' links, the configuration or the Serf class.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging

from pysyncer.gossip.serf import MemberStatus
from pysyncer.hostport import format_host_port, parse_host_port
from pysyncer.rpc.client import SyncClient
from pysyncer.rpc.identity import IdentityError, check_names, dns_name
from pysyncer.rpc.tls import TlsFiles
from pysyncer.sync import tags as sync_tags
from pysyncer.sync.membership import Membership, PoolMember
from pysyncer.sync.peers import RemoteSyncer

__all__ = ["SyncerDiscovery"]

log = logging.getLogger(__name__)


class SyncerDiscovery:
    """The remote syncers of data center ``dc``'s pool, and clients that reach them."""

    def __init__(self, dc: str, membership: Membership, tls: TlsFiles | None) -> None:
        self.dc = dc
        self.membership = membership
        self.tls = tls  # mutual TLS of the sync RPC (None: plaintext)
        self._refused: set[tuple[str, str]] = set()  # (member, why) warned about

    def remote_syncers(self) -> list[RemoteSyncer]:
        """Live, exporting syncers of other data centers that speak our sync protocol."""
        found = []
        for member in self.membership.members():
            tags = member.tags
            if member.status != MemberStatus.ALIVE or not sync_tags.is_syncer(tags):
                continue
            dc = tags.get(sync_tags.DC, "")
            if not dc or dc == self.dc or sync_tags.RPC_ADDR not in tags:
                continue
            if not sync_tags.is_exporting(tags):  # a follower of a scaled-out data center
                continue
            if not self._speaks_our_protocol(member):
                continue
            try:
                rpc = parse_host_port(tags[sync_tags.RPC_ADDR])
            except ValueError:
                continue
            host = rpc.host
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host).is_unspecified:
                    host = member.addr  # bound to a wildcard: reach it where it gossips
            if self.tls is not None and not self._nameable(member.name, dc):
                continue
            found.append(
                RemoteSyncer(
                    member.name,
                    dc,
                    format_host_port(host, rpc.port),
                    tags.get(sync_tags.GROUP, ""),
                )
            )
        return found

    def client(self, syncer: RemoteSyncer) -> SyncClient:
        """A client of ``syncer``; with TLS the handshake must find its data center and
        node in its certificate (``<node>.<dc>.pysyncer``)."""
        if self.tls is None:
            return SyncClient(syncer.rpc_target, dc=syncer.dc)
        return SyncClient(
            syncer.rpc_target,
            tls=self.tls,
            dc=syncer.dc,
            server_name=dns_name(syncer.dc, syncer.node),
        )

    def _nameable(self, node: str, dc: str) -> bool:
        """False (warned about once) for a syncer no certificate can name."""
        try:
            check_names(dc, node)
        except IdentityError as exc:
            if (node, dc) not in self._refused:
                self._refused.add((node, dc))
                log.warning("not following syncer %s of data center %s: %s", node, dc, exc)
            return False
        return True

    def _speaks_our_protocol(self, member: PoolMember) -> bool:
        """False for a syncer of another sync protocol version: warned about once."""
        if sync_tags.speaks_sync_protocol(member.tags):
            return True
        version = member.tags.get(sync_tags.SYNC_PROTO, "")
        if (member.name, version) not in self._refused:
            self._refused.add((member.name, version))
            log.warning(
                "not following syncer %s of data center %s: it speaks sync protocol %s, "
                "this syncer speaks %d",
                member.name,
                member.tags.get(sync_tags.DC, "?"),
                repr(version) if version else "(none advertised)",
                sync_tags.SYNC_PROTOCOL_VERSION,
            )
        return False
