"""The trust rule for remote syncers: the established ownership group is followed, a
claimant of another group never is and raises the alarm once, and a group long gone is
forgotten; the established group outlives a restart (kept in the store). Also: the group
tag of embedded and shared stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pysyncer.errors import PysyncerError
from pysyncer.store import SqliteStore, Store
from pysyncer.store.url import parse_store_url
from pysyncer.sync.peers import RemoteSyncer
from pysyncer.sync.peerset import Peers
from pysyncer.sync.trust import TrustBook, ownership_group

B1 = RemoteSyncer("b1", "dc-b", "10.0.0.2:1", "node:b1")
B2 = RemoteSyncer("b2", "dc-b", "10.0.0.3:1", "node:b1")  # the same group (a shared store)
EVIL = RemoteSyncer("evil", "dc-b", "10.6.6.6:1", "node:evil")


def test_a_claimant_of_another_group_is_never_followed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    book = TrustBook(forget_after=100, clock=lambda: now[0])
    assert book.followable("dc-b", [B1]) == [B1]
    book.followed(B1)
    assert book.established("dc-b") == "node:b1"
    with caplog.at_level(logging.WARNING, logger="pysyncer.sync.trust"):
        assert book.followable("dc-b", [B1, EVIL, B2]) == [B1, B2]
        assert book.followable("dc-b", [EVIL]) == []  # the real one away: nobody
        assert book.followable("dc-b", [EVIL]) == []
    assert caplog.text.count("identity conflict: syncer evil") == 1  # once per claimant
    assert book.conflicts == 1
    assert book.status() == {
        "established": {"dc-b": "node:b1"},
        "claimants": {"dc-b": {"evil": "node:evil"}},
        "conflicts": 1,
    }
    assert book.followable("dc-b", [B1]) == [B1]
    assert book.status()["claimants"] == {}  # the claimant left: no longer listed
    assert book.conflicts == 1  # the counter counts what was seen


def test_a_group_gone_for_the_grace_is_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    book = TrustBook(forget_after=100, clock=lambda: now[0])
    book.followable("dc-b", [B1])
    book.followed(B1)
    now[0] = 99.0
    assert book.followable("dc-b", [EVIL]) == []
    now[0] = 100.0
    with caplog.at_level(logging.WARNING, logger="pysyncer.sync.trust"):
        assert book.followable("dc-b", [EVIL]) == [EVIL]
    assert "no syncer of group node:b1 has served data center dc-b for 100 s" in caplog.text
    assert book.established("dc-b") is None
    book.followed(EVIL)
    assert book.followable("dc-b", [B1, EVIL]) == [EVIL]


def test_several_groups_without_history_raise_the_alarm() -> None:
    book = TrustBook(forget_after=100)
    assert book.followable("dc-b", [B1, EVIL]) == [B1, EVIL]
    assert book.conflicts == 2  # each claimant once: no history tells the real one
    book.followed(B1)
    assert book.followable("dc-b", [B1, EVIL]) == [B1]
    assert book.conflicts == 2  # a claimant is counted once, whatever happens next


def test_ownership_groups() -> None:
    embedded = parse_store_url("embedded")
    assert ownership_group(embedded, "n1") == "node:n1"
    one = parse_store_url("etcd://10.0.0.1:2379,10.0.0.2:2379?prefix=/p/")
    same = parse_store_url("etcd://10.0.0.2:2379,10.0.0.1:2379?prefix=/p/")
    other = parse_store_url("etcd://10.0.0.1:2379,10.0.0.2:2379?prefix=/q/")
    assert ownership_group(one, "n1") == ownership_group(same, "n2")
    assert ownership_group(one, "n1") != ownership_group(other, "n1")
    assert ownership_group(one, "n1").startswith("etcd:")


class NoCopies:
    """The importer as a peer scan reads it, holding no copies."""

    def __init__(self) -> None:
        self.expired_origins: set[str] = set()
        self.needs_repair: set[str] = set()

    def copies_by_origin(self) -> dict[str, int]:
        return {}


class HandshakeOnly:
    """A sync client that answers the health call (the link then follows its syncer) and
    refuses everything after it."""

    def __init__(self, syncer: RemoteSyncer, dialled: list[str]) -> None:
        dialled.append(syncer.node)

    async def health(self) -> SimpleNamespace:
        return SimpleNamespace(epoch="e1", revision=0, exported=0)

    async def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., Awaitable[None]]:
        async def refused(*args: object, **kwargs: object) -> None:
            raise PysyncerError(f"{name}: not in this test")

        return refused


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def peers_of(store: Store, members: list[RemoteSyncer], dialled: list[str]) -> Peers:
    importer: Any = NoCopies()
    return Peers(
        "dc-a", lambda: list(members), importer, store,
        lambda syncer: HandshakeOnly(syncer, dialled),  # type: ignore[arg-type,return-value]
        anti_entropy_interval=60, origin_grace=3600, origin_policy="expire", scan_interval=0.05,
    )  # fmt: skip


async def test_a_restarted_syncer_keeps_following_the_established_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dialled: list[str] = []
    async with SqliteStore(tmp_path / "store.db", durable=False) as store:
        peers = peers_of(store, [B1], dialled)
        peers.start()
        try:
            await eventually(lambda: _is(store.trusted_groups(), {"dc-b": "node:b1"}))
        finally:
            await peers.close()
    dialled.clear()
    members = [EVIL]  # after the restart, the claimant is the only one heard at first
    async with SqliteStore(tmp_path / "store.db", durable=False) as store:
        peers = peers_of(store, members, dialled)
        with caplog.at_level(logging.WARNING, logger="pysyncer.sync.trust"):
            peers.start()
            try:
                await eventually(lambda: _true(peers.trust.conflicts == 1))
                assert peers.syncers_of("dc-b") == []
                assert peers.trust.status()["claimants"] == {"dc-b": {"evil": "node:evil"}}
                members.append(B1)  # the real one is back: followed, the claimant still not
                peers.wake("dc-b")  # (as a scan does for a data center back in gossip)
                await eventually(lambda: _true("b1" in dialled))
            finally:
                await peers.close()
        assert "evil" not in dialled
        assert "identity conflict: syncer evil" in caplog.text
        assert await store.trusted_groups() == {"dc-b": "node:b1"}


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value
