"""Several gossip members in one process, driven over stdin/stdout (for benchmarks).

Owns a small runner for measuring pools of real sockets on a small machine: each member
is a full :class:`~pysyncer.gossip.stack.GossipStack` (the daemon's gossip side: Serf,
snapshot, keyring directory) bound to its own loopback port, all on one event loop, so
fifty members cost a few processes instead of fifty interpreters. A member that must
die alone (``kill -9``, ``SIGSTOP``) gets a runner of its own.

    python -m pysyncer.gossip.poolrunner --names a,b,c --data-dir DIR [--profile pysyncer]

Once bound, it prints ``{"ready": {name: [host, port]}}``; then one JSON line per Serf
event seen by each member, stamped with the wall clock (``time.time()``, comparable
across processes): ``{"t", "node", "kind", "member"}`` for member events (``member-join``,
``member-failed``, ``member-leave``, ``member-update``, ``member-reap``) and ``{"t",
"node", "kind": "user", "name", "payload"}`` for user events. Commands, one JSON object
per stdin line: ``{"cmd": "join", "addrs": [[host, port], ...]}`` (every member joins
them), ``{"cmd": "event", "node", "name", "payload"}``, ``{"cmd": "stats"}`` (prints
``{"stats": {name: {"bytes_out": n, ...}}}``), ``{"cmd": "quit"}`` (stops without
leaving). Must not be imported by the daemon; it is a tool.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pysyncer.gossip.serf import MemberEvent, SerfEvent, UserEvent
from pysyncer.gossip.settings import GossipSettings
from pysyncer.gossip.stack import GossipStack
from pysyncer.gossip.timing import PROFILES
from pysyncer.hostport import LOOPBACK, HostPort

__all__ = ["PoolRunner", "main"]


def _emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class PoolRunner:
    """Members named ``names`` on ``host``, each with a data directory under ``data_dir``."""

    def __init__(self, names: list[str], host: str, data_dir: Path, profile: str) -> None:
        self.stacks: dict[str, GossipStack] = {}
        for name in names:
            settings = GossipSettings(
                node=name,
                bind=HostPort(host, 0),
                advertise=None,
                join=(),
                label="",
                protocol_version=2,
                profile=profile,
                encryption_key=None,
                data_dir=data_dir / name,
            )
            self.stacks[name] = GossipStack(settings, {"role": "bench"})

    async def start(self) -> dict[str, tuple[str, int]]:
        for name, stack in self.stacks.items():
            await stack.start()
            stack.serf.subscribe(functools.partial(self._report, name))
        return {name: stack.address for name, stack in self.stacks.items()}

    @staticmethod
    def _report(observer: str, event: SerfEvent) -> None:
        now = time.time()
        if isinstance(event, MemberEvent):
            _emit(
                {"t": now, "node": observer, "kind": event.type.value, "member": event.member.name}
            )
        elif isinstance(event, UserEvent):
            payload = event.payload.decode(errors="replace")
            _emit(
                {"t": now, "node": observer, "kind": "user", "name": event.name, "payload": payload}
            )

    async def join(self, addresses: list[tuple[str, int]]) -> None:
        await asyncio.gather(*(stack.serf.join(addresses) for stack in self.stacks.values()))

    def stats(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, stack in self.stacks.items():
            node = stack.current_node()
            counters = node.stats.counters if node is not None else {}
            out[name] = {
                "bytes_out": counters.get("bytes_out_udp", 0) + counters.get("bytes_out_tcp", 0),
                "packets_out": counters.get("packets_out", 0),
                "suspicions": counters.get("suspicions", 0),
            }
        return out

    async def stop(self) -> None:
        for stack in self.stacks.values():
            await stack.stop()


async def _serve(runner: PoolRunner) -> None:
    addresses = await runner.start()
    _emit({"ready": addresses})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        command = json.loads(line)
        kind = command.get("cmd")
        if kind == "join":
            task = loop.create_task(runner.join([(h, p) for h, p in command["addrs"]]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == "event":
            stack = runner.stacks[command["node"]]
            stack.serf.user_event(command["name"], command.get("payload", "").encode())
        elif kind == "stats":
            _emit({"stats": runner.stats()})
        elif kind == "quit":
            break
    await runner.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--names", required=True, help="member names, comma separated")
    parser.add_argument("--host", default=LOOPBACK, help="loopback address to bind")
    parser.add_argument("--data-dir", type=Path, required=True, help="one directory per member")
    parser.add_argument("--profile", default="pysyncer", choices=sorted(PROFILES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    names = [n for n in args.names.split(",") if n]
    runner = PoolRunner(names, args.host, args.data_dir, args.profile)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        asyncio.run(_serve(runner))
    else:
        uvloop.run(_serve(runner))
    return 0


if __name__ == "__main__":
    sys.exit(main())
