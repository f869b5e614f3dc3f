"""Closing the etcd channels never fails, and a failure it survives is logged and counted
(``pysyncer_swallowed_errors_total{site="etcd-channel-close"}``), not dropped."""

from __future__ import annotations

import logging

import pytest

from pysyncer.etcdchannels import EtcdChannels
from pysyncer.supervisor import Supervisor


async def test_a_channel_that_fails_to_close_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = EtcdChannels([("127.0.0.1", 1), ("127.0.0.1", 2)], max_message=1 << 20,
                            keepalive=False)  # fmt: skip
    broken = await channels.client(0)
    await channels.client(1)  # a healthy one: closed all the same

    async def fail() -> None:
        await broken.channel.close()
        raise RuntimeError("injected close failure")

    monkeypatch.setattr(broken, "close", fail)
    supervisor = Supervisor()
    with supervisor.bound(), caplog.at_level(logging.WARNING, logger="pysyncer.supervisor"):
        await channels.close()
    assert supervisor.swallowed() == {("etcd-channel-close", "RuntimeError"): 1}
    assert any("injected close failure" in r.getMessage() for r in caplog.records)
