"""Every JSON body of the admin API, as types: the one description of each payload shape.

Owns the shape of what the admin API answers and accepts: health, members, user events,
queries, gossip keys, the sync status (remote links with their lag histograms, exporter,
importer, slot ownership, store, filters) and the full-sync answer. The server
(:mod:`pysyncer.admin.app`), the presenter that fills the gossip answers, the sync
engine's status builder, the Prometheus collectors, the command line and the admin client
all name these types, so renaming a field is a type error everywhere it is read, instead
of a value that silently reads as 0.

The types are ``TypedDict``: a payload is the plain ``dict`` that goes on the wire, so
producing one costs nothing and ``json.dumps`` needs no adapter. Keys that only some
answers carry are declared in a ``total=False`` subclass (Python 3.10 has no
``NotRequired``). Pure declarations: this module imports nothing from pysyncer, so any
layer that produces a payload may import it without pulling in the HTTP server.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, final

__all__ = [
    "DISCREPANCY_KINDS",
    "LINK_STATES",
    "MEMBER_STATUSES",
    "BudgetMode",
    "Coordinate",
    "CoordinatesAnswer",
    "DashboardSnapshot",
    "DiffAnswer",
    "DiffInstance",
    "DiffRegistry",
    "Discrepancy",
    "DiscrepancyKind",
    "DryRunAnswer",
    "DryRunService",
    "ErrorAnswer",
    "Event",
    "EventRequest",
    "EventSent",
    "EventsAnswer",
    "ExporterStatus",
    "FilterRules",
    "FiltersStatus",
    "ForceLeaveAnswer",
    "ForceLeaveRequest",
    "FullSyncAnswer",
    "Health",
    "Histogram",
    "IdentityStatus",
    "ImporterStatus",
    "KeyAnswer",
    "KeyFailure",
    "KeyOperation",
    "KeyRequest",
    "LeaveAnswer",
    "LinkState",
    "Liveness",
    "Member",
    "MemberStatusName",
    "MembersAnswer",
    "MonitorLine",
    "OwnershipStatus",
    "QueryAnswer",
    "QueryRequest",
    "Readiness",
    "RemoteLink",
    "SlotRun",
    "StoreStatus",
    "SyncProgress",
    "SyncStatus",
    "TaskStatus",
    "WriteBudgetStatus",
]

# -- common ----------------------------------------------------------------------------


@final  # nothing extends it: ``"key" in answer`` tells it from a richer error answer
class ErrorAnswer(TypedDict):
    """Every 4xx/5xx answer: ``{"error": "<one line>"}`` (a key failure adds the answers)."""

    error: str


# -- gossip: health, members, events, queries --------------------------------------------

MemberStatusName = Literal["alive", "suspect", "failed", "left"]
MEMBER_STATUSES: tuple[MemberStatusName, ...] = ("alive", "suspect", "failed", "left")


class Health(TypedDict):
    """``GET /v1/health``; ``status`` is ``degraded`` while the Lifeguard score is above 0."""

    status: Literal["ok", "degraded"]
    node: str
    dc: str
    version: str
    implementation: str  # the core in use: "cython" or "python"
    health_score: int
    insecure: bool  # an exposed address runs without gossip encryption or TLS (--insecure)


class Liveness(TypedDict):
    """``GET /v1/health/live``: 200 ``live`` while the event loop keeps time, else 503
    ``stalled``; ``loop_lag_seconds`` is how late its last tick ran."""

    status: Literal["live", "stalled"]
    loop_lag_seconds: float


class Readiness(TypedDict):
    """``GET /v1/health/ready``: 200 ``ready``, or 503 ``not ready`` with ``reasons``."""

    status: Literal["ready", "not ready"]
    reasons: list[str]


class Member(TypedDict):
    """One gossip pool member; Serf's ``leaving`` reads as ``alive``."""

    name: str
    addr: str
    port: int
    status: MemberStatusName
    tags: dict[str, str]


class MembersAnswer(TypedDict):
    """``GET /v1/members``, sorted by name."""

    members: list[Member]


