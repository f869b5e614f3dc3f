"""Which syncers of a remote data center may be followed: no silent change of trust.

Owns the rule. Gossip tags say which syncers claim a data center; only one *ownership
group* serves it: the syncers of one data center sharing one store (an etcd store's
syncers, or the single syncer of an embedded store) advertise the same ``group`` tag
(:func:`ownership_group`). Per remote data center, the group of the first syncer a link
followed (its certificate verified by the TLS handshake when TLS is on: the client asks
for ``<node>.<dc>.pysyncer``) becomes the *established* group. From then on:

* only syncers of the established group are followed; a syncer claiming the data center
  from another group is a *claimant*: never followed, so its word never deletes a copy,
  and an alarm is raised once per claimant (WARNING, ``conflicts`` counter, listed in
  :meth:`TrustBook.status`);
* a syncer of the established group is followed only once the handshake verifies it (a
  failed handshake is a failed connection: the link tries another);
* when no syncer of the established group has been seen for ``forget_after`` seconds (the
  origin grace), the group is forgotten with a WARNING and the next syncer followed
  establishes a new one: a data center really moved to new syncers.

The established groups outlive a restart: :class:`~pysyncer.sync.peerset.Peers` records
them in the store (:meth:`~pysyncer.store.base.Store.set_trusted_group`) and gives them
back with :meth:`TrustBook.restore` before its first link, so a restarted syncer does not
trust whichever claimant it hears first (a restored group's ``forget_after`` counts from
the restart).

Pure bookkeeping over :class:`~pysyncer.sync.peers.RemoteSyncer`-like values; no network,
no store. Must not import gossip or the RPC layer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pysyncer.admin.payloads import IdentityStatus

if TYPE_CHECKING:
    from pysyncer.store.url import StoreURL

__all__ = ["Claim", "TrustBook", "ownership_group"]

log = logging.getLogger(__name__)


class Claim(Protocol):
    """A syncer claiming a data center, as gossip describes it."""

    @property
    def node(self) -> str: ...

    @property
    def dc(self) -> str: ...

    @property
    def group(self) -> str: ...


def ownership_group(store: StoreURL, node: str) -> str:
    """The ``group`` tag of a syncer: ``node:<node>`` for an embedded store (its syncer is
    the whole group), ``etcd:<digest>`` of the endpoints and prefix for a shared store
    (every syncer of the data center gives the same ``--store``)."""
    if store.kind != "etcd":
        return f"node:{node}"
    endpoints = ",".join(sorted(str(endpoint) for endpoint in store.endpoints))
    digest = hashlib.sha256(f"{endpoints}|{store.prefix or ''}".encode()).hexdigest()
    return f"etcd:{digest[:16]}"


class TrustBook:
    """The established group of every remote data center, and the claims refused."""

    def __init__(self, *, forget_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.forget_after = forget_after
        self.conflicts = 0  # claimants seen, in all (pysyncer_identity_conflicts_total)
        self._clock = clock
        self._established: dict[str, str] = {}  # dc -> group
        self._established_seen: dict[str, float] = {}  # dc -> when a member of it was seen
        self._claimants: dict[str, dict[str, str]] = {}  # dc -> node -> group, live now
        self._alarmed: set[tuple[str, str, str]] = set()  # (dc, node, group) warned about

    def established(self, dc: str) -> str | None:
        return self._established.get(dc)

    def groups(self) -> dict[str, str]:
        """The established group of every remote data center (``dc -> group``)."""
        return dict(self._established)

    def restore(self, groups: Mapping[str, str]) -> None:
        """Take back groups established before a restart (as :meth:`groups` gave them)."""
        now = self._clock()
        for dc, group in groups.items():
            self._established[dc] = group
            self._established_seen[dc] = now

    def followable(self, dc: str, claims: Sequence[Claim]) -> list[Claim]:
        """The syncers of ``claims`` (all claiming ``dc``) a link may follow; raises the
        alarm for the others."""
        now = self._clock()
        group = self._established.get(dc)
        if group is not None:
            if any(c.group == group for c in claims):
                self._established_seen[dc] = now
            elif now - self._established_seen.get(dc, now) >= self.forget_after:
                log.warning(
                    "no syncer of group %s has served data center %s for %.0f s: the next "
                    "syncer followed for it is trusted (%s)",
                    group,
                    dc,
                    now - self._established_seen[dc],
                    ", ".join(sorted(f"{c.node} [{c.group}]" for c in claims)) or "none yet",
                )
                del self._established[dc]
                self._established_seen.pop(dc, None)
                group = None
        if group is None:
            groups = {c.group for c in claims}
            if len(groups) > 1:  # two groups and no history: both followable, alarm anyway
                for claim in claims:
                    self._alarm(
                        claim,
                        "several ownership groups claim it and none is established yet; "
                        "the first syncer followed (verified by TLS when on) decides",
                    )
            self._claimants.pop(dc, None)
            return list(claims)
        trusted = [c for c in claims if c.group == group]
        refused = [c for c in claims if c.group != group]
        self._claimants[dc] = {c.node: c.group for c in refused}
        if not self._claimants[dc]:
            del self._claimants[dc]
        for claim in refused:
            self._alarm(
                claim,
                f"it is followed from group {group}; this syncer is not followed and none "
                "of its data is applied",
            )
        return trusted

    def followed(self, claim: Claim) -> None:
        """A link followed ``claim`` (verified when TLS is on): its group is established."""
        if self._established.get(claim.dc) == claim.group:
            return
        self._established[claim.dc] = claim.group
        self._established_seen[claim.dc] = self._clock()
        log.info(
            "data center %s: following syncer %s of group %s", claim.dc, claim.node, claim.group
        )

    def _alarm(self, claim: Claim, why: str) -> None:
        key = (claim.dc, claim.node, claim.group)
        if key in self._alarmed:
            return
        self._alarmed.add(key)
        self.conflicts += 1
        log.warning(
            "identity conflict: syncer %s (group %s) claims data center %s, but %s",
            claim.node,
            claim.group or "(none advertised)",
            claim.dc,
            why,
        )

    def status(self) -> IdentityStatus:
        return {
            "established": dict(self._established),
            "claimants": {dc: dict(nodes) for dc, nodes in self._claimants.items()},
            "conflicts": self.conflicts,
        }
