"""The ZooKeeper client's connection loop runs under the supervisor, on a real ZooKeeper.

A bug in the loop (injected: the reply dispatcher raises once) is logged with its
traceback, counted (``pysyncer_task_restarts_total{task="zookeeper-session"}``) and the
loop restarted, which reconnects with the same session; a watcher that raises is counted
(``pysyncer_swallowed_errors_total{site="zookeeper-watcher"}``) and the others still fire.
"""

from __future__ import annotations

import logging

import pytest

from pysyncer.adapters.zk import ZkClient
from pysyncer.adapters.zk.session import SESSION_TASK, WatchEvent
from pysyncer.supervisor import Supervisor
from tests.support.waits import eventually
from tests.support.zk import ZkServer, zk_server

__all__ = ["zk_server"]

pytestmark = [pytest.mark.needs_server("zookeeper"), pytest.mark.timeout(60)]


async def test_a_failing_connection_loop_is_restarted_and_counted(
    zk_server: ZkServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = Supervisor(backoff_min=0.01, backoff_max=0.02)
    client = ZkClient([zk_server.address], session_timeout=4)
    with supervisor.bound():
        await client.start()
    try:
        session = client.session_id
        dispatch = client._dispatch
        failures: list[bytes] = []

        def broken_once(data: bytes) -> bool:
            if not failures:
                failures.append(data)
                raise RuntimeError("injected dispatcher bug")
            return dispatch(data)

        monkeypatch.setattr(client, "_dispatch", broken_once)
        with caplog.at_level(logging.ERROR, logger="pysyncer.supervisor"):
            client.drop_connection()  # the reconnection's first reply meets the bug
            await eventually(lambda: supervisor.states()[0].restarts == 1)
            await eventually(lambda: client.connected)
        (state,) = supervisor.states()
        assert (state.name, state.restarts) == (SESSION_TASK, 1)
        assert "injected dispatcher bug" in state.last_error
        assert any(r.exc_info and SESSION_TASK in r.getMessage() for r in caplog.records)
        await client.create("/supervised", b"after the restart")
        assert (await client.get_data("/supervised"))[0] == b"after the restart"
        assert client.session_id == session  # the same session, reconnected
        await client.delete("/supervised")
    finally:
        await client.close()
    assert supervisor.down() == []


async def test_a_watcher_that_raises_is_counted_and_the_others_fire(zk_server: ZkServer) -> None:
    supervisor = Supervisor()
    client = ZkClient([zk_server.address], session_timeout=4)
    with supervisor.bound():
        await client.start()
    fired: list[str] = []

    def broken(event: WatchEvent) -> None:
        raise ValueError("injected watcher bug")

    try:
        assert await client.exists("/watched", watch=broken) is None
        assert await client.exists("/watched", watch=lambda e: fired.append(e.path)) is None
        await client.create("/watched")
        await eventually(lambda: fired == ["/watched"])
        assert supervisor.swallowed() == {("zookeeper-watcher", "ValueError"): 1}
        await client.delete("/watched")
    finally:
        await client.close()
