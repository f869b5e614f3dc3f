"""The exporter's revision waits (what the RPC server's watch streams block on) and its
following of the registry feed: waiters cancelled at any moment never stop it exporting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.model import Record
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.store.sqlite import SqliteStore
from pysyncer.sync import exporter as exporter_module
from pysyncer.sync.exporter import Exporter
from pysyncer.sync.status import exporter_status


@contextlib.asynccontextmanager
async def exporter_of(
    registry: EmbeddedRegistry, tmp_path: Path, change_log_size: int = 1000
) -> AsyncIterator[Exporter]:
    """A started exporter following ``registry``, closed with its adapter and store."""
    adapter = EmbeddedAdapter(registry)
    store = SqliteStore(tmp_path / "store.db", durable=False)
    await adapter.start()
    await store.open()
    exporter = Exporter("dc1", "n1", adapter, store, change_log_size=change_log_size)
    await exporter.start()
    try:
        await asyncio.wait_for(exporter.ready.wait(), 5)
        yield exporter
    finally:
        await exporter.close()
        await store.close()
        await adapter.close()


@pytest.fixture
async def exporting(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRegistry, Exporter]]:
    registry = EmbeddedRegistry()
    async with exporter_of(registry, tmp_path) as exporter:
        yield registry, exporter


async def register(registry: EmbeddedRegistry, sid: str, n: int) -> None:
    await registry.register_instance(sid, {"hostName": f"h{n}", "endpoints": [f"rest:x:{n}"]})


async def test_a_change_wakes_a_waiter_and_a_timeout_returns_the_revision(
    exporting: tuple[EmbeddedRegistry, Exporter],
) -> None:
    registry, exporter = exporting
    sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
    start = exporter.revision()
    assert await exporter.wait_for_revision(start, 0.01) == start  # nothing: the timeout
    waiting = asyncio.ensure_future(exporter.wait_for_revision(start, 30))
    await register(registry, sid, 0)
    assert await asyncio.wait_for(waiting, 10) == start + 1


async def test_waiters_cancelled_mid_wait_never_stop_the_exporter(
    exporting: tuple[EmbeddedRegistry, Exporter],
) -> None:
    """Watch streams end at any moment (a peer drops a silent stream, a repair gives up):
    their waits are cancelled while others time out and changes are committed. With an
    asyncio.Condition under wait_for, a cancel landing while a timed-out wait re-took the
    condition's lock left it held for good, and the exporter, which takes that lock to
    wake the waiters after a commit, exported one more change and then none (found at
    3 data centers x 100,000 instances)."""
    registry, exporter = exporting
    sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
    waits: list[asyncio.Future[int]] = []
    registered = 0
    for seed in (2, 3, 4):  # each round a different interleaving
        rnd = random.Random(seed)
        for _ in range(3000):
            step = rnd.random()
            if step < 0.45:
                timeout = rnd.choice([0.0005, 0.001, 0.002, 0.005])
                wait = exporter.wait_for_revision(exporter.revision(), timeout)
                waits.append(asyncio.ensure_future(wait))
            elif step < 0.8 and waits:
                rnd.choice(waits).cancel()
            elif step < 0.9:
                await register(registry, sid, registered)
                registered += 1
            await asyncio.sleep(rnd.choice([0, 0, 0.0005, 0.001]))
    done, pending = await asyncio.wait(waits, timeout=10)
    assert not pending, f"{len(pending)} waits never returned"
    failed = [w.exception() for w in done if not w.cancelled() and w.exception() is not None]
    assert not failed, failed[:3]
    # Every registration so far is exported, and the next one too.
    for n in range(registered, registered + 3):
        before = exporter.revision()
        await register(registry, sid, n)
        assert await exporter.wait_for_revision(before, 10) == before + 1
    assert exporter.exported_count() == registered + 3


async def until_exported(exporter: Exporter, count: int) -> None:
    for _ in range(500):
        if exporter.exported_count() == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{exporter.exported_count()} exported, {count} expected")


async def test_the_lag_behind_the_registry_is_shown_and_a_lost_feed_position_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = EmbeddedRegistry(change_log_size=5)
    async with exporter_of(registry, tmp_path) as exporter:
        sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
        await until_exported(exporter, 0)
        assert exporter.stats.registry_lag in (0, 1)  # the service alone, maybe not read yet
        for n in range(3):  # the registry's calls do not yield: the exporter has not run
            await register(registry, sid, n)
        lag = exporter.stats.registry_lag
        assert lag is not None and lag >= 3
        assert exporter_status(exporter.stats)["registry_lag"] == lag
        await until_exported(exporter, 3)
        assert exporter.stats.registry_lag == 0 and exporter.stats.feed_resets == 0
        with caplog.at_level(logging.WARNING, logger="pysyncer.sync.exporter"):
            for n in range(3, 20):  # past the registry's 5-change log before it reads
                await register(registry, sid, n)
            await until_exported(exporter, 20)  # re-listed: nothing lost
        assert exporter.stats.feed_resets == 1
        assert "lost our position" in caplog.text
        assert exporter.stats.registry_lag == 0


async def test_changes_coming_soon_after_a_commit_are_committed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a commit the exporter leaves COMMIT_SPACING before the next one: the changes
    the feed brings meanwhile share one commit (one fsync); a change after a quiet spell
    is committed at once."""
    # 3 s: the four registrations below take ~0.1 s, or a second on a loaded machine
    monkeypatch.setattr(exporter_module, "COMMIT_SPACING", 3.0)
    registry = EmbeddedRegistry()
    async with exporter_of(registry, tmp_path) as exporter:
        sizes: list[int] = []
        append = exporter.store.append_changes

        async def counted(records: Sequence[Record], **kwargs: Any) -> list[Record]:
            sizes.append(len(records))
            return await append(records, **kwargs)

        monkeypatch.setattr(exporter.store, "append_changes", counted)
        sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
        start = exporter.revision()
        await register(registry, sid, 0)
        assert await exporter.wait_for_revision(start, 5) == start + 1  # at once
        for n in range(1, 5):  # the exporter runs in between: each is a feed batch
            await register(registry, sid, n)
            await asyncio.sleep(0.02)
        while exporter.revision() < start + 5:
            await asyncio.wait_for(exporter.wait_for_revision(exporter.revision(), 5), 5)
        assert sizes == [1, 4]


