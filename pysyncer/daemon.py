"""The composition root of ``pysyncer daemon``: builds the pieces, runs them, shuts down.

A daemon is a member of the gossip pool (:class:`~pysyncer.gossip.stack.GossipStack`:
memberlist + Serf compatible, keyring and snapshot files), runs the sync engine
(:class:`~pysyncer.sync.engine.SyncEngine`: registry adapter, store, exporter, importer,
gRPC server and peers) and serves the admin API through the presenter of
:mod:`pysyncer.admin.presenter`. Given no registry URL, it runs the embedded service
center (:class:`~pysyncer.embeddedregistry.EmbeddedServiceCenter`) and hands it to the
engine. Each part gets its own settings from the :class:`~pysyncer.config.DaemonConfig`.

Start order does not matter. Everything that can be wrong in the configuration
(settings, adapter settings and plugin, files, ports already in use) is checked first,
before any port is bound, and reported as one :class:`~pysyncer.errors.ConfigError`
naming the setting. Then the listeners come up (gossip, sync RPC, embedded registry,
admin API) and the pool is joined, whether or not the registry, the store or the other
members answer; the sync engine starts in the background, retried with a backoff capped
at :data:`START_RETRY_MAX` (one log line per change of its error, not per attempt), and
the daemon is not ready (``/v1/health/ready``, systemd ``READY=1``) until it runs and
has synced. Every long-lived task runs under the daemon's
:class:`~pysyncer.supervisor.Supervisor`. SIGHUP re-reads the configuration for the
settings that change live; SIGTERM/SIGINT shut down gracefully: leave the pool (peers see
``left``, not ``failed``), stop the engine, close the rest.

Imports: _core, adapters, admin, config, embeddedregistry, errors, gossip, hostport, logs,
readiness, redact, sdnotify, security, store, supervisor, sync.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector

from pysyncer import __version__, _core, logs
from pysyncer.admin.app import build_app
from pysyncer.admin.metrics import (
    BuildInfoCollector,
    GossipCollector,
    SyncCollector,
    TaskCollector,
)
from pysyncer.admin.presenter import DaemonPresenter
from pysyncer.config import SETTINGS, DaemonConfig
from pysyncer.embeddedregistry import EmbeddedServiceCenter
from pysyncer.errors import ConfigError, PysyncerError
from pysyncer.gossip.stack import GossipStack
from pysyncer.hostport import HostPort, format_host_port
from pysyncer.readiness import LoopMonitor, Probes
from pysyncer.redact import redact
from pysyncer.sdnotify import Notifier, notify_loop
from pysyncer.security import SecurityCollector, SecurityWatch
from pysyncer.supervisor import Supervised, Supervisor
from pysyncer.sync import tags as sync_tags
from pysyncer.sync.engine import SyncEngine
from pysyncer.sync.trust import ownership_group

__all__ = ["START_RETRY_MAX", "Daemon", "check_config", "run_daemon"]

log = logging.getLogger("pysyncer.daemon")

START_RETRY_MIN = 1.0  # seconds before the sync engine's second start attempt
START_RETRY_MAX = 30.0  # the backoff doubles up to this
_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, None})


def _listeners(config: DaemonConfig, with_sync: bool) -> list[tuple[str, HostPort, int]]:
    """(setting, address, socket type) of every port the daemon binds."""
    found: list[tuple[str, HostPort, int]] = [
        ("bind", config.bind, socket.SOCK_STREAM),
        ("bind", config.bind, socket.SOCK_DGRAM),
        ("admin-addr", config.admin_addr, socket.SOCK_STREAM),
    ]
    if with_sync:
        found.append(("rpc-addr", config.rpc_addr, socket.SOCK_STREAM))
        if config.embedded_registry:
            found.append(("registry-addr", config.registry_addr, socket.SOCK_STREAM))
    return found


def _check_port(key: str, address: HostPort, kind: int) -> None:
    """ConfigError naming ``key`` when ``address`` cannot be bound (in use, not local)."""
    if address.port == 0:
        return
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address.host, address.port, type=kind)[0]
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # as the servers do: a TIME_WAIT port is free
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        raise ConfigError(
            f"config key {key!r}: cannot listen on {proto} "
            f"{format_host_port(address.host, address.port)}: {reason}"
        ) from None


def check_config(config: DaemonConfig, *, with_sync: bool = True, ports: bool = True) -> None:
    """Everything about ``config`` that can be checked without binding or connecting:
    the registry adapter (plugin and ``adapter.*`` settings), the store's settings and
    files, the TLS files (read and checked together, naming this syncer) and (``ports``)
    that every listening address is free. ConfigError, one line naming the setting."""
    config.tls_files()
    if with_sync:
        from pysyncer.adapters import available_adapters, load_adapter  # noqa: PLC0415
        from pysyncer.store import create_store  # noqa: PLC0415

        registry = config.sync().registry
        if not registry.embedded:
            if registry.kind not in available_adapters():
                raise ConfigError(
                    f"config key 'registry-kind': unknown registry adapter {registry.kind!r}; "
                    f"available: {', '.join(available_adapters())}"
                )
            load_adapter(registry.kind, list(registry.urls), registry.adapter_settings)
        create_store(config.store_url, config.data_dir, dc=config.dc, node=config.node)
    _check_data_dir(config.data_dir)
    if ports:
        for key, address, kind in _listeners(config, with_sync):
            _check_port(key, address, kind)


def _check_data_dir(path: Path) -> None:
    """ConfigError naming ``data-dir`` unless it is (or can be created as) a writable
    directory; nothing is created here."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        problem = "is not a directory" if existing == path else f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not writable" if existing == path else f"{existing} is not writable"
    else:
        return
    raise ConfigError(f"config key 'data-dir': {path}: {problem}")


