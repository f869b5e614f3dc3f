"""pysyncer._core slots against a real redis-server: ``CLUSTER KEYSLOT`` is the oracle.

Starts one cluster-enabled redis-server for the module (on a free local port, in a
temporary directory, not daemonized), asks it for the slot of several thousand keys
over a minimal pipelined RESP client, and compares both implementations with it.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_core_module, require_program

pytestmark = pytest.mark.needs_server("redis-server")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PIPELINE_CHUNK = 500
RANDOM_KEYS = 6000
CLUSTER_BUS_OFFSET = 10000
START_ATTEMPTS = 3

EDGE_CASES: list[str | bytes] = [
    "foo",
    "",
    "{",
    "}",
    "{}",
    "}{",
    "{{}}",
    "{{}",
    "{}}",
    "{a}{b}",
    "a{b",
    "a}b{c}",
    "}{a}",
    "foo{}{bar}",
    "foo{{bar}}zap",
    "foo{bar}{zap}",
    "{user1000}.following",
    "{user1000}.followers",
    "user1000",
    "{}{x}",
    "{}x{y}z",
    "{{a}}",
    "{a{b}c}",
    "a{{b}c}d",
    "é",
    "{é}",
    "é{x}é",
    "漢字",
    "{漢字}/svc",
    "svc/{漢字",
    "😀",
    "{😀}",
    "x{😀}{é}",
    "default/app-7/service-123",
    "{default/app-7}/service-123",
    b"\x00",
    b"{\x00}",
    b"\xff{\xfe}\xfd",
    b"{\xff",
    b"\x80}{\x81}",
    "x" * 1000 + "{tail}",
]

FRAGMENTS = ["{", "}", "{}", "{{", "}}", "a", "b", "key", "/", "-", "7", "é", "漢字", "😀", "\x00"]


def random_keys(seed: int, count: int) -> list[str | bytes]:
    """Seeded keys: brace-heavy text from fragments, and random bytes with braces."""
    rng = random.Random(seed)
    keys: list[str | bytes] = []
    for i in range(count):
        if i % 3 == 2:
            size = rng.randrange(0, 40)
            keys.append(
                bytes(
                    rng.choice(b"{}{}") if rng.random() < 0.2 else rng.randrange(256)
                    for _ in range(size)
                )
            )
        else:
            keys.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(0, 14))))
    return keys


ALL_KEYS: list[str | bytes] = EDGE_CASES + random_keys(seed=20240611, count=RANDOM_KEYS)


class RespClient:
    """Just enough RESP2 for PING and pipelined integer replies, over a plain socket."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._reader = self._sock.makefile("rb")

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    @staticmethod
    def encode(*args: bytes) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)

    def read_reply(self) -> bytes | int:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"connection closed mid-reply: {line!r}")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b":":
            return int(body)
        if kind == b"-":
            raise RuntimeError(f"redis error: {body.decode(errors='replace')}")
        raise ValueError(f"unexpected reply type: {line!r}")

    def call(self, *args: bytes) -> bytes | int:
        self._sock.sendall(self.encode(*args))
        return self.read_reply()

    def keyslots(self, keys: Sequence[bytes]) -> list[int]:
        """CLUSTER KEYSLOT for every key, pipelined in chunks."""
        slots: list[int] = []
        for start in range(0, len(keys), PIPELINE_CHUNK):
            chunk = keys[start : start + PIPELINE_CHUNK]
            self._sock.sendall(b"".join(self.encode(b"CLUSTER", b"KEYSLOT", k) for k in chunk))
            for _ in chunk:
                reply = self.read_reply()
                assert isinstance(reply, int), reply
                slots.append(reply)
        return slots


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_cluster_port() -> int:
    """A port free for clients with its cluster bus port (port + 10000) free too."""
    rng = random.Random()  # not the seeded keys' generator: any free port will do
    for _ in range(200):
        port = rng.randrange(20000, 55535)  # redis refuses a bus port above 65535
        if _port_is_free(port) and _port_is_free(port + CLUSTER_BUS_OFFSET):
            return port
    pytest.fail("no free port pair (port, port + 10000) found for redis-server")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server this module started (by its pid), killing it if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _wait_for_ping(
    process: subprocess.Popen[bytes], port: int, log: Path, *, last_attempt: bool
) -> RespClient | None:
    """A client once the server answers PING; None if it lost its port to a race."""
    deadline = time.monotonic() + START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            if "already in use" in output and not last_attempt:
                return None
            pytest.fail(f"redis-server exited with {process.returncode}:\n{output}")
        try:
            client = RespClient(port)
        except OSError as exc:
            last_error = exc
            time.sleep(0.05)
            continue
        try:
            if client.call(b"PING") == b"PONG":
                return client
        except (OSError, RuntimeError, ValueError) as exc:
            last_error = exc
        client.close()
        time.sleep(0.05)
    pytest.fail(
        f"redis-server did not answer PING within {START_TIMEOUT:.0f}s ({last_error}):\n"
        f"{log.read_text(errors='replace')}"
    )


def _start(server: str, workdir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_cluster_port()
    command = [
        server,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(workdir / "nodes.conf"),
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
    ]  # fmt: skip
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    return process, port


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RespClient]:
    """A client of a cluster-enabled redis-server started for this module."""
    server = require_program("redis-server", "redis-server")
    for attempt in range(1, START_ATTEMPTS + 1):
        workdir = tmp_path_factory.mktemp("redis")
        log = workdir / "redis.log"
        process, port = _start(server, workdir, log)
        try:
            client = _wait_for_ping(process, port, log, last_attempt=attempt == START_ATTEMPTS)
            if client is None:
                continue  # lost a race for the port: try other ports
            try:
                yield client
            finally:
                client.close()
            return
        finally:
            _stop(process)


@pytest.fixture(scope="module")
def redis_slots(redis: RespClient) -> list[int]:
    """CLUSTER KEYSLOT of every key of ALL_KEYS, in order."""
    return redis.keyslots([k.encode() if isinstance(k, str) else k for k in ALL_KEYS])


@pytest.fixture(params=["py", "c"], ids=["py", "c"], scope="module")
def slots(request: pytest.FixtureRequest) -> ModuleType:
    """The slots module, once per implementation."""
    return load_core_module("slots", request.param)


def test_enough_keys_and_edge_cases() -> None:
    assert len(ALL_KEYS) >= 5000
    assert len(set(ALL_KEYS)) > 4000


def test_server_agrees_on_documented_values(redis: RespClient) -> None:
    assert redis.call(b"CLUSTER", b"KEYSLOT", b"foo") == 12182


def test_key_slot_matches_redis(slots: ModuleType, redis_slots: list[int]) -> None:
    mismatches = [
        (key, slot, slots.key_slot(key))
        for key, slot in zip(ALL_KEYS, redis_slots, strict=True)
        if slots.key_slot(key) != slot
    ]
    assert mismatches == [], f"{len(mismatches)} keys differ (key, redis, ours): {mismatches[:10]}"


def test_key_slots_matches_redis(slots: ModuleType, redis_slots: list[int]) -> None:
    assert slots.key_slots(ALL_KEYS).tolist() == redis_slots
