"""The demo's expectations and measurements, and the tables that show them.

Owns what each registry must hold at each moment (every data center's originals, minus
the deleted ones, as originals at home and copies everywhere else), the mismatches
against what the :class:`~pysyncer.demo.registries.Observer` saw, the propagation
delays and the figures the summary prints, and the lines of the registry and
propagation tables. It must not print, start processes or call a registry.
"""

from __future__ import annotations

import statistics

from pysyncer.demo.cluster import DataCenter
from pysyncer.demo.display import ms
from pysyncer.demo.registries import Application, Observer

__all__ = ["DemoState"]


class DemoState:
    """What every registry must hold now, what was measured, and the tables of both."""

    def __init__(self, dcs: list[DataCenter], services: int, instances: int) -> None:
        self.dcs = dcs
        self.services = services
        self.instances = instances
        self.deleted: dict[str, str] = {}  # origin id -> origin dc
        self.stopped: set[str] = set()
        self.propagation: dict[tuple[str, str], list[float]] = {}
        self.figures: dict[str, float] = {}

    # expected state

    def expected_from(self, origin: str) -> int:
        gone = sum(1 for dc in self.deleted.values() if dc == origin)
        return self.services * self.instances - gone

    def expected_total(self) -> int:
        return sum(self.expected_from(dc.name) for dc in self.dcs)

    def mismatches(self, observer: Observer) -> list[str]:
        problems = []
        for dc in self.dcs:
            snap = observer.latest[dc.name]
            if not snap.up:
                problems.append(f"{dc.name}: registry not answering")
                continue
            if len(snap.originals) != self.expected_from(dc.name):
                problems.append(
                    f"{dc.name}: {len(snap.originals)} originals, "
                    f"expected {self.expected_from(dc.name)}"
                )
            for other in self.dcs:
                if other is dc:
                    continue
                held = snap.copies.get(other.name, set())
                if len(held) != self.expected_from(other.name):
                    problems.append(
                        f"{dc.name}: {len(held)} copies from {other.name}, "
                        f"expected {self.expected_from(other.name)}"
                    )
                stale = held & self.deleted.keys()
                if stale:
                    problems.append(f"{dc.name}: still holds deleted {sorted(stale)}")
            strays = set(snap.copies) - {d.name for d in self.dcs if d is not dc}
            if strays:
                problems.append(f"{dc.name}: copies from unknown origin(s) {sorted(strays)}")
            if snap.duplicates:
                problems.append(f"{dc.name}: {snap.duplicates} duplicate copies")
        return problems

    # tables

    def registry_table(self, observer: Observer, links: dict[str, dict[str, str]]) -> list[str]:
        names = [dc.name for dc in self.dcs]
        width = max(10, *(len(n) for n in names))
        head = f"  {'registry':<{width}} {'address':<22} {'originals':>9}"
        head += "".join(f" {'<- ' + n:>{width + 3}}" for n in names)
        head += f" {'total':>6} {'expected':>8}  sync links"
        lines = [head]
        for dc in self.dcs:
            snap = observer.latest[dc.name]
            row = f"  {dc.name:<{width}} {dc.registry.removeprefix('http://'):<22}"
            if not snap.up:
                state = "syncer+registry stopped" if dc.name in self.stopped else "not answering"
                lines.append(f"{row} {'-':>9}  ({state})")
                continue
            row += f" {len(snap.originals):>9}"
            total = len(snap.originals)
            for other in names:
                if other == dc.name:
                    row += f" {'.':>{width + 3}}"
                else:
                    count = len(snap.copies.get(other, ()))
                    total += count
                    row += f" {count:>{width + 3}}"
            states = links.get(dc.name, {})
            link_text = ", ".join(f"{k.removeprefix('dc-')}:{v}" for k, v in sorted(states.items()))
            dup = f" DUPLICATES {snap.duplicates}" if snap.duplicates else ""
            lines.append(f"{row} {total:>6} {self.expected_total():>8}  {link_text}{dup}")
        return lines

    def propagation_table(self, observer: Observer, apps: dict[str, Application]) -> list[str]:
        """p50 / max from the register call returning at the origin to the copy appearing."""
        self.propagation = {}
        for origin, app in apps.items():
            for original in app.instances + app.deleted:
                if not original.registered_at:
                    continue
                for dc in self.dcs:
                    if dc.name == origin:
                        continue
                    seen = observer.first_seen.get((dc.name, original.instance_id))
                    if seen is not None:
                        delay = max(0.0, seen - original.registered_at)
                        self.propagation.setdefault((origin, dc.name), []).append(delay)
        names = [dc.name for dc in self.dcs]
        width = max(24, *(len(n) + 5 for n in names))
        lines = [
            "  propagation p50 / max (register at origin -> copy listed; polled every 20 ms)",
            f"  {'origin':<12}" + "".join(f" {'-> ' + n:>{width - 1}}" for n in names),
        ]
        for origin in names:
            row = f"  {origin:<12}"
            for target in names:
                values = self.propagation.get((origin, target))
                if origin == target:
                    cell = "."
                elif not values:
                    cell = "-"
                else:
                    cell = f"{ms(statistics.median(values))} / {ms(max(values))}"
                    cell += f" ({len(values)})"
                row += f" {cell:>{width - 1}}"
            lines.append(row)
        return lines

    def all_delays(self) -> list[float]:
        return [d for values in self.propagation.values() for d in values]
