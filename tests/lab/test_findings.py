"""Regression tests for the daemon fixes the reliability lab led to (lab/FINDINGS.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from pysyncer._core import digest as core_digest
from pysyncer.errors import PysyncerError
from pysyncer.sync import peers
from pysyncer.sync.peers import BACKOFF_MIN, PeerLink, RemoteSyncer
from pysyncer.sync.peerset import Peers
from pysyncer.sync.renewals import Renewals


class CountingLink:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


class NoCopies:
    def __init__(self) -> None:
        self.expired_origins: set[str] = set()
        self.needs_repair: set[str] = set()

    def copies_by_origin(self) -> dict[str, int]:
        return {}


async def test_a_data_center_back_in_gossip_wakes_its_link_at_once() -> None:
    """Finding 1: after a partition heals, the link to a data center that had dropped out
    of gossip waited out its reconnect backoff (up to 10 s) before syncing again."""
    members: list[RemoteSyncer] = [RemoteSyncer("b1", "dc-b", "10.0.0.2:30191")]
    importer: Any = NoCopies()
    peers = Peers(
        "dc-a", lambda: list(members), importer, store=None, client_factory=None,  # type: ignore[arg-type]
        anti_entropy_interval=60, origin_grace=3600, origin_policy="expire",
    )  # fmt: skip
    link = CountingLink()
    peers.links["dc-b"] = link  # type: ignore[assignment]
    await peers.scan()
    woken = link.woken
    await peers.scan()
    assert link.woken == woken  # still live: no wake-up
    members.clear()
    await peers.scan()  # gone from gossip (partitioned)
    members.append(RemoteSyncer("b1", "dc-b", "10.0.0.2:30191"))
    await peers.scan()  # back
    assert link.woken == woken + 1


class FailingOnce(Renewals):
    """Renewals whose first round fails as against a registry answering 503."""

    def __init__(self) -> None:
        stats: Any = Stats()
        index: Any = NoIndex()
        super().__init__(None, index, stats, set(), on_lost=None)  # type: ignore[arg-type]
        self.rounds = 0

    async def renew_all(self, *, wait: bool = True, keys: Iterable[int] | None = None) -> int:
        self.rounds += 1
        if self.rounds == 1:
            raise PysyncerError("PUT /v4/default/registry/heartbeats: HTTP 503")
        return 0


class NoIndex:
    """A copy index holding nothing (the loop asks it where a round begins)."""

    def mark(self) -> list[int]:
        return []


class Stats:
    renewals = 0

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, kind: str) -> None:
        self.errors.append(kind)


async def test_a_failed_renewal_round_is_retried_before_the_next_period() -> None:
    """Finding 2: behind a registry answering 5xx half the time, a failed renewal round
    waited a whole period (TTL/4) for the next try, so a few failures in a row let every
    copy lapse. A failed round is now retried at the next tick."""
    renewals = FailingOnce()
    renewals.start(interval=60.0)  # the next regular round would be a minute away
    try:
        for _ in range(100):  # bounded: at most 10 s
            if renewals.rounds >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await renewals.close()
    assert renewals.rounds >= 2
    assert renewals.stats.errors == ["PysyncerError"]  # type: ignore[attr-defined]


class FlakyLink(PeerLink):
    """A link whose streams break at once: ``connects`` says whether each got as far as
    streaming. Records the backoff it sleeps; stops after the last attempt."""

    def __init__(self, connects: list[bool]) -> None:
        importer: Any = NoCopies()
        syncer = RemoteSyncer("b1", "dc-b", "10.0.0.2:30191")
        factory: Any = lambda _syncer: Closable()  # noqa: E731
        super().__init__(
            "dc-b", lambda: [syncer], importer, store=None, client_factory=factory,  # type: ignore[arg-type]
            anti_entropy_interval=60,
        )  # fmt: skip
        self.connects = connects
        self.slept: list[float] = []

    async def _follow(self, client: Any, syncer: Any) -> None:
        if not self.connects:
            raise asyncio.CancelledError
        self.status.state = "streaming" if self.connects.pop(0) else "connecting"
        raise PysyncerError("stream removed")

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


class Closable:
    async def close(self) -> None:
        return None


async def test_a_link_that_had_been_streaming_reconnects_without_the_old_backoff() -> None:
    """Finding 9: the reconnect backoff doubled on every break for the life of a link and
    was never reset, so late in a run every break waited the full 10 s."""
    link = FlakyLink([False, False, False, True, True, False])
    with contextlib.suppress(asyncio.CancelledError):
        await link._run()
    assert link.slept == [BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN, BACKOFF_MIN,
                          BACKOFF_MIN, 2 * BACKOFF_MIN]  # fmt: skip


class QuietClient:
    """A syncer whose watch stream stays open and silent (no batch, no heartbeat)."""

    dialled = 0
    stalled = 0  # calls that never answered (the stalled subclasses)

    async def health(self) -> Any:
        QuietClient.dialled += 1
        return Health()

    async def watch_forever(self) -> Any:
        await asyncio.Event().wait()
        yield None  # never reached

    def watch(self, since: int, epoch: str) -> Any:
        return self.watch_forever()

    async def close(self) -> None:
        return None


class Health:
    epoch = "e1"
    revision = 7
    exported = 0


class Cursor:
    epoch = "e1"
    revision = 7


class CursorStore:
    async def get_cursor(self, dc: str) -> Cursor:
        return Cursor()


class CountingRepairs(PeerLink):
    def __init__(self, anti_entropy_interval: float) -> None:
        importer: Any = NoCopies()
        syncer = RemoteSyncer("b1", "dc-b", "10.0.0.2:30191")
        factory: Any = lambda _syncer: QuietClient()  # noqa: E731
        store: Any = CursorStore()
        super().__init__(
            "dc-b", lambda: [syncer], importer, store, factory,
            anti_entropy_interval=anti_entropy_interval,
        )  # fmt: skip
        self.repairs = 0

    async def repair(self, client: Any, epoch: str, *, streaming: bool = False) -> int:
        self._repair_now.clear()
        self.repairs += 1
        return 7


async def _until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):  # bounded
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def test_a_repair_asked_for_on_a_quiet_stream_runs_without_waiting_for_a_batch() -> None:
    """Finding 10: the streaming loop looked at repair requests (lost copies, an origin
    back after origin-grace, a manual full resync) and at anti-entropy's schedule only
    after a batch arrived, so on a quiet stream they waited for the next heartbeat."""
    link = CountingRepairs(anti_entropy_interval=3600)
    link.start()
    try:
        assert await _until(lambda: link.status.state == "streaming")
        link.request_repair()
        assert await _until(lambda: link.repairs == 1)
        assert link.status.state == "streaming"
    finally:
        await link.close()


async def test_anti_entropy_runs_on_a_quiet_stream() -> None:
    """Finding 10: anti-entropy too ran only once a batch arrived after its due time."""
    link = CountingRepairs(anti_entropy_interval=0.1)
    link.start()
    try:
        assert await _until(lambda: link.repairs >= 3)
    finally:
        await link.close()


async def test_a_silent_watch_stream_is_dialled_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 11: after a partition the watch stream's connection stayed stalled in TCP's
    retransmission backoff until the kernel's user timeout (10 s after the first unacked
    segment) ended it; an idle stream carries a heartbeat every few seconds, so a stream
    silent for longer is dropped and the link dials a new connection."""
    monkeypatch.setattr(peers, "STREAM_SILENCE_MAX", 0.2)
    QuietClient.dialled = 0
    link = CountingRepairs(anti_entropy_interval=3600)
    link.start()
    try:
        assert await _until(lambda: QuietClient.dialled >= 3)
        assert link.status.errors.get("DeadlineExceededError", 0) >= 2
    finally:
        await link.close()


