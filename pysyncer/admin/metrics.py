"""Prometheus metrics of the gossip layer and the sync engine, read at scrape time.

Owns metric names and labels. The node and the engine keep plain counters; these
collectors turn them into ``pysyncer_gossip_*``, ``pysyncer_sync_*``,
``pysyncer_ownership_*`` (slot ownership among the syncers of a data center) and
``pysyncer_store_*`` (a shared store's health) families when ``/metrics`` is scraped,
so the hot paths never touch a metrics library. Beside them: ``pysyncer_task_*`` (the
supervised background tasks: restarts, up), ``pysyncer_swallowed_errors_total`` (errors
a task survived, by site and error type) and ``pysyncer_build_info``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pysyncer.admin.payloads import OwnershipStatus, StoreStatus, SyncStatus
from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.node import GossipNode

__all__ = ["BuildInfoCollector", "GossipCollector", "SyncCollector", "TaskCollector"]

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


class SyncCollector(Collector):
    """``pysyncer_sync_*`` families from the sync engine's status at scrape time.

    Every value is read from a typed field of :class:`~pysyncer.admin.payloads.SyncStatus`,
    so a renamed stat is a type error here, not a family that reads 0.
    """

    def __init__(self, status: Callable[[], SyncStatus | None]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        if status is None:
            return
        exporter, importer = status["exporter"], status["importer"]
        yield GaugeMetricFamily(
            "pysyncer_sync_revision", "this data center's export revision",
            value=status["revision"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "pysyncer_sync_exported_instances", "instances this data center exports",
            value=status["exported"],
        )  # fmt: skip
        if exporter["registry_lag"] is not None:
            yield GaugeMetricFamily(
                "pysyncer_sync_export_lag_revisions",
                "local registry revisions the exporter has not read from its change feed yet",
                value=exporter["registry_lag"],
            )
        for name, help_text, value in (
            ("changes_exported", "changes appended to the local change log",
             exporter["changes_exported"]),
            ("resyncs", "full listings of the local registry", exporter["resyncs"]),
            ("feed_resets", "times the registry's change feed lost the exporter's position",
             exporter["feed_resets"]),
            ("applied", "remote records applied", importer["applied"]),
            ("registered", "copies registered in the local registry", importer["registered"]),
            ("unregistered", "copies removed from the local registry", importer["unregistered"]),
            ("renewals", "copies renewed (one by one or through their origin's holder)",
             importer["renewals"]),
            ("reregistered", "copies re-registered after the registry lost them",
             importer["reregistered"]),
            ("writes_delayed", "registry writes that waited for the importer's write budget",
             importer["budget"]["delayed"]),
        ):  # fmt: skip
            yield CounterMetricFamily(f"pysyncer_sync_{name}", help_text, value=value)
        budget = importer["budget"]
        for name, help_text, level in (
            ("write_rate", "registry writes/s the importer's budget allows now (0: unlimited)",
             budget["rate"]),
            ("write_tokens", "registry writes the importer may make at once", budget["tokens"]),
            ("write_bootstrap", "1 while a data center is caught up at the bootstrap rate",
             int(budget["mode"] == "bootstrap")),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"pysyncer_sync_{name}", help_text, value=level)
        errors = CounterMetricFamily(
            "pysyncer_sync_errors", "errors by part and kind", labels=["part", "kind"]
        )
        for part, counts in (("exporter", exporter["errors"]), ("importer", importer["errors"])):
            for kind, count in sorted(counts.items()):
                errors.add_metric([part, kind], count)
        copies = GaugeMetricFamily(
            "pysyncer_sync_copies", "copies held, by origin data center", labels=["origin"]
        )
        lag = GaugeMetricFamily(
            "pysyncer_sync_lag_revisions", "revisions not yet applied", labels=["origin"]
        )
        repairs = CounterMetricFamily(
            "pysyncer_sync_repairs", "digest repairs run", labels=["origin"]
        )
        propagation = HistogramMetricFamily(
            "pysyncer_sync_propagation_seconds",
            "origin commit to applied here, per origin data center",
            labels=["origin"],
        )
        for dc, remote in sorted(status["remote"].items()):
            copies.add_metric([dc], remote["copies"])
            lag.add_metric([dc], remote["lag"])
            repairs.add_metric([dc], remote["repairs"])
            for kind, count in sorted(remote["errors"].items()):
                errors.add_metric([f"peer:{dc}", kind], count)
            histogram = remote["propagation"]
            buckets = [
                ("+Inf" if bound == "inf" else bound, count)
                for bound, count in histogram["buckets"].items()
            ]
            propagation.add_metric([dc], buckets, histogram["sum"])
        yield copies
        yield lag
        yield repairs
        yield errors
        yield propagation
        yield from _ownership_metrics(status["ownership"], status["node"])
        yield from _store_metrics(status["store"])


def _ownership_metrics(ownership: OwnershipStatus, node_name: str) -> Iterator[Metric]:
    """``pysyncer_ownership_*``: this member's view of the data center's slot table."""
    node = "pysyncer_ownership_"
    yield GaugeMetricFamily(
        f"{node}epoch", "epoch of the slot table this member follows",
        value=ownership["epoch"],
    )  # fmt: skip
    yield GaugeMetricFamily(
        f"{node}slots_owned", "slots this member owns (played back)",
        value=ownership["slots_owned"],
    )  # fmt: skip
    yield GaugeMetricFamily(
        f"{node}slots_pending", "slots gained but not played back yet",
        value=ownership["slots_pending"],
    )  # fmt: skip
    yield GaugeMetricFamily(
        f"{node}leader", "1 when this member leads (writes the table, exports the data center)",
        value=1 if node_name and ownership["leader"] == node_name else 0,
    )  # fmt: skip
    members = GaugeMetricFamily(
        f"{node}member_slots", "slots per member in the current table", labels=["member"]
    )
    for member, count in sorted(ownership["members"].items()):
        members.add_metric([member or "(unassigned)"], count)
    yield members
    for name, help_text, value in (
        ("slot_tables_written", "slot tables this member wrote as leader",
         ownership["tables_written"]),
        ("slots_gained", "slots this member gained (then played back)", ownership["slots_gained"]),
        ("slots_lost", "slots this member released to another member", ownership["slots_lost"]),
        ("playbacks", "playbacks of gained slots completed", ownership["playbacks"]),
        ("playback_seconds", "time spent in playbacks of gained slots",
         ownership["playback_seconds"]),
    ):  # fmt: skip
        yield CounterMetricFamily(f"{node}{name}", help_text, value=value)
    errors = CounterMetricFamily(f"{node}errors", "ownership errors by kind", labels=["kind"])
    for kind, count in sorted(ownership["errors"].items()):
        errors.add_metric([kind], count)
    yield errors


def _store_metrics(store: StoreStatus) -> Iterator[Metric]:
    """``pysyncer_store_*``: the store's health; the queue figures when it reports them."""
    yield GaugeMetricFamily(
        "pysyncer_store_degraded", "1 while store writes queue in memory (etcd unreachable)",
        value=1 if store["status"] == "degraded" else 0,
    )  # fmt: skip
    if "queued" in store:
        yield GaugeMetricFamily(
            "pysyncer_store_queued_writes", "store write operations waiting for the backend",
            value=store["queued"],
        )  # fmt: skip
    if "dropped" in store:
        yield CounterMetricFamily(
            "pysyncer_store_dropped_writes", "queued writes dropped as fenced after an outage",
            value=store["dropped"],
        )  # fmt: skip


