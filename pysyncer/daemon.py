"""The composition root of ``pysyncer daemon``: builds the pieces, runs them, shuts down.

A daemon is a member of the gossip pool (:class:`~pysyncer.gossip.stack.GossipStack`:
memberlist + Serf compatible, keyring and snapshot files), runs the sync engine
(:class:`~pysyncer.sync.engine.SyncEngine`: registry adapter, store, exporter, importer,
gRPC server and peers) and serves the admin API through the presenter of
:mod:`pysyncer.admin.presenter`. Each part gets its own settings from the
:class:`~pysyncer.config.DaemonConfig`. Shutdown on SIGTERM/SIGINT is graceful: leave the
pool (so peers see ``left``, not ``failed``), stop the engine, close the rest.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer import __version__, _core
from pysyncer.admin.app import build_app
from pysyncer.admin.metrics import GossipCollector, SyncCollector
from pysyncer.admin.presenter import DaemonPresenter
from pysyncer.config import DaemonConfig
from pysyncer.gossip.stack import GossipStack
from pysyncer.hostport import format_host_port
from pysyncer.sync.engine import SyncEngine
from pysyncer.sync.tags import syncer_tags

__all__ = ["Daemon", "run_daemon"]

log = logging.getLogger("pysyncer.daemon")


class Daemon:
    """One running syncer process."""

    def __init__(self, config: DaemonConfig, *, with_sync: bool = True) -> None:
        self.config = config
        self.gossip = GossipStack(config.gossip(), syncer_tags(config.dc, str(config.rpc_addr)))
        self.engine: SyncEngine | None = None
        self.with_sync = with_sync
        self.presenter = DaemonPresenter(
            self.gossip, node=config.node, dc=config.dc, engine=lambda: self.engine
        )
        self.metrics_registry = CollectorRegistry()
        self.metrics_registry.register(GossipCollector(self.gossip.current_node))
        self.metrics_registry.register(SyncCollector(self.presenter.sync_status))
        self._runner: web.AppRunner | None = None

    @property
    def admin_address(self) -> tuple[str, int]:
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        return str(host), int(port)

    async def start(self) -> None:
        config = self.config
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
        await self.gossip.start()
        if self.with_sync:
            self.engine = SyncEngine(config.sync(), self.gossip.serf)
            await self.engine.start()
        await self._start_admin()
        self.gossip.join()  # once the engine's gRPC server is up: peers use it at once

    async def _start_admin(self) -> None:
        presenter = self.presenter
        sync = presenter if self.with_sync else None
        app = build_app(
            presenter, self.metrics_registry, keys=presenter, sync=sync, auth=self.config.admin_auth
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        address = self.config.admin_addr
        site = web.TCPSite(self._runner, address.host, address.port)
        await site.start()
        log.info("admin API on http://%s", format_host_port(*self.admin_address))

    async def stop(self) -> None:
        """Leave the pool gracefully, then stop everything."""
        await self.gossip.leave()
        if self.engine is not None:
            await self.engine.stop()  # after the leave: peers have stopped streaming from us
        await self.gossip.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("stopped")


async def run_daemon(config: DaemonConfig) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await daemon.start()
        await stop.wait()
        log.info("signal received: leaving the pool")
    finally:
        await daemon.stop()
