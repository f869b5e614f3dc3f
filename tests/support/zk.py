"""A real ZooKeeper server (Debian's ``zookeeper`` package) for tests, on loopback.

Started in the foreground with its own ``zoo.cfg`` in a temporary directory (small
``tickTime`` so session timeouts are short), stopped by the pid it was started with.
Also: force a session to expire the way the ZooKeeper test suites do (open a second
connection with the same session id and password, then close that session).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pysyncer.adapters.base import LocalRef
from pysyncer.adapters.dubbourl import decode_node_name, encode_node_name, instance_from_url
from pysyncer.adapters.zk import ZkClient, proto
from pysyncer.hostport import parse_host_port
from pysyncer.model import ServiceKey
from pysyncer.procs import free_port
from pysyncer.testing.harness import AppInstance
from tests.conftest import IN_CI
from tests.support.tcp_proxy import TcpProxy

ZK_JAR = "/usr/share/java/zookeeper.jar"
MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


def zookeeper_available() -> str | None:
    """Why a ZooKeeper server cannot be started here, or None when it can."""
    if not Path(ZK_JAR).exists():
        return "zookeeper is not installed: run 'apt-get install zookeeper'"
    if shutil.which("java") is None:
        return "java is not installed: run 'apt-get install default-jre-headless'"
    return None


@pytest.fixture(scope="module")
def zk_server() -> Iterator[ZkServer]:
    """One real ZooKeeper for a test module (skipped where none can run, failed in CI)."""
    reason = zookeeper_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    server = ZkServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


class ZkServer:
    """One standalone ZooKeeper on 127.0.0.1 with a temporary data dir."""

    def __init__(
        self,
        *,
        tick_ms: int = 250,
        port: int | None = None,
        extra_config: str = "",
        extra_classpath: tuple[str, ...] = (),
    ) -> None:
        """``extra_config``: more ``zoo.cfg`` lines (e.g. a secure client port);
        ``extra_classpath``: jars the server needs for them (e.g. Netty's codec)."""
        self.port = port or free_port()
        self.tick_ms = tick_ms
        self.classpath = ":".join(extra_classpath)
        self.tmp = Path(tempfile.mkdtemp(prefix="pysyncer-zk-"))
        self.proc: subprocess.Popen[bytes] | None = None
        (self.tmp / "data").mkdir()
        (self.tmp / "conf").mkdir()
        (self.tmp / "conf" / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, CONSOLE\n"
            "log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.CONSOLE.layout.ConversionPattern=%d %p %c{1} %m%n\n"
        )
        (self.tmp / "conf" / "zoo.cfg").write_text(
            f"tickTime={tick_ms}\n"
            f"dataDir={self.tmp / 'data'}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "maxClientCnxns=0\n"
            f"minSessionTimeout={2 * tick_ms}\n"
            "maxSessionTimeout=20000\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=srvr,ruok,cons\n"
            "snapCount=100000\n"
            "preAllocSize=4096\n" + extra_config
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the JVM and wait until it accepts a session."""
        log = open(self.tmp / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                "java",
                "-Xms32m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Xshare:auto",
                "-Dzookeeper.admin.enableServer=false",
                "-Dzookeeper.jmx.log4j.disable=true",
                f"-Dzookeeper.log.dir={self.tmp}",
                "-cp",
                ":".join(filter(None, [str(self.tmp / "conf"), ZK_JAR, self.classpath])),
                MAIN,
                str(self.tmp / "conf" / "zoo.cfg"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zookeeper exited early: {self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"zookeeper did not start within {timeout}s: {self.log_tail()}")

    def _answers(self) -> bool:
        """True when the server completes a session handshake (then closes it)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                request = proto.ConnectRequest(0, 0, 2000, 0, b"\x00" * 16)
                sock.sendall(proto.frame(request.encode()))
                header = _recv_exact(sock, 4)
                body = _recv_exact(sock, struct.unpack(">i", header)[0])
                response = proto.ConnectResponse.decode(body)
                sock.sendall(proto.request(1, proto.Op.CLOSE_SESSION))
                return response.session_id != 0
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop the server started by :meth:`start` (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = (self.tmp / "server.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("connection closed")
        chunks += chunk
    return chunks


async def expire_session(address: str, session_id: int, password: bytes) -> None:
    """End a live session from outside: attach to it on a second connection and close it.

    The owner's connection is dropped by the server; its next handshake is answered
    with a zero timeout (session expired), exactly as after a long partition.
    """
    host, port = parse_host_port(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = proto.ConnectRequest(0, 0, 4000, session_id, password)
        writer.write(proto.frame(request.encode()))
        size = proto.frame_length(await asyncio.wait_for(reader.readexactly(4), 5))
        response = proto.ConnectResponse.decode(await reader.readexactly(size))
        if response.expired:
            return
        writer.write(proto.request(1, proto.Op.CLOSE_SESSION))
        size = proto.frame_length(await asyncio.wait_for(reader.readexactly(4), 5))
        await reader.readexactly(size)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class ZookeeperHarness:
    """:class:`~pysyncer.testing.harness.RegistryHarness` for the ``zookeeper`` adapter.

    Shares one :class:`ZkServer`; each harness has its own Dubbo root and reaches the
    server through its own :class:`~tests.support.tcp_proxy.TcpProxy`, so ``stop()`` makes
    "its" server unreachable without stopping the JVM. Native applications are Dubbo
    providers with their own ZooKeeper session (ephemeral provider nodes).
    """

    kind = "zookeeper"
    change_bound = 5.0
    features: frozenset[str] = frozenset({"batch_renew"})

    def __init__(self, server: ZkServer, *, settings: dict[str, Any] | None = None) -> None:
        self.server = server
        self.root = f"/dubbo-{uuid.uuid4().hex[:10]}"
        self.proxy = TcpProxy("127.0.0.1", server.port)
        self.app = ZkClient([server.address], session_timeout=5.0)
        self._settings = settings or {}

    def addresses(self) -> list[str]:
        return [self.proxy.address]

    def settings(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "session-timeout": 2,
            "request-timeout": 3,
            "connect-timeout": 1,
            **self._settings,
        }

    async def start(self) -> None:
        await self.proxy.start()
        await self.app.start()

    async def stop(self) -> None:
        await self.proxy.stop()
        await self.app.close()

    def service(self, name: str) -> ServiceKey:
        return ServiceKey("demo-app", f"com.example.{name}", "1.0.0")

    def provider_url(
        self, service: ServiceKey, host: str, port: int, properties: Mapping[str, str]
    ) -> str:
        """A provider URL as Dubbo 2.7 writes it (parameters sorted by name)."""
        params = {
            "anyhost": "true",
            "application": service.app,
            "dubbo": "2.0.2",
            "interface": service.name,
            "methods": "get,put",
            "pid": "4242",
            "side": "provider",
            "timestamp": "1700000000000",
            "version": service.version,
            **properties,
        }
        query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        return f"dubbo://{host}:{port}/{service.name}?{query}"

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        url = self.provider_url(service, host, port, properties or {})
        path = f"{self.root}/{service.name}/providers/{encode_node_name(url)}"
        await self.app.create(path, host.encode(), ephemeral=True, make_parents=True)
        return AppInstance(service, url, host, port, dict(properties or {}))

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        raise NotImplementedError("Dubbo providers have no status: presence is UP")

    async def app_unregister(self, instance: AppInstance) -> None:
        url = instance.instance_id
        path = f"{self.root}/{instance.service.name}/providers/{encode_node_name(url)}"
        await self.app.delete(path)

    async def lose(self, ref: LocalRef) -> None:
        """An operator deletes the copy's provider node."""
        directory = f"{self.root}/{ref.service_id}/providers"
        for node in await self.app.get_children(directory):
            if instance_from_url(decode_node_name(node)).instance_id == ref.instance_id:
                await self.app.delete(f"{directory}/{node}")
                return
        raise AssertionError(f"{ref} is not in {directory}")
