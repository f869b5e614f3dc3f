"""Key rotation: aggregation of answers, the answering side (keyring, file, refusals,
list truncation), KeyManager over a simulated pool, the daemon's keyring file, and the
admin routes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Hashable, Mapping
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer.admin.app import build_app, key_fingerprint
from pysyncer.admin.payloads import Event, Health, KeyAnswer, Member, QueryAnswer
from pysyncer.errors import ConfigError, PysyncerError
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.clock import Clock
from pysyncer.gossip.keymanager import (
    EMPTY_KEYRING_MESSAGE,
    INSTALL_KEY_QUERY,
    LIST_KEYS_QUERY,
    NO_KEYRING_MESSAGE,
    REMOVE_KEY_QUERY,
    USE_KEY_QUERY,
    EncryptionDisabledError,
    KeyManager,
    KeyOperationError,
    KeyQueryResponder,
    KeyResponse,
    aggregate_key_responses,
)
from pysyncer.gossip.keyring import Keyring, encode_key
from pysyncer.gossip.serf import Serf
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.stack import KEYRING_FILE, load_keyring
from pysyncer.gossip.timing import LAN, GossipProfile
from tests.gossip.test_serf import Harness

K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))
B1, B2, B3 = (encode_key(k) for k in (K1, K2, K3))


def answer(result: bool, message: str = "", keys: tuple[str, ...] = (), primary: str = "") -> bytes:
    return sm.NodeKeyResponse(result, message, keys or None, primary).to_bytes()


# -- aggregation -------------------------------------------------------------------


def test_aggregate_counts_keys_primaries_and_errors() -> None:
    responses = {
        "a": answer(True, keys=(B1, B2), primary=B1),
        "b": answer(True, "truncated key list response", keys=(B1,), primary=B1),
        "c": answer(False, "Removing the primary key is not allowed"),
        "d": b"\x05garbage",
        "e": bytes([sm.SerfMessageType.KEY_RESPONSE]) + b"\xc1",
    }
    result = aggregate_key_responses("list-keys", responses, num_nodes=6)
    assert (result.num_nodes, result.num_resp, result.num_err) == (6, 5, 3)
    assert result.keys == {B1: 2, B2: 1}
    assert result.primary_keys == {B1: 2}
    assert result.messages["b"] == "truncated key list response"  # a warning, not an error
    assert result.messages["c"] == "Removing the primary key is not allowed"
    assert result.messages["d"].startswith("Invalid key query response type")
    assert result.messages["e"].startswith("Failed to decode key query response")
    assert not result.ok and result.error() == "3/6 nodes reported failure"


def test_success_needs_every_member() -> None:
    responses = {"a": answer(True), "b": answer(True)}
    assert aggregate_key_responses("install-key", responses, 2).ok
    partial = aggregate_key_responses("install-key", responses, 3)
    assert partial.error() == "2/3 nodes reported success"
    body = partial.to_dict()
    assert body["num_resp"] == 2 and body["primary_keys"] == {} and body["messages"] == {}


# -- answering side ----------------------------------------------------------------


def key_query(name: str, key: bytes | None, ltime: int = 1) -> sm.SerfQuery:
    return sm.SerfQuery(
        ltime=ltime, id=7, addr=bytes([10, 0, 0, 2]), port=7946, source_node="other",
        filters=None, flags=0, relay_factor=0, timeout=1_000_000_000,
        name=name, payload=sm.KeyRequest(key).to_bytes(),
    )  # fmt: skip


def respond(responder: KeyQueryResponder, name: str, key: bytes | None) -> sm.NodeKeyResponse:
    return sm.NodeKeyResponse.from_bytes(responder.handle(key_query(name, key)))


def test_install_use_remove_apply_and_persist(tmp_path: Path) -> None:
    harness = Harness("a")
    keyring = Keyring(K1)
    path = tmp_path / "keyring.json"
    responder = KeyQueryResponder(harness.serf, lambda: keyring, path)
    assert respond(responder, INSTALL_KEY_QUERY, K2) == sm.NodeKeyResponse(True, "")
    assert list(keyring) == [K1, K2] and json.loads(path.read_text()) == [B1, B2]
    assert respond(responder, USE_KEY_QUERY, K2).result
    assert keyring.primary == K2 and json.loads(path.read_text()) == [B2, B1]
    assert respond(responder, REMOVE_KEY_QUERY, K1).result
    assert list(keyring) == [K2] and json.loads(path.read_text()) == [B2]
    assert os.stat(path).st_mode & 0o777 == 0o600
    listed = respond(responder, LIST_KEYS_QUERY, None)
    assert listed == sm.NodeKeyResponse(True, "", (B2,), B2)


def test_refusals_leave_keyring_and_file_alone(tmp_path: Path) -> None:
    harness = Harness("a")
    keyring = Keyring([K1, K2])
    path = tmp_path / "keyring.json"
    keyring.save(path)
    responder = KeyQueryResponder(harness.serf, lambda: keyring, path)
    removed = respond(responder, REMOVE_KEY_QUERY, K1)
    assert not removed.result and "primary" in removed.message
    used = respond(responder, USE_KEY_QUERY, K3)
    assert not used.result and "not installed" in used.message
    bad = respond(responder, INSTALL_KEY_QUERY, b"short")
    assert not bad.result and "16, 24 or 32" in bad.message
    assert keyring.keys == (K1, K2) and json.loads(path.read_text()) == [B1, B2]


def test_without_encryption_answers_like_serf() -> None:
    responder = KeyQueryResponder(Harness("a").serf, lambda: None)
    assert respond(responder, INSTALL_KEY_QUERY, K2) == sm.NodeKeyResponse(
        False, NO_KEYRING_MESSAGE
    )
    assert respond(responder, LIST_KEYS_QUERY, None) == sm.NodeKeyResponse(
        False, EMPTY_KEYRING_MESSAGE
    )


def test_write_failure_is_reported(tmp_path: Path) -> None:
    keyring = Keyring(K1)
    responder = KeyQueryResponder(Harness("a").serf, lambda: keyring, tmp_path / "no" / "file")
    result = respond(responder, INSTALL_KEY_QUERY, K2)
    assert not result.result and "cannot write keyring file" in result.message


def test_list_truncated_to_the_response_limit() -> None:
    harness = Harness("a")
    keys = [bytes([i]) * 32 for i in range(1, 61)]
    responder = KeyQueryResponder(harness.serf, lambda: Keyring(keys))
    query = key_query(LIST_KEYS_QUERY, None)
    raw = responder.handle(query)
    envelope = sm.SerfQueryResponse(query.ltime, query.id, "a", 0, raw).to_bytes()
    assert len(envelope) <= LAN.query_response_size_limit
    listed = sm.NodeKeyResponse.from_bytes(raw)
    shown = len(listed.keys or ())
    assert 10 < shown < 60 and listed.result
    assert listed.message == f"truncated key list response, showing first {shown} of 60 keys"
    assert listed.keys == tuple(encode_key(k) for k in keys[:shown])


def test_serf_routes_key_queries_and_answers_by_udp() -> None:
    harness = Harness("a")
    keyring = Keyring(K1)
    KeyQueryResponder(harness.serf, lambda: keyring).register()
    harness.serf._queries.handle_query(key_query(INSTALL_KEY_QUERY, K2))
    assert keyring.keys == (K1, K2)
    assert len(harness.network.sent) == 1
    address, packet = harness.network.sent[0]
    assert address == ("10.0.0.2", 7946)
    assert bytes([sm.SerfMessageType.KEY_RESPONSE]) in packet


# -- asking side over a simulated pool ------------------------------------------------


async def key_pool(
    size: int, keyrings: Mapping[str, Keyring | None]
) -> tuple[Simulation, dict[str, KeyManager]]:
    managers: dict[str, KeyManager] = {}

    def factory(
        name: str, profile: GossipProfile, clock: Clock[Hashable], rng: random.Random
    ) -> Serf:
        serf = Serf(name, {"role": "test"}, profile, clock, rng)
        KeyQueryResponder(serf, lambda: keyrings[name]).register()
        managers[name] = KeyManager(serf, lambda: keyrings[name])
        return serf

    sim = Simulation(size, seed=5, delegate_factory=factory)
    sim.start()
    await sim.join_all()
    assert await sim.run_until(lambda: all(len(sim.view(n)) == size for n in sim.nodes), 30)
    return sim, managers


async def drive(sim: Simulation, coroutine: Any) -> Any:
    task = asyncio.ensure_future(coroutine)
    assert await sim.run_until(task.done, limit=60) is not None
    return task.result()


async def test_rotation_across_a_simulated_pool() -> None:
    keyrings: dict[str, Keyring | None] = {f"n{i}": Keyring(K1) for i in range(5)}
    sim, managers = await key_pool(5, keyrings)
    manager = managers["n2"]
    installed: KeyResponse = await drive(sim, manager.install_key(B2))
    assert (installed.num_nodes, installed.num_resp, installed.num_err) == (5, 5, 0)
    await drive(sim, manager.use_key(B2))
    await drive(sim, manager.remove_key(B1))
    listed: KeyResponse = await drive(sim, managers["n4"].list_keys())
    assert listed.keys == {B2: 5} and listed.primary_keys == {B2: 5}
    assert all(k is not None and k.keys == (K2,) for k in keyrings.values())

    with pytest.raises(KeyOperationError) as failure:
        await drive(sim, manager.use_key(B3))  # not installed anywhere
    assert failure.value.response.num_err == 5
    assert str(failure.value) == "5/5 nodes reported failure"
    with pytest.raises(ConfigError):
        await manager.install_key("not base64!")


async def test_a_member_without_encryption_fails_the_operation() -> None:
    keyrings: dict[str, Keyring | None] = {"n0": Keyring(K1), "n1": Keyring(K1), "n2": None}
    sim, managers = await key_pool(3, keyrings)
    with pytest.raises(KeyOperationError) as failure:
        await drive(sim, managers["n0"].install_key(B2))
    response = failure.value.response
    assert (response.num_resp, response.num_err) == (3, 1)
    assert response.messages == {"n2": NO_KEYRING_MESSAGE}
    with pytest.raises(EncryptionDisabledError, match="encryption is not enabled"):
        await managers["n2"].list_keys()
    assert isinstance(failure.value, PysyncerError) and isinstance(failure.value, RuntimeError)


async def test_a_silent_member_fails_the_operation() -> None:
    keyrings: dict[str, Keyring | None] = {f"n{i}": Keyring(K1) for i in range(3)}
    sim, managers = await key_pool(3, keyrings)
    managers["n0"].timeout = 1.0
    sim.partition(["n0", "n1"], ["n2"])
    with pytest.raises(KeyOperationError) as failure:
        await drive(sim, managers["n0"].list_keys())
    response = failure.value.response
    assert response.no_response == ["n2"] and response.num_resp == 2
    assert str(failure.value) == "2/3 nodes reported success"


# -- the daemon's keyring file -------------------------------------------------------


def test_keyring_file_created_from_encrypt(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "data"
    keyring, path = load_keyring(data, K1)
    assert keyring is not None and keyring.keys == (K1,)
    assert path == data / KEYRING_FILE and json.loads(path.read_text()) == [B1]
    assert data.stat().st_mode & 0o777 == 0o700


def test_keyring_file_wins_over_encrypt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Keyring([K2, K1]).save(tmp_path / KEYRING_FILE)
    keyring, _ = load_keyring(tmp_path, K1)
    assert keyring is not None and keyring.keys == (K2, K1)
    with caplog.at_level(logging.WARNING):
        keyring, _ = load_keyring(tmp_path, K3)
    assert keyring is not None and keyring.keys == (K2, K1)  # K3 ignored, not installed
    assert json.loads((tmp_path / KEYRING_FILE).read_text()) == [B2, B1]
    assert "ignoring --encrypt" in caplog.text
    keyring, _ = load_keyring(tmp_path, None)
    assert keyring is not None and keyring.primary == K2


def test_no_key_no_file_is_no_encryption(tmp_path: Path) -> None:
    assert load_keyring(tmp_path / "data", None) == (None, None)
    assert not (tmp_path / "data").exists()


def test_broken_keyring_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / KEYRING_FILE).write_text("[]")
    with pytest.raises(ConfigError, match="no keys"):
        load_keyring(tmp_path, K1)


# -- admin routes --------------------------------------------------------------------


class FakeKeys:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.fail: Exception | None = None

    async def key_operation(self, op: str, key: str | None) -> KeyAnswer:
        self.calls.append((op, key))
        if self.fail is not None:
            raise self.fail
        return cast(KeyAnswer, KeyResponse(op, 1, 1, 0, {}, {B1: 1}, {B1: 1}).to_dict())


class NoBackend:
    """The gossip routes' backend, which the key routes never use."""

    def health(self) -> Health:
        raise AssertionError("not used by the key routes")

    def members(self) -> list[Member]:
        raise AssertionError("not used by the key routes")

    async def send_event(self, name: str, payload: bytes, coalesce: bool) -> None:
        raise AssertionError("not used by the key routes")

    def recent_events(self) -> list[Event]:
        raise AssertionError("not used by the key routes")

    async def query(self, name: str, payload: bytes, timeout_ms: int | None) -> QueryAnswer:
        raise AssertionError("not used by the key routes")


