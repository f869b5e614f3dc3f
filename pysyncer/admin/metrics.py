"""Prometheus metrics of the gossip layer, read from the node at scrape time.

Owns metric names and labels. The node keeps plain counters; this collector turns
them into ``pysyncer_gossip_*`` families when ``/metrics`` is scraped, so the hot
paths never touch a metrics library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.node import GossipNode

__all__ = ["GossipCollector"]

_DROP_PREFIX = "packets_dropped_"
# Node counters exported as plain counters: counter name -> help.
_COUNTERS = {
    "probes": "SWIM probes started",
    "probe_failures": "probes that ended without an ack",
    "indirect_probes": "indirect ping requests sent",
    "tcp_fallback_acks": "probes answered over TCP only (UDP blocked?)",
    "suspicions": "suspect messages broadcast",
    "push_pulls": "push/pull exchanges started",
    "push_pull_failures": "push/pull exchanges that failed",
    "join_failures": "join attempts that failed",
    "streams_in": "inbound TCP stream messages handled",
    "address_conflicts": "alive messages claiming a known name from another address",
}


class GossipCollector(Collector):
    """Collects from the current node (``None`` while the daemon starts)."""

    def __init__(self, node: Callable[[], GossipNode | None]) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node()
        if node is None:
            return
        members = GaugeMetricFamily(
            "pysyncer_gossip_members", "pool members by state", labels=["state"]
        )
        counts = dict.fromkeys(NodeStatus, 0)
        for state in node.members():
            counts[state.status] += 1
        for status, count in counts.items():
            members.add_metric([status.name.lower()], count)
        yield members
        counters = node.stats.counters
        for name, help_text in _COUNTERS.items():
            yield CounterMetricFamily(f"pysyncer_gossip_{name}", help_text, value=counters[name])
        yield CounterMetricFamily(
            "pysyncer_gossip_refutations",
            "accusations about this node refuted",
            value=node.membership.refutations,
        )
        packets = CounterMetricFamily(
            "pysyncer_gossip_packets", "UDP packets by direction", labels=["direction"]
        )
        packets.add_metric(["in"], counters["packets_in"])
        packets.add_metric(["out"], counters["packets_out"])
        yield packets
        dropped = CounterMetricFamily(
            "pysyncer_gossip_packets_dropped", "packets or messages dropped", labels=["reason"]
        )
        for name, value in sorted(counters.items()):
            if name.startswith(_DROP_PREFIX):
                dropped.add_metric([name[len(_DROP_PREFIX) :]], value)
        yield dropped
        yield GaugeMetricFamily(
            "pysyncer_gossip_broadcast_queue",
            "broadcasts waiting to be piggybacked",
            value=len(node.queue),
        )
        yield GaugeMetricFamily(
            "pysyncer_gossip_health_score",
            "Lifeguard local health (0 = healthy; probe interval x (score + 1))",
            value=node.health_score(),
        )