class LeaveAnswer(TypedDict):
    """``POST /v1/leave``: this member is leaving the pool; the daemon then stops."""

    leaving: bool
    node: str


class _ForceLeaveRequired(TypedDict):
    node: str


class ForceLeaveRequest(_ForceLeaveRequired, total=False):
    """``POST /v1/force-leave``: mark a failed member ``left`` (``prune``: forget it)."""

    prune: bool


class ForceLeaveAnswer(TypedDict):
    """The answer to ``POST /v1/force-leave``."""

    node: str
    prune: bool


class MonitorLine(TypedDict, total=False):
    """One line of ``GET /v1/monitor`` (NDJSON): a log record as the daemon's JSON log
    format writes it, plus every structured field of the record."""

    time: str
    level: str
    logger: str
    message: str
    exception: str


class _EventRequired(TypedDict):
    name: str


class EventRequest(_EventRequired, total=False):
    """``POST /v1/events``: a user event; ``payload`` is text, ``coalesce`` false by default."""

    payload: str
    coalesce: bool


class EventSent(TypedDict):
    """The answer to ``POST /v1/events``."""

    sent: bool
    name: str


class Coordinate(TypedDict):
    """A Vivaldi network coordinate as Serf keeps it (seconds; see gossip.md)."""

    vec: list[float]
    error: float
    adjustment: float
    height: float


class CoordinatesAnswer(TypedDict):
    """``GET /v1/coordinates``: this member's coordinate and the last one of each member
    it probed (``pysyncer rtt`` estimates round trips from them, as ``serf rtt``)."""

    node: str
    coordinates: dict[str, Coordinate]


class Event(TypedDict):
    """A user event this member received; the payload decoded as UTF-8 (bad bytes replaced)."""

    name: str
    payload: str
    ltime: int


class EventsAnswer(TypedDict):
    """``GET /v1/events``: the recent user events, oldest first."""

    events: list[Event]


class _QueryRequired(TypedDict):
    name: str


class QueryRequest(_QueryRequired, total=False):
    """``POST /v1/queries``; without ``timeout_ms`` Serf's default (scaled by pool size)."""

    payload: str
    timeout_ms: int


class QueryAnswer(TypedDict):
    """The nodes that acknowledged, their responses as text, and whether all answered early."""

    acks: list[str]
    responses: dict[str, str]
    completed_early: bool


# -- gossip keys -------------------------------------------------------------------------

KeyOperation = Literal["install", "use", "remove"]


class KeyRequest(TypedDict):
    """``POST /v1/keys``: one operation on every member; the key in base64."""

    op: KeyOperation
    key: str


class KeyAnswer(TypedDict):
    """``GET``/``POST /v1/keys``: Serf's aggregated key response.

    ``messages`` holds each member's failure or warning text, ``keys`` and
    ``primary_keys`` how many members hold each key (as installed, as primary), the key
    named by its fingerprint (``sha256:`` and 16 hex digits), never by itself;
    ``no_response`` the members that did not answer.
    """

    operation: str  # "list", "install", "use" or "remove"
    num_nodes: int
    num_resp: int
    num_err: int
    messages: dict[str, str]
    keys: dict[str, int]
    primary_keys: dict[str, int]
    no_response: list[str]


class KeyFailure(KeyAnswer):
    """The 502 answer of a key operation some member failed or did not answer."""

    error: str


# -- sync status -------------------------------------------------------------------------

LinkState = Literal["connecting", "repairing", "streaming", "backoff", "gone"]
LINK_STATES: tuple[LinkState, ...] = ("connecting", "repairing", "streaming", "backoff", "gone")


class Histogram(TypedDict):
    """A cumulative histogram: upper bound in seconds (text, ``"inf"`` last) -> count."""

    buckets: dict[str, int]
    sum: float
    count: int


