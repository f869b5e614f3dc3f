"""The embedded registry's lease eviction runs under the supervisor: a failing round is
logged with its traceback, counted (``pysyncer_task_restarts_total{task="registry-eviction"}``)
and the loop restarted, so expired instances keep being removed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pysyncer.servicecenter import EmbeddedRegistry
from pysyncer.servicecenter.app import EVICTION_TASK, RegistryServer
from pysyncer.supervisor import Supervisor


async def test_a_failing_eviction_round_is_restarted_and_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = EmbeddedRegistry()
    rounds: list[str] = []
    expire = registry.expire

    def flaky_expire() -> int:
        if not rounds:
            rounds.append("failed")
            raise RuntimeError("injected eviction failure")
        rounds.append("ran")
        return expire()

    monkeypatch.setattr(registry, "expire", flaky_expire)
    supervisor = Supervisor(backoff_min=0.01, backoff_max=0.02)
    with supervisor.bound(), caplog.at_level(logging.ERROR, logger="pysyncer.supervisor"):
        async with RegistryServer(registry, eviction_interval=0.01):
            async with asyncio.timeout(10):
                while rounds.count("ran") < 2:
                    await asyncio.sleep(0.01)
    (state,) = supervisor.states()
    assert (state.name, state.restarts) == (EVICTION_TASK, 1)
    assert "injected eviction failure" in state.last_error
    assert any(r.exc_info and EVICTION_TASK in r.getMessage() for r in caplog.records)
    assert supervisor.down() == []  # stopped with the server: not waiting for a restart
