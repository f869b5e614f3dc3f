# mypy: disable-error-code="import-untyped"
"""Closing the etcd channels never fails, and a failure it survives is logged and counted
(``pysyncer_swallowed_errors_total{site="etcd-channel-close"}``), not dropped; which call
failures mean the endpoint is gone."""

from __future__ import annotations

import logging

import grpc
import pytest

from pysyncer.etcdchannels import CORE_TRANSPORT_FAILURE, EtcdChannels, is_unavailable
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


def _failed(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_a_broken_connection_is_unavailable_and_an_etcd_answer_is_not() -> None:
    """gRPC's core reports a connection cut under a call as INTERNAL "Internal error
    from Core" (seen once in CI on an endpoint's proxy stopping): the next endpoint is
    tried. etcd's own internal errors, and its refusals, are answers."""
    assert is_unavailable(_failed(grpc.StatusCode.INTERNAL, CORE_TRANSPORT_FAILURE))
    assert is_unavailable(_failed(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert not is_unavailable(_failed(grpc.StatusCode.INTERNAL, "etcdserver: corrupt cluster"))
    assert not is_unavailable(_failed(grpc.StatusCode.PERMISSION_DENIED, "permission denied"))