class SyncProgress(TypedDict):
    """A link's current (``running``) or last digest repair: ``initial`` (the first sync
    from that data center) or ``repair``; ``kind`` is "" before the first.

    ``records_total`` is what the origin exports for an initial sync, 0 (not known) for a
    repair; ``rate`` is records per second so far; ``eta_seconds`` is estimated from the
    slots still to pull (-1 when not known yet).
    """

    kind: str
    running: bool
    slots_total: int
    slots_done: int
    records_total: int
    records_done: int
    started_at: float  # Unix time
    finished_at: float  # Unix time, 0 while running
    rate: float
    eta_seconds: float


class RemoteLink(TypedDict):
    """The link with one remote data center (``gone``: copies held, no syncer left)."""

    state: LinkState
    syncer: str  # the remote syncer followed
    applied_revision: int
    remote_revision: int
    lag: int  # revisions not applied yet
    copies: int  # copies of its instances held here
    repairs: int  # digest repairs run
    slots_pulled: int
    slots_settling: int  # left to the stream by periodic rounds: moving at the origin
    errors: dict[str, int]
    last_applied_at: float  # Unix time of the last apply, 0 before the first
    propagation: Histogram  # origin commit to applied here
    progress: SyncProgress  # the initial sync or the last repair


class ExporterStatus(TypedDict):
    """The counters of this data center's exporter."""

    changes_exported: int
    resyncs: int  # full listings of the local registry
    feed_resets: int  # the registry's change feed lost the exporter's position
    registry_lag: int | None  # registry revisions not read yet (None: unknown)
    copies_skipped: int
    filtered: int
    deletes_deferred: int
    log_entries_trimmed: int
    errors: dict[str, int]


BudgetMode = Literal["bootstrap", "steady"]  # the write rate in force (see the importer)


class WriteBudgetStatus(TypedDict):
    """The pace of the importer's registry writes (heartbeats are not counted)."""

    mode: BudgetMode  # bootstrap: some data center is being caught up
    rate: float  # writes per second in force (0: unlimited)
    bootstrap_rate: float
    steady_rate: float
    tokens: float  # writes that may go at once
    delayed: int  # writes that waited for the budget
    waited_seconds: float  # how long they waited, in all


class ImporterStatus(TypedDict):
    """The counters of this syncer's importer."""

    applied: int
    registered: int
    unregistered: int
    renewals: int
    lost: int  # copies the registry no longer knew
    reregistered: int
    filtered: int  # records the import filter refused
    not_owned: int  # records of slots another syncer of this data center owns
    errors: dict[str, int]
    budget: WriteBudgetStatus


class OwnershipStatus(TypedDict):
    """This member's view of the data center's slot table."""

    epoch: int
    leader: str
    slots_owned: int
    slots_pending: int  # gained, playback not done
    tables_written: int
    slots_gained: int
    slots_lost: int
    playbacks: int
    playback_seconds: float
    last_playback_slots: int
    members: dict[str, int]  # member ("" = unassigned) -> slots in the current table
    errors: dict[str, int]


class _StoreRequired(TypedDict):
    status: Literal["ok", "degraded"]


class StoreStatus(_StoreRequired, total=False):
    """The store's health; the queue figures only from a store shared over etcd."""

    queued: int
    dropped: int
    last_error: str | None
    endpoint: str


class FilterRules(TypedDict):
    """Include and exclude rules of one side, each as written in the config file."""

    include: list[dict[str, Any]]
    exclude: list[dict[str, Any]]


# "import" is a keyword: the functional form
FiltersStatus = TypedDict(
    "FiltersStatus",
    {
        "direction": str,
        "export": FilterRules,
        "import": FilterRules,
        "unused_rules": list[str],
        "not_followed": dict[str, str],  # live remote dc -> why nothing of it is imported
    },
)


class IdentityStatus(TypedDict):
    """Whom this syncer trusts per remote data center, and the claims it refused."""

    established: dict[str, str]  # data center -> the ownership group followed
    claimants: dict[str, dict[str, str]]  # data center -> node -> group, not followed
    conflicts: int  # claimants seen so far (pysyncer_identity_conflicts_total)


