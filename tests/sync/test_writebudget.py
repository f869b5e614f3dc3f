"""The importer's write budget: the token bucket under a fake clock, the bootstrap and
steady rates, and renewals that go on while the budget holds writes back."""

from __future__ import annotations

import asyncio
import random
import typing
from collections.abc import Sequence
from pathlib import Path

import pytest

from pysyncer.adapters.base import LocalRef, RenewResult
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.admin.payloads import WriteBudgetStatus
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, Record, ServiceKey
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.store.sqlite import SqliteStore
from pysyncer.sync.importer import Importer, copy_instance_id
from pysyncer.sync.renewals import RENEW_BATCH
from pysyncer.sync.status import write_budget_status
from pysyncer.sync.writebudget import (
    BURST_SECONDS,
    CATCH_UP_LAG,
    MIN_WAIT,
    TokenBucket,
    WriteBudget,
    catching_up,
)

pytestmark = pytest.mark.timeout(60)


class FakeTime:
    """A clock that moves only when the code under test sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def assert_within_budget(times: list[float], rate: float, burst: float) -> None:
    """No window of the writes' times holds more than ``burst + rate * its length``."""
    for first in range(len(times)):
        for last in range(first, len(times)):
            writes = last - first + 1
            allowed = burst + rate * (times[last] - times[first])
            assert writes <= allowed + 1e-6, (first, last, writes, allowed)


# -- the bucket --------------------------------------------------------------------------


def test_a_new_bucket_gives_its_burst_at_once_then_one_token_per_period() -> None:
    bucket = TokenBucket(100.0, now=0.0)
    assert bucket.burst == 100.0 * BURST_SECONDS
    assert all(bucket.take(0.0) == 0.0 for _ in range(100))
    assert bucket.take(0.0) == pytest.approx(0.01)  # not taken: the wait for one token
    assert bucket.take(0.005) == pytest.approx(0.005)
    assert bucket.take(0.01) == 0.0
    assert bucket.tokens == pytest.approx(0.0)


def test_an_idle_bucket_fills_up_to_its_burst_only() -> None:
    bucket = TokenBucket(10.0, now=0.0)
    for _ in range(10):
        bucket.take(0.0)
    assert bucket.level(0.3) == pytest.approx(3.0)
    assert bucket.level(3600.0) == bucket.burst == 10.0
    bucket.refill(3600.0)
    assert bucket.tokens == 10.0


def test_a_clock_going_back_adds_nothing() -> None:
    bucket = TokenBucket(10.0, now=5.0)
    for _ in range(10):
        bucket.take(5.0)
    bucket.refill(4.0)
    assert bucket.tokens == 0.0
    assert bucket.take(4.5) > 0  # still measured from 5.0
    assert bucket.take(5.1) == 0.0


def test_rate_zero_is_unlimited_and_a_negative_rate_is_refused() -> None:
    bucket = TokenBucket(0.0, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(100_000))
    with pytest.raises(ValueError, match="negative"):
        bucket.set_rate(-1.0, 0.0)