@pytest.fixture
async def keys_api() -> AsyncIterator[tuple[aiohttp.ClientSession, str, FakeKeys]]:
    keys = FakeKeys()
    runner = web.AppRunner(build_app(NoBackend(), CollectorRegistry(), keys=keys))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/keys", keys
    await runner.cleanup()


async def test_key_routes(keys_api: tuple[aiohttp.ClientSession, str, FakeKeys]) -> None:
    session, url, keys = keys_api
    async with session.get(url) as response:
        assert response.status == 200
        assert (await response.json())["keys"] == {key_fingerprint(B1): 1}  # never the key
    async with session.post(url, json={"op": "install", "key": B2}) as response:
        assert response.status == 200
    assert keys.calls == [("list", None), ("install", B2)]
    bad_bodies: list[object] = [
        {"op": "rotate", "key": B2},
        {"op": "use"},
        {"op": "use", "key": 3},
        [],
    ]
    for bad in bad_bodies:
        async with session.post(url, json=bad) as response:
            assert response.status == 400 and "error" in await response.json()
    keys.fail = ConfigError("encryption key is not valid standard base64")
    async with session.post(url, json={"op": "use", "key": "x"}) as response:
        assert response.status == 400
    keys.fail = EncryptionDisabledError()
    async with session.get(url) as response:
        assert response.status == 409
        assert "encryption is not enabled" in (await response.json())["error"]
    partial = KeyResponse("use-key", 3, 3, 1, {"n2": "Requested key is not in the keyring"})
    keys.fail = KeyOperationError("1/3 nodes reported failure", partial)
    async with session.post(url, json={"op": "use", "key": B2}) as response:
        assert response.status == 502
        body = await response.json()
        assert body["error"] == "1/3 nodes reported failure" and body["num_err"] == 1
        assert body["messages"] == {"n2": "Requested key is not in the keyring"}


async def test_key_routes_without_a_key_backend() -> None:
    runner = web.AppRunner(build_app(NoBackend(), CollectorRegistry()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{runner.addresses[0][1]}/v1/keys") as response,
        ):
            assert response.status == 501
    finally:
        await runner.cleanup()
