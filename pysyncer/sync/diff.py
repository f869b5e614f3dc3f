"""The diff across data centers: what every registry holds of a service, and why it differs.

Owns comparing the listings of several data centers' registries (each a
:class:`~pysyncer.rpc.listing.Listing`: originals and copies, with that syncer's filter
rules) and explaining every difference as a
:class:`~pysyncer.admin.payloads.Discrepancy`:

* ``copy_missing``: the origin exports an instance, the registry's rules import it, and
  the registry holds no copy;
* ``extra_copy``: a copy whose original its origin no longer holds, or that the rules
  say should not be there;
* ``stale_fields``: a copy whose fields (host, endpoints, status, properties, health)
  differ from its original's, the origin markers aside;
* ``filtered_out``: no copy, as the rules want (the origin's export rules or the
  registry's import rules, or a direction), reported so every absence is explained; a
  registry whose rules take nothing from the origin does not follow it at all (no link);
* ``origin_gone``: a copy of a data center that is gone: it lives out the origin grace;
* ``unreachable``: a data center whose registry could not be listed.

A listing cut by its bound is not used to call anything missing or extra (it cannot
tell). Also gathers the listings concurrently, each bounded in time
(:func:`gather_listings`). No registry, RPC or store access of its own: the engine
passes the callables.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from pysyncer.admin.payloads import (
    DiffAnswer,
    DiffInstance,
    DiffRegistry,
    Discrepancy,
    DiscrepancyKind,
)
from pysyncer.errors import PysyncerError
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance
from pysyncer.rpc.listing import Listing
from pysyncer.sync.filters import FilterConfigError, Filters, filters_from_config

__all__ = ["DIFF_TIMEOUT", "compare", "filters_from_json", "gather_listings", "local_listing"]

DIFF_TIMEOUT = 5.0  # seconds a data center's listing may take, all asked at once
_MARKERS = (ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY)

Key = tuple[str, str]  # (origin data center, original instance id)


def filters_from_json(text: str, dc: str) -> Filters:
    """A syncer's rules from the JSON its listing carries (its status' ``filters``); no
    rules when the text is empty or malformed."""
    try:
        rules = json.loads(text) if text else {}
        return filters_from_config(
            rules.get("export"),
            rules.get("import"),
            direction=str(rules.get("direction", "both")),
            dc=dc,
        )
    except (ValueError, TypeError, AttributeError, FilterConfigError):
        return Filters(dc=dc)


async def gather_listings(
    calls: Mapping[str, Callable[[], Awaitable[Listing]]], timeout: float = DIFF_TIMEOUT
) -> dict[str, Listing | str]:
    """Every data center's listing, asked at once; an error (or ``timeout``) as its text."""

    async def one(call: Callable[[], Awaitable[Listing]]) -> Listing | str:
        try:
            return await asyncio.wait_for(call(), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except (PysyncerError, OSError) as exc:
            return str(exc) or type(exc).__name__

    names = sorted(calls)
    answers = await asyncio.gather(*(one(calls[name]) for name in names))
    return dict(zip(names, answers, strict=True))


def _fields(instance: Instance) -> dict[str, object]:
    fields = instance.fields()
    fields["properties"] = {k: v for k, v in instance.properties.items() if k not in _MARKERS}
    del fields["id"]
    return fields


def _stale(copy: Instance, original: Instance) -> list[str]:
    mine, theirs = _fields(copy), _fields(original)
    return sorted(name for name in theirs if mine.get(name) != theirs[name])


def _origin(instance: Instance, registry: str) -> tuple[bool, Key]:
    properties = instance.properties
    if ORIGIN_DC_PROPERTY in properties:
        origin_id = properties.get(ORIGIN_ID_PROPERTY, instance.instance_id)
        return True, (properties[ORIGIN_DC_PROPERTY], origin_id)
    return False, (registry, instance.instance_id)


def _refusal(origin: str, registry: str, instance: Instance, rules: Mapping[str, Filters]) -> str:
    """Why ``registry`` should hold no copy of ``instance`` of ``origin`` ("" = it should)."""
    exporter, importer = rules[origin], rules[registry]
    if not exporter.sends:
        return f"{origin} sends nothing (direction {exporter.direction!r})"
    if not exporter.exports(instance):
        return f"{origin}'s export rules leave it out"
    if not importer.receives:
        return f"{registry} receives nothing (direction {importer.direction!r})"
    if not importer.imports_dc(origin):
        why = importer.not_imported_reason(origin)
        return f"{registry} does not follow {origin}: {why}"
    if not importer.imports(origin, instance):
        return f"{registry}'s import rules refuse it"
    return ""


def compare(
    service: str,
    limit: int,
    listings: Mapping[str, Listing | str],
    *,
    gone: Collection[str] = (),
    started: float | None = None,
) -> DiffAnswer:
    """The diff of ``listings`` (data center -> its listing, or why there is none).

    ``gone``: data centers known to have left the pool (their copies are in grace).
    """
    reached = {dc: found for dc, found in listings.items() if isinstance(found, Listing)}
    rules = {dc: filters_from_json(found.filters, dc) for dc, found in reached.items()}
    registries: dict[str, DiffRegistry] = {}
    instances: list[DiffInstance] = []
    originals: dict[Key, Instance] = {}
    copies: dict[str, dict[Key, Instance]] = {}
    discrepancies: list[Discrepancy] = []
    for dc, found in sorted(listings.items()):
        if not isinstance(found, Listing):
            registries[dc] = DiffRegistry(
                node="", reached=False, error=found, truncated=False, originals=0, copies=0
            )
            discrepancies.append(
                Discrepancy(
                    kind="unreachable", registry=dc, origin_dc=dc, service=service,
                    instance_id="", fields=[],
                    explanation=f"{dc}'s registry could not be listed: {found}",
                )
            )  # fmt: skip
            continue
        held = copies.setdefault(dc, {})
        counts = [0, 0]
        for instance in found.instances:
            is_copy, key = _origin(instance, dc)
            counts[is_copy] += 1
            if is_copy:
                held[key] = instance
            else:
                originals[key] = instance
            instances.append(
                DiffInstance(
                    registry=dc, service=instance.service.text(),
                    instance_id=instance.instance_id, copy=is_copy, origin_dc=key[0],
                    origin_id=key[1], host=instance.host_name,
                    endpoints=list(instance.endpoints), status=instance.status,
                )
            )  # fmt: skip
        registries[dc] = DiffRegistry(
            node=found.node, reached=True, error="", truncated=found.truncated,
            originals=counts[0], copies=counts[1],
        )  # fmt: skip

    def add(
        kind: DiscrepancyKind,
        registry: str,
        key: Key,
        instance: Instance,
        why: str,
        fields: list[str] | None = None,
    ) -> None:
        discrepancies.append(
            Discrepancy(
                kind=kind, registry=registry, origin_dc=key[0],
                service=instance.service.text(), instance_id=key[1], fields=fields or [],
                explanation=why,
            )
        )  # fmt: skip

    for key, original in sorted(originals.items()):
        origin = key[0]
        for dc in sorted(reached):
            if dc == origin:
                continue
            refusal = _refusal(origin, dc, original, rules)
            copy = copies[dc].get(key)
            if copy is None:
                if refusal:
                    add("filtered_out", dc, key, original, f"no copy in {dc}: {refusal}")
                elif not reached[dc].truncated:
                    add(
                        "copy_missing", dc, key, original,
                        f"{origin} exports it and {dc} imports it, but {dc} holds no copy",
                    )  # fmt: skip
            elif refusal:
                add("extra_copy", dc, key, original, f"{dc} holds a copy though {refusal}")
            else:
                stale = _stale(copy, original)
                if stale:
                    add(
                        "stale_fields", dc, key, original,
                        f"{dc}'s copy differs from {origin}'s original in "
                        + ", ".join(stale),
                        fields=stale,
                    )  # fmt: skip
    for dc, held in sorted(copies.items()):
        for key, copy in sorted(held.items()):
            origin = key[0]
            if key in originals:
                continue
            if origin in reached:
                if not reached[origin].truncated:
                    add(
                        "extra_copy", dc, key, copy,
                        f"{origin} no longer holds the original: {dc}'s copy is left over",
                    )  # fmt: skip
            elif origin in gone or origin not in listings:
                add(
                    "origin_gone", dc, key, copy,
                    f"{origin} has left the pool: {dc} keeps the copy until the origin "
                    "grace ends",
                )  # fmt: skip
    elapsed = 0.0 if started is None else time.monotonic() - started
    return DiffAnswer(
        service=service,
        limit=limit,
        registries=registries,
        instances=instances,
        discrepancies=discrepancies,
        elapsed_seconds=round(elapsed, 3),
    )


def local_listing(
    dc: str, node: str, instances: Collection[Instance], name: str, limit: int, filters: Filters
) -> Listing:
    """This data center's own listing, as a peer would answer it."""
    chosen = sorted(
        (i for i in instances if not name or i.service.name == name),
        key=lambda i: (i.service.text(), i.instance_id),
    )
    return Listing(
        dc,
        node,
        tuple(chosen[:limit]),
        len(chosen) > limit,
        json.dumps(filters.to_dict()),
    )
