"""The adapter protocol every registry kind implements, its value types and errors.

An adapter is the only code that talks to a local registry. It lists the registry
(copies included: the exporter filters them), reports changes as batches, creates
services, registers, renews and removes copies. It knows nothing of gossip, the store or
the sync engine; those see only :mod:`pysyncer.model` values and the types defined here.

An adapter may also offer optional capabilities, each a protocol of its own that the
caller checks for with ``isinstance``: :class:`RegistersMany` (many copies registered in
one call; :func:`register_all` falls back to one at a time without it),
:class:`SkipsCopies` (a change feed that leaves copies out before building anything of
them) and :class:`RenewsByHolder` (the copies of one origin data center renewed in one
call, as a ZooKeeper session renews its ephemeral nodes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, cast, runtime_checkable

from pysyncer.errors import PysyncerError
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "Adapter",
    "AdapterError",
    "BadResponseError",
    "ChangeBatch",
    "ChangeEvent",
    "ConflictError",
    "CopyTest",
    "LocalRef",
    "NotFoundError",
    "RegistersMany",
    "RenewResult",
    "RenewsByHolder",
    "SkipsCopies",
    "Snapshot",
    "UnavailableError",
    "capable",
    "diff_listings",
    "register_all",
]


class AdapterError(PysyncerError):
    """A registry operation failed; ``code`` is the registry's own error code when known."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class NotFoundError(AdapterError, LookupError):
    """The service or instance named does not exist in the registry."""


class ConflictError(AdapterError, ValueError):
    """The registry refused a write because it clashes with existing data."""


class UnavailableError(AdapterError, ConnectionError):
    """No address of the registry answered (connection refused, timeout, 5xx)."""


class BadResponseError(AdapterError, ValueError):
    """The registry answered with a malformed, unexpected or oversized body."""


class LocalRef(NamedTuple):
    """Where an instance lives in the local registry: the registry's own ids (a named
    tuple: one is made per copy registered)."""

    service_id: str
    instance_id: str