def test_a_lower_rate_shrinks_the_bucket_and_keeps_what_fits() -> None:
    bucket = TokenBucket(1000.0, now=0.0)
    bucket.set_rate(50.0, 0.0)
    assert bucket.burst == 50.0 and bucket.tokens == 50.0
    for _ in range(50):
        bucket.take(0.0)
    bucket.set_rate(1000.0, 0.0)  # raised: the tokens held stay, the bucket grows
    assert bucket.tokens == 0.0 and bucket.burst == 1000.0
    assert bucket.level(0.1) == pytest.approx(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_no_window_ever_holds_more_than_burst_plus_rate(seed: int) -> None:
    """The bucket's invariant, for takers arriving at random and taking greedily."""
    rng = random.Random(seed)
    rate = rng.choice([5.0, 37.0, 200.0])
    bucket = TokenBucket(rate, now=0.0)
    now, taken = 0.0, list[float]()
    while len(taken) < 400:
        now += rng.choice([0.0, 0.0, rng.random() / rate, rng.random() * 3 / rate])
        wait = bucket.take(now)
        if wait == 0.0:
            taken.append(now)
        elif rng.random() < 0.5:
            now += wait  # a taker that sleeps exactly until its token
    assert_within_budget(taken, rate, bucket.burst)


# -- the budget --------------------------------------------------------------------------


async def test_spend_paces_writes_at_the_steady_rate() -> None:
    fake = FakeTime()
    budget = WriteBudget(1000.0, 50.0, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    times = []
    for _ in range(300):
        await budget.spend()
        times.append(fake.now)
    assert budget.mode() == "steady"
    assert_within_budget(times, 50.0, 50.0)
    # the burst at once, then the rest at the rate (sleeps of at least MIN_WAIT)
    assert fake.now - start == pytest.approx((300 - 50) / 50.0, abs=MIN_WAIT)
    assert budget.delayed == 250
    assert budget.waited == pytest.approx(fake.now - start)
    assert min(fake.sleeps) >= MIN_WAIT


async def test_the_rate_follows_whether_a_data_center_is_caught_up() -> None:
    fake = FakeTime()
    behind = [True]
    budget = WriteBudget(
        400.0, 20.0, catching_up=lambda: behind[0], clock=fake.clock, sleep=fake.sleep
    )
    times = []
    for _ in range(800):
        await budget.spend()
        times.append(fake.now)
    assert budget.mode() == "bootstrap"
    assert_within_budget(times, 400.0, 400.0)
    assert times[-1] - times[0] == pytest.approx((800 - 20) / 400.0, abs=0.01)
    behind[0] = False  # caught up: the steady rate from the next look on
    fake.now += 10.0
    steady = []
    for _ in range(100):
        await budget.spend()
        steady.append(fake.now)
    assert budget.mode() == "steady"
    assert_within_budget(steady, 20.0, 20.0)
    assert steady[-1] - steady[0] == pytest.approx((100 - 20) / 20.0, abs=0.1)
    assert write_budget_status(budget)["rate"] == 20.0


async def test_an_unlimited_budget_never_sleeps() -> None:
    fake = FakeTime()
    budget = WriteBudget(0.0, 0.0, catching_up=lambda: True, clock=fake.clock, sleep=fake.sleep)
    for _ in range(10_000):
        await budget.spend()
    assert fake.sleeps == [] and budget.delayed == 0
    assert WriteBudget.unlimited_budget().unlimited


def test_a_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        WriteBudget(-1.0, 10.0)


@pytest.mark.parametrize(
    ("synced", "state", "lag", "expected"),
    [
        (False, "repairing", 0, True),  # the first sync of a data center
        (False, "streaming", 0, True),
        (True, "streaming", 10, False),  # caught up
        (True, "streaming", CATCH_UP_LAG + 1, True),  # a backlog after a heal
        (True, "repairing", CATCH_UP_LAG + 1, True),  # a repair after the log moved on
        (True, "repairing", CATCH_UP_LAG, False),
        (False, "backoff", 0, False),  # not writing: waits to reconnect
        (False, "gone", CATCH_UP_LAG * 10, False),
        (False, "connecting", 0, False),
    ],
)
def test_what_counts_as_catching_up(synced: bool, state: str, lag: int, expected: bool) -> None:
    assert catching_up(synced, state, lag) is expected


def test_the_status_section_has_exactly_its_declared_fields() -> None:
    fake = FakeTime()
    budget = WriteBudget(200.0, 50.0, catching_up=lambda: True, clock=fake.clock)
    status = write_budget_status(budget)
    assert set(status) == set(typing.get_type_hints(WriteBudgetStatus))
    assert status["mode"] == "bootstrap" and status["rate"] == 200.0
    assert status["steady_rate"] == 50.0 and status["bootstrap_rate"] == 200.0


# -- renewals are never starved ------------------------------------------------------------

TTL_INTERVAL = 1  # the copies' heartbeat interval: TTL = 1 s x (3 + 1) = 4 s


def _record(n: int) -> Record:
    service = ServiceKey("shop", "pay", "1.0.0")
    iid = f"i{n}"
    instance = Instance(
        service, iid, f"h{n}", (f"rest://10.0.0.{n % 250}:80",), health_interval=TTL_INTERVAL
    )
    return Record("dc2", service, iid, n + 1, instance)


async def test_renewals_go_on_while_the_budget_holds_a_backlog(tmp_path: Path) -> None:
    """A backlog paced at 3 writes/s holds the importer's lock for ~13 s; meanwhile the
    renew loop keeps every copy alive (also the backlog's own, not committed yet), and a
    copy the registry lost does not stall it (forgetting it waits for the lock)."""
    registry = EmbeddedRegistry()
    adapter = EmbeddedAdapter(registry)
    await adapter.start()
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    budget = WriteBudget(3.0, 3.0)
    importer = Importer("dc1", adapter, store, budget=budget)
    heartbeats: list[str] = []  # copies renewed one by one (by id), or by origin (by round)
    renew_held, renew_origin = adapter.renew_held, adapter.renew_origin

    async def recorded(
        origin_dc: str, refs: Sequence[LocalRef], *, anew: bool = False
    ) -> list[RenewResult]:
        heartbeats.extend(ref.instance_id for ref in refs)
        return await renew_held(origin_dc, refs, anew=anew)

    async def recorded_origin(origin_dc: str) -> int:
        heartbeats.append(f"{origin_dc} in round {importer.index.generation}")
        return await renew_origin(origin_dc)

    adapter.renew_held = recorded  # type: ignore[method-assign]
    adapter.renew_origin = recorded_origin  # type: ignore[method-assign]
    await importer.start(1.0)
    backlog: asyncio.Task[None] | None = None
    try:
        await importer.apply("dc2", [_record(n) for n in range(3)], 3, "e1")  # the burst
        listing = await adapter.list_instances()
        (first,) = [c for c in listing if c.properties[ORIGIN_ID_PROPERTY] == "i0"]
        await adapter.unregister(listing.ref(first.instance_id))  # the next round: lost
        backlog = asyncio.get_running_loop().create_task(
            importer.apply("dc2", [_record(n) for n in range(3, 43)], 43, "e1")
        )
        await asyncio.sleep(4 * TTL_INTERVAL * 1.5)  # one and a half TTLs
        assert not backlog.done()  # still held back by the budget, the lock held
        assert budget.delayed > 0
        assert registry.expire() == 0  # no copy lapsed, the backlog's own included
        by_origin = {h for h in heartbeats if h.startswith("dc2 in round")}
        renewed = heartbeats.count(copy_instance_id("dc2", "i1")) + len(by_origin)
        assert renewed >= 4  # a round each second: i1 one by one, or its origin's holder
        held = {i.properties[ORIGIN_ID_PROPERTY] for i in await adapter.list_instances()}
        assert {"i1", "i2"} <= held and len(held) >= 2 + 10  # the backlog is being written
    finally:
        if backlog is not None:
            backlog.cancel()
            await asyncio.gather(backlog, return_exceptions=True)
        await importer.close()
        await adapter.close()
        await store.close()
        registry.close()


async def test_a_paced_origin_removal_lets_other_origins_in_between_chunks(
    tmp_path: Path,
) -> None:
    """Removing a data center's copies (origin-grace ``remove``) goes a chunk at a time:
    another origin's record is applied before the whole removal is done."""
    registry = EmbeddedRegistry()
    adapter = EmbeddedAdapter(registry)
    await adapter.start()
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    paced = [False]  # unlimited while filling; then 1,000 writes/s
    budget = WriteBudget(1000.0, 0.0, catching_up=lambda: paced[0])
    importer = Importer("dc1", adapter, store, budget=budget)
    await importer.start(3600)
    try:
        count = RENEW_BATCH + 100
        await importer.apply("dc2", [_record(n) for n in range(count)], count, "e1")
        paced[0] = True
        assert budget.update_mode() == "bootstrap"  # (spend looks every MODE_CHECK s)
        finished: list[str] = []

        async def remove() -> None:
            assert await importer.remove_origin("dc2") == count
            finished.append("removal")

        async def other() -> None:
            await asyncio.sleep(0.1)  # the removal's first chunk is under way
            record = _record(0)
            arriving = Record("dc3", record.service, "x0", 1, record.instance)
            await importer.apply("dc3", [arriving], 1, "e1")
            finished.append("other origin")

        await asyncio.gather(remove(), other())
        assert finished == ["other origin", "removal"]
        assert budget.delayed > 0
        assert importer.copies_by_origin() == {"dc3": 1}
        origins = {i.properties[ORIGIN_DC_PROPERTY] for i in await adapter.list_instances()}
        assert origins == {"dc3"}
    finally:
        await importer.close()
        await adapter.close()
        await store.close()
        registry.close()
