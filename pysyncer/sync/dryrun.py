"""Dry run of the filter rules: which services they export and import, and why.

Owns judging every service seen (this data center's originals for the export side, each
remote data center's originals for the import side) with the rules of
:class:`~pysyncer.sync.filters.Filters` and explaining the verdict in one line: the
direction, no rules, the rule that includes or excludes it (numbered as in the config
file, ``export.include[1]``), or how many instances pass its metadata selectors. Pure:
the engine passes the listings (bounded, see :mod:`pysyncer.rpc.listing`); nothing is
applied, written or logged here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from pysyncer.admin.payloads import DryRunAnswer, DryRunService
from pysyncer.model import Instance, is_copy
from pysyncer.rpc.listing import Listing
from pysyncer.sync.filters import Filter, Filters

__all__ = ["dry_run"]


def _grouped(instances: Iterable[Instance]) -> dict[str, list[Instance]]:
    """Originals only (copies are another data center's), by service key text."""
    services: dict[str, list[Instance]] = {}
    for instance in instances:
        if not is_copy(instance):
            services.setdefault(instance.service.text(), []).append(instance)
    return services


def _reason(side: str, rules: Filter, dc: str, sample: Instance, passing: int, total: int) -> str:
    """Why ``rules`` let ``passing`` of ``total`` instances of ``sample``'s service pass."""
    if rules.empty:
        return f"no {side} rules: everything passes"
    service = sample.service
    for index, rule in enumerate(rules.exclude, 1):
        if rule.matches_service(dc, service) and rule.metadata is None:
            return f"excluded by {side}.exclude[{index}] ({rule.describe()})"
    includes = [
        (index, rule)
        for index, rule in enumerate(rules.include, 1)
        if rule.matches_service(dc, service)
    ]
    if rules.include and not includes:
        return f"no {side}.include rule matches"
    plain = [(index, rule) for index, rule in includes if rule.metadata is None]
    selectors = [f"{side}.exclude[{i}]" for i, r in enumerate(rules.exclude, 1)
                 if r.matches_service(dc, service)]  # fmt: skip
    selectors += [f"{side}.include[{i}]" for i, r in includes if r.metadata is not None]
    if plain and not selectors:
        index, rule = plain[0]
        return f"included by {side}.include[{index}] ({rule.describe()})"
    if not rules.include and not selectors:
        return f"no {side} rule excludes it"
    return f"{passing} of {total} instances pass the metadata of {', '.join(selectors)}"


def _judge(
    side: str,
    rules: Filter,
    dc: str,
    services: Mapping[str, Sequence[Instance]],
    verdict: Callable[[str, Instance], bool],
) -> list[DryRunService]:
    judged: list[DryRunService] = []
    for text, instances in sorted(services.items()):
        passing = sum(1 for instance in instances if verdict(dc, instance))
        total = len(instances)
        judged.append(
            DryRunService(
                side="export" if side == "export" else "import",
                dc=dc,
                service=text,
                instances=total,
                passing=passing,
                verdict="yes" if passing == total else "no" if passing == 0 else "partly",
                reason=_reason(side, rules, dc, instances[0], passing, total),
            )
        )
    return judged


def dry_run(
    filters: Filters,
    local: Listing,
    remote: Mapping[str, Listing | str],
    unused_rules: Sequence[str] = (),
) -> DryRunAnswer:
    """The verdict of ``filters`` on every service of ``local`` (export) and of each
    remote listing (import); a remote data center without a listing is named with why."""
    services: list[DryRunService] = []
    local_services = _grouped(local.instances)
    if filters.sends:
        services += _judge(
            "export", filters.export, filters.dc, local_services,
            lambda _dc, instance: filters.exports(instance),
        )  # fmt: skip
    else:
        services += _off("export", filters, local.dc, local_services)
    unreachable: dict[str, str] = {}
    truncated = local.truncated
    for dc, found in sorted(remote.items()):
        if not isinstance(found, Listing):
            unreachable[dc] = found
            continue
        truncated = truncated or found.truncated
        remote_services = _grouped(found.instances)
        if filters.receives:
            services += _judge("import", filters.import_, dc, remote_services, filters.imports)
        else:
            services += _off("import", filters, dc, remote_services)
    return DryRunAnswer(
        direction=filters.direction,
        services=services,
        unused_rules=list(unused_rules),
        unreachable=unreachable,
        truncated=truncated,
    )


def _off(
    side: str, filters: Filters, dc: str, services: Mapping[str, Sequence[Instance]]
) -> list[DryRunService]:
    """Every service of a side the direction turns off."""
    return [
        DryRunService(
            side="export" if side == "export" else "import",
            dc=dc,
            service=text,
            instances=len(instances),
            passing=0,
            verdict="no",
            reason=f"direction is {filters.direction!r}: nothing is {side}ed",
        )
        for text, instances in sorted(services.items())
    ]