@dataclass(frozen=True, slots=True)
class RenewResult:
    """Outcome of renewing one copy: ``ok``, ``not_found`` (re-register it) or ``error``."""

    ref: LocalRef
    status: Literal["ok", "not_found", "error"]
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def not_found(self) -> bool:
        return self.status == "not_found"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A full listing of the local registry: instances plus the local ids of each.

    Iterating yields the :class:`Instance` values; :meth:`ref` gives an instance's
    :class:`LocalRef`. ``revision`` is the registry's revision of the listing when it
    has one (empty otherwise).
    """

    instances: tuple[Instance, ...] = ()
    refs: Mapping[str, LocalRef] = field(default_factory=dict)
    revision: str = ""

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __len__(self) -> int:
        return len(self.instances)

    def ref(self, instance_id: str) -> LocalRef:
        """The local ids of an instance of this listing (KeyError when absent)."""
        return self.refs[instance_id]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One instance created/updated (``upsert``) or removed (``delete``) in the registry.

    For a delete, ``instance`` is the last state the adapter knew (at least its service
    and id are right).
    """

    kind: Literal["upsert", "delete"]
    instance: Instance
    ref: LocalRef | None = None


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Changes observed together. ``resync`` means the view may be incomplete: re-list.

    ``skipped`` counts the entries left out as copies (:meth:`SkipsCopies.changes_without`).
    """

    events: list[ChangeEvent] = field(default_factory=list)
    resync: bool = False
    skipped: int = 0


CopyTest = Callable[[Mapping[str, str], str], bool]
"""Whether a registry entry is a copy, from its properties and its local instance id."""


@runtime_checkable
class Adapter(Protocol):
    """What the sync engine needs from a local registry, whatever its kind."""

    @property
    def name(self) -> str:
        """The adapter kind, e.g. ``servicecomb`` or ``embedded``."""
        ...

    async def start(self) -> None:
        """Open connections; raises UnavailableError when no address answers."""
        ...

    async def close(self) -> None:
        """Release connections and end any running :meth:`changes` iterator."""
        ...

    async def list_instances(self) -> Snapshot:
        """A full listing of the registry, copies included."""
        ...

    def changes(self) -> AsyncIterator[ChangeBatch]:
        """Change batches from the last listing on, until :meth:`close`.

        Transient failures are retried inside; a batch with ``resync=True`` says that
        changes may have been missed and the caller must re-list.
        """
        ...

    async def ensure_service(self, service: ServiceKey) -> str:
        """The local id of ``service``, created when missing (idempotent)."""
        ...

    async def register(self, instance: Instance) -> LocalRef:
        """Register (or overwrite) a copy under its own instance id (idempotent)."""
        ...

    async def get_instance(self, ref: LocalRef) -> Instance:
        """One instance as the registry holds it now; NotFoundError when absent."""
        ...

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        """Renew leases, one result per ref in the same order."""
        ...

    async def unregister(self, ref: LocalRef) -> None:
        """Remove a copy; an unknown ref is not an error."""
        ...


@runtime_checkable
class RegistersMany(Protocol):
    """An adapter that registers many copies in one call (one registry round trip)."""

    async def register_many(self, instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        """:meth:`Adapter.register` of each instance, in order: one answer per instance, its
        :class:`LocalRef` or the :class:`AdapterError` its own register() would have raised
        (the others are registered all the same). A failure of the whole call (the adapter
        closed, the registry unreachable) may be raised instead."""
        ...


_CAPABLE: dict[tuple[type, type], bool] = {}


def capable(adapter: object, capability: type) -> bool:
    """``isinstance(adapter, capability)`` for a runtime-checkable capability, decided once
    per adapter class: the check walks the protocol's members (about 5 us), and the importer
    asks once per applied batch."""
    key = (type(adapter), capability)
    found = _CAPABLE.get(key)
    if found is None:
        found = _CAPABLE[key] = isinstance(adapter, capability)
    return found


async def register_all(
    adapter: Adapter, instances: Sequence[Instance]
) -> list[LocalRef | AdapterError]:
    """Register ``instances``: one answer per instance, as :meth:`RegistersMany.register_many`
    gives them, with the adapter's own batch when it has one, else one at a time. One at a
    time, an error other than :class:`NotFoundError` (the registry failing, not the copy)
    answers the instances after it too, unwritten."""
    if capable(adapter, RegistersMany):
        return await cast(RegistersMany, adapter).register_many(instances)
    answers: list[LocalRef | AdapterError] = []
    for instance in instances:
        try:
            answers.append(await adapter.register(instance))
        except NotFoundError as exc:
            answers.append(exc)
        except AdapterError as exc:
            answers += [exc] * (len(instances) - len(answers))
            break
    return answers


@runtime_checkable
class SkipsCopies(Protocol):
    """An adapter whose change feed can leave copies out before building any value of them
    (the exporter drops copies, and every copy the importer writes is a change)."""

    def changes_without(self, is_copy: CopyTest) -> AsyncIterator[ChangeBatch]:
        """:meth:`Adapter.changes` without the instance entries ``is_copy`` calls copies
        (asked with the registry's own properties and instance id of each, deletes
        included); each batch's ``skipped`` counts those left out."""
        ...


@runtime_checkable
class RenewsByHolder(Protocol):
    """An adapter whose registry renews every copy of one origin data center in one call.

    Each copy it registers (or renews through :meth:`renew_held`) is *held* by its
    origin's holder, named after the origin marker in its properties. Renewing the holder
    (:meth:`renew_origin`) extends every copy it holds; its count lets the caller see that
    copies went missing (an operator deleted one) without renewing each. Copies of an
    origin nobody renews lapse by their own TTL, as without the capability.
    """

    async def renew_origin(self, origin_dc: str) -> int:
        """Renew, in one registry call, every copy of ``origin_dc`` its holder holds; how
        many it holds now (0 when it holds none, e.g. before any copy was registered)."""
        ...

    async def renew_held(
        self, origin_dc: str, refs: Sequence[LocalRef], *, anew: bool = False
    ) -> list[RenewResult]:
        """:meth:`Adapter.renew` of copies of ``origin_dc``, each held by its origin's
        holder from now on. ``anew`` starts the holder afresh first: the copies it held and
        that are not passed here again (in this call or the next ones without ``anew``) are
        no longer renewed by :meth:`renew_origin` and lapse by their own TTL."""
        ...


def diff_listings(
    previous: Mapping[str, tuple[Instance, LocalRef]],
    current: Mapping[str, tuple[Instance, LocalRef]],
) -> list[ChangeEvent]:
    """Upserts for new or changed instances, deletes for vanished ones."""
    events: list[ChangeEvent] = []
    for iid, (inst, ref) in current.items():
        old = previous.get(iid)
        if old is None or old[0] != inst:
            events.append(ChangeEvent("upsert", inst, ref))
    for iid, (inst, ref) in previous.items():
        if iid not in current:
            events.append(ChangeEvent("delete", inst, ref))
    return events
