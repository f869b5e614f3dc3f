"""Peers opens links only to the data centers its import filter takes something from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from pysyncer.errors import PysyncerError
from pysyncer.sync.filters import Filter, Filters, Rule
from pysyncer.sync.peers import RemoteSyncer
from pysyncer.sync.peerset import Peers

B1 = RemoteSyncer("b1", "dc-b", "10.0.0.2:30191")
C1 = RemoteSyncer("c1", "dc-c", "10.0.0.3:30191")
ONLY_B = Filters(import_=Filter(include=[Rule(dc="dc-b")]), dc="dc-a")


class Holding:
    """The importer as a peer scan reads it: the copies held per origin are set by the test."""

    def __init__(self) -> None:
        self.expired_origins: set[str] = set()
        self.needs_repair: set[str] = set()
        self.held: dict[str, int] = {}

    def copies_by_origin(self) -> dict[str, int]:
        return {dc: count for dc, count in self.held.items() if count}


class Unanswering:
    """A sync client that records whom it dialled and answers nothing."""

    def __init__(self, syncer: RemoteSyncer, dialled: list[str]) -> None:
        dialled.append(syncer.dc)

    async def health(self) -> None:
        raise PysyncerError("not in this test")

    async def close(self) -> None:
        return None


def peers_of(
    members: list[RemoteSyncer],
    importer: Holding,
    follows: Callable[[str], bool] | None,
    dialled: list[str],
    origin_grace: float = 3600,
) -> Peers:
    importer_: Any = importer
    return Peers(
        "dc-a", lambda: list(members), importer_, store=None,  # type: ignore[arg-type]
        client_factory=lambda syncer: Unanswering(syncer, dialled),  # type: ignore[arg-type,return-value]
        anti_entropy_interval=60, origin_grace=origin_grace, origin_policy="expire",
        follows=follows,
    )  # fmt: skip


async def until_dialled(dialled: list[str], dc: str) -> None:
    async with asyncio.timeout(10):
        while dc not in dialled:
            await asyncio.sleep(0.01)


async def test_a_data_center_the_rules_import_nothing_from_gets_no_link() -> None:
    dialled: list[str] = []
    peers = peers_of([B1, C1], Holding(), ONLY_B.imports_dc, dialled)
    try:
        await peers.scan()
        assert set(peers.links) == {"dc-b"}
        assert peers.not_followed == {"dc-c"}
        await until_dialled(dialled, "dc-b")
        await peers.scan()
        assert set(peers.links) == {"dc-b"}
        assert "dc-c" not in dialled
    finally:
        await peers.close()


async def test_without_a_decision_every_data_center_is_followed() -> None:
    dialled: list[str] = []
    peers = peers_of([B1, C1], Holding(), None, dialled)
    try:
        await peers.scan()
        assert set(peers.links) == {"dc-b", "dc-c"}
        assert peers.not_followed == set()
    finally:
        await peers.close()


async def test_sending_only_follows_no_one() -> None:
    dialled: list[str] = []
    peers = peers_of([B1, C1], Holding(), Filters(direction="send").imports_dc, dialled)
    try:
        await peers.scan()
        assert peers.links == {}
        assert peers.not_followed == {"dc-b", "dc-c"}
    finally:
        await peers.close()
    assert dialled == []


async def test_held_copies_keep_the_link_until_they_are_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Copies of an excluded data center still held (a failed sweep) are removed by its
    link's repairs through the filter: the link stays until none is left."""
    importer = Holding()
    importer.held["dc-c"] = 2
    dialled: list[str] = []
    peers = peers_of([B1, C1], importer, ONLY_B.imports_dc, dialled)
    try:
        await peers.scan()
        assert set(peers.links) == {"dc-b", "dc-c"}
        assert peers.not_followed == set()
        importer.held["dc-c"] = 0  # the repair removed them
        with caplog.at_level(logging.INFO, logger="pysyncer.sync.peerset"):
            await peers.scan()
        assert set(peers.links) == {"dc-b"}
        assert peers.not_followed == {"dc-c"}
        assert "data center dc-c: link closed, nothing of it is imported" in caplog.text
    finally:
        await peers.close()


async def test_a_decision_that_changes_opens_and_closes_links() -> None:
    imported = {"dc-b"}
    dialled: list[str] = []
    peers = peers_of([B1, C1], Holding(), imported.__contains__, dialled)
    try:
        await peers.scan()
        assert set(peers.links) == {"dc-b"}
        imported.symmetric_difference_update({"dc-b", "dc-c"})
        await peers.scan()
        assert set(peers.links) == {"dc-c"}
        assert peers.not_followed == {"dc-b"}
        await until_dialled(dialled, "dc-c")
    finally:
        await peers.close()


async def test_a_data_center_not_followed_has_no_origin_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    members = [B1, C1]
    dialled: list[str] = []
    peers = peers_of(members, Holding(), ONLY_B.imports_dc, dialled, origin_grace=0)
    try:
        await peers.scan()
        members.clear()  # both leave gossip
        with caplog.at_level(logging.WARNING, logger="pysyncer.sync.peerset"):
            await peers.scan()
        assert "data center dc-b gone" in caplog.text  # followed: its grace ran out
        assert "dc-c" not in caplog.text  # never followed: nothing of it to expire
        assert peers.not_followed == set()  # only live data centers are listed
    finally:
        await peers.close()


async def test_a_close_that_meets_a_repair_request_stops_every_link() -> None:
    """A link in its reconnect backoff woken (a full sync asked) in the loop turn its
    stop comes: the stop still ends it (``wait_for`` on 3.11 lost such a stop)."""
    dialled: list[str] = []
    peers = peers_of([B1, C1], Holding(), None, dialled)
    await peers.scan()
    await until_dialled(dialled, "dc-b")
    await until_dialled(dialled, "dc-c")
    await asyncio.sleep(0.05)  # both links wait out their backoff
    assert peers.request_full_sync() == ["dc-b", "dc-c"]
    async with asyncio.timeout(10):
        await peers.close()
    assert all(link._task is None or link._task.done() for link in peers.links.values())
