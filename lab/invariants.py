"""The lab's invariant checker: what every registry must hold, judged from outside.

Input is what anyone can read: each registry's governance listing (Service-Center v4 REST)
and each syncer's ``/v1/sync/status``, gathered into a :class:`Observation`; the filters come
from the lab's own :class:`Admission` (which also writes the syncers' filter config, so the
rule lives in one place). Two checks:

* :func:`check_converged`, after a quiet period (faults healed, churn paused) and at the
  end: every registry holds exactly one copy of every live original of every other data
  center that the filters admit, with the original's current fields; no copy of a deleted
  instance; no copy of a copy (an instance exported by a non-origin); no copy of its own
  data center's instances; each exporter exports exactly its admitted originals.
* :class:`Monitor`, fed a snapshot every second or so while faults run: counts copies
  that lapsed (gone while the original lives) and duplicates; flags a copy removed while
  its origin was cut off for less than ``origin-grace``, and copies still held well after
  an origin was gone for ``origin-grace`` (the chosen policy not applied).

Pure: no I/O here (the runner collects snapshots). Must not import the code under test
beyond the two origin-marker names of the model.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY

__all__ = [
    "Admission",
    "Copy",
    "Monitor",
    "Observation",
    "RegistryView",
    "Violation",
    "check_converged",
    "registry_view",
    "view_of",
]

View = tuple[Any, ...]
LAPSES_LOGGED = 200
MARKER_PREFIX = "pysyncer."


def view_of(instance: Mapping[str, Any], service: str) -> View:
    """What must travel: service, host, endpoints, status, properties (markers aside)."""
    properties = {
        k: v
        for k, v in (instance.get("properties") or {}).items()
        if not k.startswith(MARKER_PREFIX)
    }
    return (
        service,
        instance.get("hostName"),
        tuple(sorted(instance.get("endpoints") or [])),
        instance.get("status"),
        tuple(sorted(properties.items())),
    )


@dataclass(frozen=True)
class Copy:
    origin_dc: str
    origin_id: str
    local_id: str
    view: View


@dataclass
class RegistryView:
    """One registry at one moment: its originals (id -> view) and its copies."""

    dc: str
    up: bool = True
    originals: dict[str, View] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)

    def copy_counts(self) -> Counter[tuple[str, str]]:
        return Counter((c.origin_dc, c.origin_id) for c in self.copies)


def registry_view(dc: str, listing: Iterable[Mapping[str, Any]]) -> RegistryView:
    """A :class:`RegistryView` from instances shaped like ``RegistryClient.instances()``
    (each with ``_service`` = "app/name/version")."""
    found = RegistryView(dc)
    for instance in listing:
        properties = instance.get("properties") or {}
        view = view_of(instance, str(instance["_service"]))
        if ORIGIN_DC_PROPERTY in properties:
            found.copies.append(
                Copy(
                    properties[ORIGIN_DC_PROPERTY],
                    properties.get(ORIGIN_ID_PROPERTY, ""),
                    str(instance["instanceId"]),
                    view,
                )
            )
        else:
            found.originals[str(instance["instanceId"])] = view
    return found


@dataclass
class Observation:
    """Every registry (dc -> view) and each data center's exported count, at ``at`` s."""

    at: float
    registries: dict[str, RegistryView]
    exported: dict[str, int] = field(default_factory=dict)  # dc -> its exporter's count


@dataclass(frozen=True)
class Violation:
    kind: str
    dc: str
    instance: str
    at: float
    detail: str = ""

    def __str__(self) -> str:
        return f"t={self.at:.1f}s {self.kind} in {self.dc}: {self.instance} {self.detail}".strip()