async def test_a_trim_of_the_change_log_holds_back_no_commit_and_goes_a_step_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is trimmed after the commit that made a trim due, outside the commit lock,
    TRIM_STEP entries per store call: while a trim step waits on the store, changes are
    still committed and their waiters woken."""
    monkeypatch.setattr(exporter_module, "TRIM_STEP", 3)
    registry = EmbeddedRegistry()
    async with exporter_of(registry, tmp_path, change_log_size=10) as exporter:
        store = exporter.store
        gate = asyncio.Event()
        steps: list[int] = []
        trim = store.trim_changes

        async def held(*, through_revision: int | None = None, **kwargs: Any) -> int:
            await gate.wait()
            steps.append(await trim(through_revision=through_revision, **kwargs))
            return steps[-1]

        monkeypatch.setattr(store, "trim_changes", held)
        sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
        for n in range(30):  # one commit each: a trim falls due every commit
            before = exporter.revision()
            await register(registry, sid, n)
            assert await exporter.wait_for_revision(before, 5) == before + 1
        assert steps == []  # every trim step still waits on the gate
        gate.set()
        last = exporter.revision()
        for _ in range(500):
            info = await store.log_info()
            if info.first_revision == last - 10 + 1:
                break
            await asyncio.sleep(0.01)
        assert (info.first_revision, info.last_revision) == (last - 10 + 1, last)
        assert max(steps) == 3 and sum(steps) == last - 10
        assert exporter.stats.log_entries_trimmed == last - 10
