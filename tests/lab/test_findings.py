"""Regression tests for the daemon fixes the reliability lab led to (lab/FINDINGS.md)."""

from __future__ import annotations

from typing import Any

from pysyncer.sync.peers import Peers, RemoteSyncer


class CountingLink:
    def __init__(self) -> None:
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


class NoCopies:
    def __init__(self) -> None:
        self.expired_origins: set[str] = set()

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