@dataclass
class Admission:
    """The lab's filters: which originals of which data center each registry should hold.

    ``export_exclude``: dc -> service-name globs it never exports; ``import_exclude``: dc
    -> (origin dc glob, service-name glob) it never imports; ``receive_only``: data
    centers that export nothing.
    """

    export_exclude: dict[str, list[str]] = field(default_factory=dict)
    import_exclude: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    receive_only: set[str] = field(default_factory=set)

    @staticmethod
    def _name(service: str) -> str:
        parts = service.split("/")
        return parts[1] if len(parts) >= 3 else service

    def exports(self, origin: str, service: str) -> bool:
        if origin in self.receive_only:
            return False
        name = self._name(service)
        return not any(fnmatch.fnmatchcase(name, g) for g in self.export_exclude.get(origin, []))

    def admits(self, origin: str, dest: str, service: str) -> bool:
        """Whether ``dest`` should hold a copy of an original of service ``service``."""
        if origin == dest or not self.exports(origin, service):
            return False
        name = self._name(service)
        return not any(
            fnmatch.fnmatchcase(origin, dc_glob) and fnmatch.fnmatchcase(name, name_glob)
            for dc_glob, name_glob in self.import_exclude.get(dest, [])
        )

    def toml(self, dc: str) -> str:
        """The daemon config (``--config``) that implements these rules for ``dc``."""
        lines = ['direction = "receive"'] if dc in self.receive_only else []
        for glob in self.export_exclude.get(dc, []):
            lines += ["[[export.exclude]]", f'name = "{glob}"']
        for dc_glob, name_glob in self.import_exclude.get(dc, []):
            lines += ["[[import.exclude]]", f'dc = "{dc_glob}"', f'name = "{name_glob}"']
        return "\n".join(lines) + ("\n" if lines else "")


def check_converged(snapshot: Observation, admission: Admission) -> list[Violation]:
    """Every violation of the steady-state invariants in ``snapshot`` (empty: converged)."""
    found: list[Violation] = []
    at = snapshot.at
    registries = snapshot.registries
    copy_ids = {dc: {c.local_id for c in r.copies} for dc, r in registries.items()}
    for dc, registry in registries.items():
        if not registry.up:
            found.append(Violation("registry-down", dc, "-", at))
            continue
        counts = registry.copy_counts()
        by_origin = {(c.origin_dc, c.origin_id): c for c in registry.copies}
        for (origin, origin_id), count in sorted(counts.items()):
            key = f"{origin}/{origin_id}"
            source = registries.get(origin)
            if origin == dc:
                found.append(Violation("copy-of-own-instance", dc, key, at))
            elif source is not None and origin_id in copy_ids.get(origin, set()):
                found.append(Violation("exported-by-non-origin", dc, key, at))
            elif source is None or origin_id not in source.originals:
                found.append(Violation("copy-of-deleted-instance", dc, key, at))
            elif not admission.admits(origin, dc, source.originals[origin_id][0]):
                found.append(Violation("copy-not-admitted", dc, key, at))
            elif by_origin[(origin, origin_id)].view != source.originals[origin_id]:
                held = by_origin[(origin, origin_id)].view
                detail = f"copy {held} != origin {source.originals[origin_id]}"
                found.append(Violation("stale-fields", dc, key, at, detail))
            if count > 1:
                found.append(Violation("duplicate-copy", dc, key, at, f"{count} copies"))
        for origin, source in sorted(registries.items()):
            if origin == dc or not source.up:
                continue
            for origin_id, view in sorted(source.originals.items()):
                if admission.admits(origin, dc, view[0]) and (origin, origin_id) not in counts:
                    found.append(Violation("missing-copy", dc, f"{origin}/{origin_id}", at))
    for dc, exported in sorted(snapshot.exported.items()):
        source = registries.get(dc)
        if source is None or not source.up:
            continue
        want = sum(1 for view in source.originals.values() if admission.exports(dc, view[0]))
        if exported != want:
            detail = f"exporter reports {exported}, {want} originals to export"
            found.append(Violation("exported-count", dc, "-", at, detail))
    return found