async def _bound(key: str, address: HostPort, start: Callable[[], Any]) -> None:
    """Run ``start()``; a failure to bind is a ConfigError naming ``key``."""
    try:
        await start()
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS:
            raise
        raise ConfigError(
            f"config key {key!r}: cannot listen on "
            f"{format_host_port(address.host, address.port)}: {exc.strerror or exc}"
        ) from None


class Daemon:
    """One running syncer process."""

    def __init__(self, config: DaemonConfig, *, with_sync: bool = True) -> None:
        self.config = config
        self.with_sync = with_sync
        self.supervisor = Supervisor()
        self.tls = config.tls_files()  # read and checked now: a bad file is a ConfigError
        self.security = SecurityWatch(self.tls, config.insecure_reasons())
        tags = sync_tags.syncer_tags(config.dc, str(config.rpc_addr))
        tags[sync_tags.GROUP] = ownership_group(config.store_url, config.node)
        if with_sync:  # nothing to follow here until the engine's exporter runs
            tags[sync_tags.EXPORT] = sync_tags.export_tag(False)
        self.gossip = GossipStack(config.gossip(), tags)
        self.embedded_registry: EmbeddedServiceCenter | None = None
        if with_sync and config.embedded_registry:
            self.embedded_registry = EmbeddedServiceCenter(
                config.registry_addr, config.service_center()
            )
        self.engine: SyncEngine | None = None
        self.presenter = DaemonPresenter(
            self.gossip,
            node=config.node,
            dc=config.dc,
            engine=self._running_engine,
            insecure=self.security.insecure,
        )
        self.monitor = LoopMonitor()
        self.probes = Probes(self.monitor, self.supervisor, self._starting, self._engine_reasons)
        self.notifier = Notifier()
        self.metrics_registry = CollectorRegistry()
        self.metrics_registry.register(GossipCollector(self.gossip.current_node))
        self.metrics_registry.register(SyncCollector(self.presenter.sync_status))
        self.metrics_registry.register(
            TaskCollector(self.supervisor.states, self.supervisor.swallowed)
        )
        self.metrics_registry.register(BuildInfoCollector(__version__, _core.IMPLEMENTATION))
        ProcessCollector(registry=self.metrics_registry)
        self.metrics_registry.register(SecurityCollector(self.security, self._identity_conflicts))
        self._runner: web.AppRunner | None = None
        self._start_error: str | None = None
        self._tasks: list[Supervised] = []
        self._started = False  # past the checks: stop() has something to undo

    @property
    def admin_address(self) -> tuple[str, int]:
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        return str(host), int(port)

    def _running_engine(self) -> SyncEngine | None:
        engine = self.engine
        return engine if engine is not None and engine.started else None

    def _starting(self) -> str | None:
        if not self.with_sync or self._running_engine() is not None:
            return None
        if self._start_error is None:
            return "sync engine: starting"
        return f"sync engine: waiting to start: {self._start_error}"

    def _identity_conflicts(self) -> int:
        peers = self.engine.peers if self.engine is not None else None
        return peers.trust.conflicts if peers is not None else 0

    def _engine_reasons(self) -> Sequence[str]:
        return self.engine.not_ready_reasons() if self.engine is not None else []

    async def start(self) -> None:
        """Check, bind every listener, join the pool; the sync engine starts in the
        background (:meth:`wait_synced` to wait for it)."""
        config = self.config
        check_config(config, with_sync=self.with_sync)  # before any log line or port
        self._started = True
        log.info(
            "pysyncer %s starting: node %s, dc %s, core %s",
            __version__,
            config.node,
            config.dc,
            _core.IMPLEMENTATION,
        )
        if _core.EXTENSION_LOAD_ERROR is not None:
            log.warning(
                "compiled core not loaded, running the slower pure-Python twins: %s",
                _core.EXTENSION_LOAD_ERROR,
            )
        elif _core.NO_EXTENSIONS_REASON is not None:
            log.info("core: pure-Python twins (%s)", _core.NO_EXTENSIONS_REASON)
        self.security.announce()
        with self.supervisor.bound():  # every task created from here on is supervised here
            self.monitor.start(self.supervisor)
            await _bound("bind", config.bind, self.gossip.start)
            if self.embedded_registry is not None:
                await _bound("registry-addr", config.registry_addr, self.embedded_registry.start)
            if self.with_sync:
                self.engine = SyncEngine(
                    config.sync(),
                    self.gossip.serf,
                    tls=self.tls,
                    local_registry=self.embedded_registry,
                )
                await _bound("rpc-addr", config.rpc_addr, self.engine.listen)
            await _bound("admin-addr", config.admin_addr, self._start_admin)
            self.gossip.join()
            if self.engine is not None:
                self._tasks.append(self.supervisor.spawn("sync-start", self._start_sync))
            self._tasks.append(self.supervisor.spawn("security", self.security.run, critical=False))
            ready, healthy = self.probes.ready, self.monitor.healthy
            self._tasks.append(
                self.supervisor.spawn(
                    "systemd-notify",
                    lambda: notify_loop(self.notifier, ready, healthy),
                    critical=False,
                )
            )

    async def _start_sync(self) -> None:
        """Start the engine; until it starts, retry with backoff (logged per new error)."""
        assert self.engine is not None
        delay, attempts, shown = START_RETRY_MIN, 0, None
        while True:
            attempts += 1
            try:
                await self.engine.start()
            except Exception as exc:
                self._start_error = redact(str(exc) or type(exc).__name__)
                if self._start_error != shown:
                    shown = self._start_error
                    log.warning(
                        "sync engine cannot start yet: %s (retrying, backoff up to %.0f s)",
                        shown,
                        START_RETRY_MAX,
                        exc_info=not isinstance(exc, PysyncerError | OSError),  # a bug: trace
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_RETRY_MAX)
                continue
            self._start_error = None
            if attempts > 1:
                log.info("sync engine started after %d attempts", attempts)
            return

    async def wait_synced(self, timeout: float) -> None:
        """Wait until the engine runs (TimeoutError after ``timeout`` s)."""
        async with asyncio.timeout(timeout):
            while self._running_engine() is None:
                await asyncio.sleep(0.05)

    async def _start_admin(self) -> None:
        presenter = self.presenter
        sync = presenter if self.with_sync else None
        app = build_app(
            presenter,
            self.metrics_registry,
            keys=presenter,
            sync=sync,
            auth=self.config.admin_auth,
            probes=self.probes,
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        address = self.config.admin_addr
        site = web.TCPSite(self._runner, address.host, address.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("admin API on http://%s", format_host_port(*self.admin_address))

    def reload(self, fresh: DaemonConfig) -> None:
        """Apply the settings of ``fresh`` that change live; log the ones that cannot.
        The TLS files are looked at now too (not only at the next poll)."""
        self.security.check()
        old = self.config
        changed = [s for s in SETTINGS if getattr(old, s.attr) != getattr(fresh, s.attr)]
        cannot = [s.key for s in changed if not s.live]
        if old.adapter_settings != fresh.adapter_settings:
            cannot.append("[adapter]")
        if old.filters != fresh.filters:
            cannot.append("export/import rules")
        live = {s.attr: getattr(fresh, s.attr) for s in changed if s.live}
        if live:
            self.config = dataclasses.replace(old, **live)
            logs.configure(self.config.log_level, self.config.log_format)
            log.info(
                "SIGHUP: applied %s",
                ", ".join(f"{s.key}={getattr(fresh, s.attr)}" for s in changed if s.live),
            )
        if cannot:
            log.warning("SIGHUP: %s cannot change live: restart to apply", ", ".join(cannot))
        if not changed and not cannot:
            log.info("SIGHUP: configuration unchanged")

    async def stop(self) -> None:
        """Leave the pool gracefully, then stop everything (nothing when not started)."""
        if not self._started:
            return
        self.notifier.send(STOPPING="1", STATUS="stopping")
        for task in self._tasks:
            await task.stop()
        await self.gossip.leave()
        if self.engine is not None:
            await self.engine.stop()  # after the leave: peers have stopped streaming from us
        if self.embedded_registry is not None:
            await self.embedded_registry.close()  # after the engine: it followed the registry
        await self.gossip.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.monitor.stop()
        self.notifier.close()
        log.info("stopped")


async def run_daemon(
    config: DaemonConfig, reload: Callable[[], DaemonConfig] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP calls ``reload`` for
    a fresh configuration and applies what can change live."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, _reloader(daemon, reload))
    try:
        await daemon.start()
        await stop.wait()
        log.info("signal received: leaving the pool")
    finally:
        await daemon.stop()


def _reloader(daemon: Daemon, reload: Callable[[], DaemonConfig]) -> Callable[[], None]:
    def on_sighup() -> None:
        try:
            fresh = reload()
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded: %s", redact(str(exc)))
            return
        daemon.reload(fresh)

    return on_sighup
