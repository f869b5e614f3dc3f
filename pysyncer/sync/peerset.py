"""The set of peer links: one per remote data center in gossip, and its origin policy.

Owns which remote data centers have a :class:`~pysyncer.sync.peers.PeerLink`: one is
created when gossip first shows a live syncer of a data center other than ours, and woken
when a data center comes back into gossip (a partition healed) rather than left to its
backoff. A data center the import filter takes nothing from (``follows`` says no) gets no
link, so none of its changes cross the wire, unless copies of it are still held (made
before the rules changed, left by a failed sweep): its link then stays until the link's
repairs have removed them through the filter, and is closed when none is left.
Owns the trust the links establish: a :class:`~pysyncer.sync.trust.TrustBook`, restored
from the store before the first link and written back when it changes, which decides the
syncers each link may follow. Owns the origin policy: a data center gone from gossip for
``origin_grace`` seconds has its copies expire (``expire``) or removed (``remove``), and
one back after that has them renewed and repaired at once. Passes on the repairs the
importer asks for (copies the registry lost) and a manual full sync.

Keeping one data center in sync (the watch stream, reconnects, digest repair) is the
link's job: this module only creates, wakes, asks and closes links. Must not import the
engine, the configuration, the RPC client or the Serf class: members come from a
callable, clients from the factory it hands to each link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from pysyncer.aiowait import wait_event
from pysyncer.store.base import Store
from pysyncer.supervisor import Supervised, spawn, tolerate
from pysyncer.sync.importer import Importer
from pysyncer.sync.peers import ClientFactory, PeerLink, RemoteSyncer
from pysyncer.sync.trust import TrustBook

__all__ = ["Peers"]

log = logging.getLogger(__name__)


class Peers:
    """All remote data centers: a link each, created and dropped as gossip changes."""

    def __init__(
        self,
        local_dc: str,
        members: Callable[[], list[RemoteSyncer]],
        importer: Importer,
        store: Store,
        client_factory: ClientFactory,
        *,
        anti_entropy_interval: float,
        origin_grace: float,
        origin_policy: str,
        scan_interval: float = 1.0,
        follows: Callable[[str], bool] | None = None,
    ) -> None:
        if origin_policy not in ("expire", "remove"):
            raise ValueError(f"origin policy must be 'expire' or 'remove', not {origin_policy!r}")
        self.local_dc = local_dc
        self.links: dict[str, PeerLink] = {}
        self._members = members
        self._importer = importer
        self._store = store
        self._client_factory = client_factory
        self._anti_entropy_interval = anti_entropy_interval
        self._origin_grace = origin_grace
        self._origin_policy = origin_policy
        self._scan_interval = scan_interval
        self._follows = follows  # whether anything of a data center is imported; None: all
        self.not_followed: set[str] = set()  # live data centers with no link: nothing imported
        self._last_seen: dict[str, float] = {}
        self._live: set[str] = set()
        self.trust = TrustBook(forget_after=origin_grace)
        self._recorded_trust: dict[str, str] | None = None  # as the store has it; None: unread
        self._task: Supervised | None = None
        self._rescan = asyncio.Event()
        self._restoring: dict[str, asyncio.Task[None]] = {}  # renew, then repair: a dc back

    def start(self) -> None:
        self._task = spawn("peers", self._scan_loop)

    async def close(self) -> None:
        if self._task is not None:
            await self._task.stop()
        for restoring in self._restoring.values():
            restoring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await restoring
        for link in self.links.values():
            await link.close()

    def syncers_of(self, dc: str) -> list[RemoteSyncer]:
        """The live syncers of ``dc`` a link may follow (see :class:`TrustBook`)."""
        claims = [m for m in self._members() if m.dc == dc]
        return [m for m in claims if m in self.trust.followable(dc, claims)]

    def wake(self, dc: str) -> None:
        link = self.links.get(dc)
        if link is not None:
            link.wake()

    def request_full_sync(self) -> list[str]:
        """Ask every link for a digest repair now; the data centers asked."""
        for link in self.links.values():
            link.request_repair()
        return sorted(self.links)

    def nudge(self) -> None:
        """Scan now rather than at the next tick (gossip says a syncer came or changed)."""
        self._rescan.set()

    async def _scan_loop(self) -> None:
        if self._recorded_trust is None:  # before any link: trust what was trusted before
            self._recorded_trust = await self._store.trusted_groups()
            self.trust.restore(self._recorded_trust)
        while True:
            self._rescan.clear()
            try:
                await self.scan()
                await self._record_trust(self._recorded_trust)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                tolerate("peer-scan", exc, level=logging.ERROR, trace=True)
            await wait_event(self._rescan, self._scan_interval)

    def _followed(self, syncer: RemoteSyncer) -> None:
        self.trust.followed(syncer)
        self.nudge()  # a group just established goes to the store now

    async def _record_trust(self, recorded: dict[str, str]) -> None:
        """Write the groups established or forgotten since the last time to the store."""
        groups = self.trust.groups()
        for dc in sorted(recorded.keys() - groups.keys()):
            await self._store.set_trusted_group(dc, None)
            del recorded[dc]
        for dc, group in sorted(groups.items()):
            if recorded.get(dc) != group:
                await self._store.set_trusted_group(dc, group)
                recorded[dc] = group

    def _wanted(self, dc: str, held: dict[str, int]) -> bool:
        """Whether ``dc`` needs a link: something of it may be imported, or copies of it
        are held (its link's repairs remove those the filter refuses)."""
        return self._follows is None or dc in held or self._follows(dc)

    async def _unfollow(self, live: set[str], held: dict[str, int]) -> None:
        """Close the links no longer wanted; note the live data centers left unfollowed."""
        for dc in sorted(self.links):
            if not self._wanted(dc, held):
                log.info("data center %s: link closed, nothing of it is imported", dc)
                link = self.links.pop(dc)
                self._last_seen.pop(dc, None)
                restoring = self._restoring.pop(dc, None)
                if restoring is not None:
                    restoring.cancel()
                await link.close()
        unfollowed = {dc for dc in live if not self._wanted(dc, held)}
        for dc in sorted(unfollowed - self.not_followed):
            log.info("data center %s: not followed, nothing of it is imported", dc)
        self.not_followed = unfollowed

    async def scan(self) -> None:
        now = time.monotonic()
        live = {m.dc for m in self._members() if m.dc != self.local_dc}
        for dc in live - self._live:  # back in gossip (a partition healed): reconnect now,
            self.wake(dc)  # not after the link's backoff (up to peers.BACKOFF_MAX)
        self._live = live
        held = self._importer.copies_by_origin()
        await self._unfollow(live, held)
        for dc in live - self.not_followed:
            self._last_seen[dc] = now
            self.syncers_of(dc)  # a new claimant raises the alarm now, not at a reconnect
            returned = dc in self._importer.expired_origins
            if returned:
                log.info("data center %s is back: renewing its copies again", dc)
                self._importer.expired_origins.discard(dc)
            if dc not in self.links:
                link = PeerLink(
                    dc,
                    lambda dc=dc: self.syncers_of(dc),  # type: ignore[misc]
                    self._importer,
                    self._store,
                    self._client_factory,
                    anti_entropy_interval=self._anti_entropy_interval,
                    on_followed=self._followed,
                )
                self.links[dc] = link
                link.start()
            if returned:
                self._restore(dc)
        for dc in self._importer.needs_repair & set(self.links):  # copies the registry lost:
            if self.links[dc].status.state == "streaming":  # pulled again now, not at the
                self.links[dc].request_repair()  # next anti-entropy (a link coming up repairs)
        for dc in set(held) | set(self._last_seen):
            if dc in live or dc == self.local_dc:
                continue
            seen = self._last_seen.setdefault(dc, now)
            if now - seen < self._origin_grace or dc in self._importer.expired_origins:
                continue
            if self._origin_policy == "remove":
                removed = await self._importer.remove_origin(dc)
                log.warning(
                    "data center %s gone for %.0f s: removed %d copies", dc, now - seen, removed
                )
                self._last_seen.pop(dc, None)
            else:
                log.warning("data center %s gone for %.0f s: its copies now expire", dc, now - seen)
            self._importer.expired_origins.add(dc)

    def _restore(self, dc: str) -> None:
        """Bring back the copies of ``dc``, which is back after origin-grace, at once.

        Under ``remove`` they are gone from the index, so the link's digests differ; under
        ``expire`` the index still holds them while the registry let them lapse, so a
        renewal round first finds them lost. Either way the link repairs the slots that
        differ now rather than at its next anti-entropy round.
        """
        link = self.links[dc]
        if self._origin_policy == "remove":
            link.request_repair()
            return

        async def renew_then_repair() -> None:
            try:
                await self._importer.renew_all()  # lost copies: forgotten, their origin marked
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the renew loop retries; the repair runs regardless
                log.info("renewing the copies of %s after its return failed: %s", dc, exc)
            link.request_repair()

        running = self._restoring.get(dc)
        if running is None or running.done():
            self._restoring[dc] = asyncio.get_running_loop().create_task(
                renew_then_repair(), name=f"restore-{dc}"
            )