class TaskState(Protocol):
    """What the task metrics read of one supervised task (:mod:`pysyncer.supervisor`)."""

    @property
    def name(self) -> str: ...

    @property
    def running(self) -> bool: ...

    @property
    def restarts(self) -> int: ...


class TaskCollector(Collector):
    """``pysyncer_task_restarts_total{task}``, ``pysyncer_task_up{task}`` and
    ``pysyncer_swallowed_errors_total{site,reason}`` (``swallowed``: (site, error type) ->
    count, :meth:`pysyncer.supervisor.Supervisor.swallowed`)."""

    def __init__(
        self,
        tasks: Callable[[], Sequence[TaskState]],
        swallowed: Callable[[], Mapping[tuple[str, str], int]] = dict,
    ) -> None:
        self._tasks = tasks
        self._swallowed = swallowed

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "pysyncer_task_restarts",
            "background tasks restarted after a failure",
            labels=["task"],
        )
        up = GaugeMetricFamily(
            "pysyncer_task_up", "1 while a background task runs, 0 while it waits", labels=["task"]
        )
        for task in self._tasks():
            restarts.add_metric([task.name], task.restarts)
            up.add_metric([task.name], 1 if task.running else 0)
        yield restarts
        yield up
        swallowed = CounterMetricFamily(
            "pysyncer_swallowed_errors",
            "errors a task survived (logged, rate-limited), by site and error type",
            labels=["site", "reason"],
        )
        for (site, reason), count in self._swallowed().items():
            swallowed.add_metric([site, reason], count)
        yield swallowed


class BuildInfoCollector(Collector):
    """``pysyncer_build_info{version,implementation} 1``."""

    def __init__(self, version: str, implementation: str) -> None:
        self._labels = [version, implementation]

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "pysyncer_build_info",
            "the running version and core implementation (compiled or pure)",
            labels=["version", "implementation"],
        )
        info.add_metric(self._labels, 1)
        yield info