@dataclass
class Monitor:
    """Watches consecutive snapshots while faults run (see the module docstring).

    The runner says, at every :meth:`observe`, which (origin, holder) pairs are cut off
    since when (``cut``), which data centers are wholly gone since when (``gone``: every
    syncer dead, stopped or isolated), and which registries were restarted empty since
    the last snapshot (``wiped``: their losses are expected, not lapses). A copy gone
    after its origin, or its holder, was gone for ``origin-grace`` is the policy at work
    (:attr:`policy_expiries`), not a lapse; one still held ``policy_slack`` s later is a
    violation.
    """

    origin_grace: float
    policy_slack: float  # seconds after origin-grace by which the policy must show
    lapses: int = 0
    lapses_by_cause: Counter[str] = field(default_factory=Counter)
    policy_expiries: int = 0  # copies gone because their origin (or holder) was cut off
    lapse_log: list[Violation] = field(default_factory=list)  # the first lapses, for a look
    duplicates: int = 0
    violations: list[Violation] = field(default_factory=list)
    _previous: Observation | None = None
    _duplicates_seen: set[tuple[str, str, str]] = field(default_factory=set)
    _late: set[tuple[str, str, float]] = field(default_factory=set)

    def observe(
        self,
        snapshot: Observation,
        cut: Mapping[tuple[str, str], float],
        gone: Mapping[str, float],
        wiped: Iterable[str] = (),
        cause: str = "",
    ) -> list[Violation]:
        """Check one snapshot against the previous; the new violations."""
        new: list[Violation] = []
        wiped = set(wiped)
        at = snapshot.at
        previous, self._previous = self._previous, snapshot
        for dc, registry in snapshot.registries.items():
            if not registry.up:
                continue
            counts = registry.copy_counts()
            for (origin, origin_id), count in counts.items():
                key = (dc, origin, origin_id)
                if count > 1 and key not in self._duplicates_seen:
                    self._duplicates_seen.add(key)
                    self.duplicates += 1
                    new.append(Violation("duplicate-copy", dc, f"{origin}/{origin_id}", at,
                                         f"{count} copies"))  # fmt: skip
            for origin, went in gone.items():
                late = at - went - self.origin_grace - self.policy_slack
                # copies of the gone origin here, or of anyone when this holder is the one gone
                held = sum(1 for (o, _) in counts if o == origin or origin == dc)
                if late > 0 and held and (dc, origin, went) not in self._late:
                    self._late.add((dc, origin, went))
                    new.append(Violation("origin-policy-not-applied", dc, f"{origin}/*", at,
                                         f"{held} copies held {at - went:.0f} s after the "
                                         f"origin went"))  # fmt: skip
            if previous is None or dc in wiped:
                continue
            before = previous.registries.get(dc)
            if before is None or not before.up:
                continue
            for origin, origin_id in set(before.copy_counts()) - set(counts):
                source = snapshot.registries.get(origin)
                if source is None or not source.up or origin_id not in source.originals:
                    continue  # the origin deleted it (or cannot tell): not a lapse
                if origin in wiped:
                    continue
                # the origin, or the holder, cut off past origin-grace
                went = min(gone.get(origin, at), gone.get(dc, at))
                if at - went >= self.origin_grace:
                    self.policy_expiries += 1  # the origin policy at work, not a lapse
                    continue
                self.lapses += 1
                self.lapses_by_cause[cause or "none"] += 1
                if len(self.lapse_log) < LAPSES_LOGGED:
                    self.lapse_log.append(
                        Violation("lapse", dc, f"{origin}/{origin_id}", at, cause or "none")
                    )
                since: float | None = cut.get((origin, dc))
                if since is None:
                    since = gone.get(origin)
                if since is not None and at - since < self.origin_grace:
                    new.append(Violation("removed-before-origin-grace", dc,
                                         f"{origin}/{origin_id}", at,
                                         f"origin cut off for {at - since:.1f} s"))  # fmt: skip
        self.violations += new
        return new