class StalledDigests(QuietClient):
    """A syncer whose connection stalled: the watch is silent, digests never answer."""

    async def get_digests(self) -> Any:
        StalledDigests.stalled += 1
        await asyncio.Event().wait()


async def _given_up_and_redialled(client: type[QuietClient], importer: Any) -> None:
    """A link to ``client`` (stalled during a repair) gives the repair up with the silent
    stream and dials again: ``client.stalled`` counts the stalled calls."""
    client.stalled = 0
    syncer = RemoteSyncer("b1", "dc-b", "10.0.0.2:30191")
    store: Any = CursorStore()
    factory: Any = lambda _syncer: client()  # noqa: E731
    link = PeerLink("dc-b", lambda: [syncer], importer, store, factory, anti_entropy_interval=0)
    link.start()
    try:
        assert await _until(lambda: client.stalled >= 2)  # given up, dialled again
        assert link.status.errors.get("DeadlineExceededError", 0) >= 1
    finally:
        await link.close()


async def test_a_repair_on_a_stalled_connection_gives_up_when_the_stream_falls_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 11: a repair's digest call shares the watch stream's connection; on a
    stalled one it waited for its 10 s deadline. It is given up with the stream."""
    monkeypatch.setattr(peers, "STREAM_SILENCE_MAX", 0.3)
    await _given_up_and_redialled(StalledDigests, NoCopies())


class StalledPull(QuietClient):
    """A syncer whose connection stalls during a repair's pull: one slot differs, its
    records never come, and the watch is silent."""

    async def get_digests(self) -> Any:
        table = core_digest.SlotDigestTable()
        table.add(5, 1234)
        return 7, "e1", table.to_bytes()

    async def stalled_pull(self) -> Any:
        StalledPull.stalled += 1
        await asyncio.Event().wait()
        yield None  # never reached

    def pull_slots(self, slots: Any) -> Any:
        return self.stalled_pull()


class EmptyImporter(NoCopies):
    def digest_table(self, origin_dc: str) -> Any:
        return core_digest.SlotDigestTable()

    def wants(self, slot: int) -> bool:
        return True


async def test_a_pull_on_a_stalled_connection_gives_up_when_the_stream_falls_silent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding 11: a repair's pull shares the watch stream's connection too (its own
    deadline is minutes); on a stalled one it is given up with the stream."""
    monkeypatch.setattr(peers, "STREAM_SILENCE_MAX", 0.3)
    await _given_up_and_redialled(StalledPull, EmptyImporter())