class SyncStatus(TypedDict):
    """``GET /v1/sync/status``: this data center and, per remote data center, its link."""

    dc: str
    node: str
    revision: int  # this data center's export revision
    epoch: str  # the export log's epoch ("" before the exporter has loaded it)
    exported: int  # instances exported
    registry: str  # the local registry's address(es)
    remote: dict[str, RemoteLink]
    exporter: ExporterStatus
    importer: ImporterStatus
    ownership: OwnershipStatus
    store: StoreStatus
    filters: FiltersStatus
    identity: IdentityStatus


class FullSyncAnswer(TypedDict):
    """``POST /v1/sync/full``: the remote data centers a digest repair was started with."""

    started: bool
    remote: list[str]


# -- dashboard -----------------------------------------------------------------------------


class TaskStatus(TypedDict):
    """One supervised background task: how often it was restarted, its last error."""

    name: str
    critical: bool
    running: bool
    restarts: int
    last_error: str


# [first slot, how many slots, owner ("" = unassigned), pending playback]
SlotRun = tuple[int, int, str, bool]


class DashboardSnapshot(TypedDict):
    """What the dashboard's event stream (``GET /v1/sync/stream``) sends: first whole, then
    as JSON merge patches (RFC 7386) of what changed. ``members`` and ``tasks`` are keyed
    by name; ``sync`` is None without a sync engine; ``slots`` is the slot table as runs."""

    at: float  # Unix time of the snapshot
    health: Health
    ready: Readiness | None
    members: dict[str, Member]
    tasks: dict[str, TaskStatus]
    sync: SyncStatus | None
    slots: list[SlotRun]


# -- diff across data centers -----------------------------------------------------------------

DiscrepancyKind = Literal[
    "copy_missing", "extra_copy", "stale_fields", "filtered_out", "origin_gone", "unreachable"
]
DISCREPANCY_KINDS: tuple[DiscrepancyKind, ...] = (
    "copy_missing",
    "extra_copy",
    "stale_fields",
    "filtered_out",
    "origin_gone",
    "unreachable",
)


class DiffInstance(TypedDict):
    """One instance a registry holds: an original (``origin_dc`` is that registry's data
    center) or a copy (``copy`` true, ``origin_id`` the original's id)."""

    registry: str  # the data center whose registry holds it
    service: str  # the service key's text form
    instance_id: str
    copy: bool
    origin_dc: str
    origin_id: str
    host: str
    endpoints: list[str]
    status: str


class Discrepancy(TypedDict):
    """One difference between what a registry holds and what it should, explained.

    ``filtered_out`` and ``origin_gone`` are expected states (a rule, the origin grace),
    reported so the view explains every absence; the others need a repair."""

    kind: DiscrepancyKind
    registry: str  # the data center whose registry differs
    origin_dc: str
    service: str
    instance_id: str  # the original's id
    fields: list[str]  # stale_fields: the fields that differ
    explanation: str


class DiffRegistry(TypedDict):
    """How one data center's registry was read for the diff."""

    node: str  # the syncer that answered ("" when none did)
    reached: bool
    error: str
    truncated: bool  # the listing hit its bound
    originals: int
    copies: int


class DiffAnswer(TypedDict):
    """``GET /v1/sync/diff``: every registry's instances of a service (or of the whole
    pool, bounded) and the discrepancies between them."""

    service: str  # "" = every service
    limit: int  # instances per registry at most
    registries: dict[str, DiffRegistry]
    instances: list[DiffInstance]
    discrepancies: list[Discrepancy]
    elapsed_seconds: float


# -- filter dry run ------------------------------------------------------------------------------


class DryRunService(TypedDict):
    """The verdict of the current rules on one service of one data center."""

    side: Literal["export", "import"]
    dc: str  # export: this data center; import: the origin
    service: str
    instances: int
    passing: int  # instances the rules let through
    verdict: Literal["yes", "no", "partly"]
    reason: str


class DryRunAnswer(TypedDict):
    """``GET /v1/sync/filters/dry-run``: what the current rules export and import."""

    direction: str
    services: list[DryRunService]
    unused_rules: list[str]
    unreachable: dict[str, str]  # data center -> why its services are not listed
    truncated: bool  # a listing hit its bound: some services are not judged
