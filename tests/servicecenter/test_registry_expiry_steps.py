"""Lease expiry in bounded steps: a wave of leases coming due at once never makes one long
synchronous run (issue 17: a million copies registered at 17,000/s come due together)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pysyncer.servicecenter import EmbeddedRegistry
from pysyncer.servicecenter.core import API_EXPIRY_STEP
from pysyncer.servicecenter.leases import EXPIRY_STEP, LeaseQueue
from tests.support.servicecenter import ManualClock

pytestmark = pytest.mark.timeout(30)


def test_one_call_looks_at_most_a_step_of_the_queue() -> None:
    clock = ManualClock()
    queue = LeaseQueue(clock)
    leases = [queue.grant({"healthCheck": {"interval": 30, "times": 3}}, None, ("d", "p"), "s")]
    clock.now += 0.5  # the others come due after it
    leases += [
        queue.grant({"healthCheck": {"interval": 30, "times": 3}}, None, ("d", "p"), "s")
        for _ in range(EXPIRY_STEP + 999)
    ]
    clock.now += 120.0
    for lease in leases[1:]:
        queue.renew(lease)  # renewed: due now, queued again at their new expiry
    assert queue.behind()
    assert [*queue.expired(lambda _: True)] == [leases[0]]  # expired: the first in the queue
    assert queue.behind()  # 1,000 renewed ones are still due
    assert [*queue.expired(lambda _: True)] == []
    assert not queue.behind()
    assert len(queue) == EXPIRY_STEP + 999


async def test_eviction_takes_a_wave_in_steps_and_lets_the_loop_run() -> None:
    clock = ManualClock()
    registry = EmbeddedRegistry(clock=clock, initial_revision=0)
    sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
    count = 2 * EXPIRY_STEP + 10
    await registry.register_instances(
        [(sid, {"hostName": f"h{n}", "endpoints": [f"rest://h{n}:1"]}) for n in range(count)]
    )
    clock.now += 121.0  # every lease has run out
    turns = 0
    steps: list[int] = []

    async def counter() -> None:
        nonlocal turns
        while True:
            turns += 1
            steps.append(registry.instance_count())
            await asyncio.sleep(0)

    counting = asyncio.create_task(counter())
    eviction = asyncio.create_task(registry.run_eviction(60.0))
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert registry.instance_count() == 0
        # The counter ran between the steps: it saw the registry part-way through.
        assert any(0 < seen < count for seen in steps), steps[:10]
    finally:
        for task in (eviction, counting):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_an_operation_expires_a_small_step_and_the_eviction_the_rest() -> None:
    clock = ManualClock()
    registry = EmbeddedRegistry(clock=clock, initial_revision=0)
    sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
    count = 3 * API_EXPIRY_STEP
    await registry.register_instances(
        [(sid, {"hostName": f"h{n}", "endpoints": [f"rest://h{n}:1"]}) for n in range(count)]
    )
    clock.now += 121.0  # every lease has run out
    registry.revision()  # an operation: one small step of the wave
    assert registry.instance_count() == count - API_EXPIRY_STEP
    assert registry.expire() == count - API_EXPIRY_STEP  # the eviction's step: the rest
    assert registry.instance_count() == 0
