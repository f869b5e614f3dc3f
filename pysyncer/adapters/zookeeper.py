"""The ZooKeeper adapter: Dubbo's interface-level layout on pysyncer's own ZK client.

Owns the Dubbo tree ``{root}/{interface}/providers/{URL-encoded provider URL}`` (root
``/dubbo`` by default): listing it, following it with one-shot child watches re-armed
on every read (the root, each interface node and each ``providers`` node), and writing
copies as EPHEMERAL provider nodes (parents persistent), so copies vanish by themselves
when the syncer's session ends. After a session expiry every copy this adapter
registered is created again in the new session (and, until then, :meth:`renew` reports
``not_found`` for a copy whose node is gone). URL mapping: :mod:`.dubbourl`.

Security: with ``username`` (and a password from ``password-file``, else ``password``,
e.g. ``PYSYNCER_ADAPTER_PASSWORD``) the session authenticates with ``digest
user:password``, copies get the ACL "creator all, world read" and the parent nodes this
adapter creates "creator all, world ``dir-world-perms``" (default ``rc``: anyone reads and
Dubbo providers can still add their nodes, but nobody else deletes or changes a copy;
nodes that already exist keep their ACL). ``tls`` (or ``tls-ca``/``tls-cert``) connects
to the servers' ``secureClientPort`` with TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, unquote

from pysyncer.adapters._retry import RETRY_MAX, Backoff
from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.adapters._tls import TlsOptions
from pysyncer.adapters.base import (
    AdapterError,
    ChangeBatch,
    ChangeEvent,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
    UnavailableError,
)
from pysyncer.adapters.dubbourl import (
    decode_node_name,
    encode_node_name,
    instance_from_url,
    instance_to_url,
)
from pysyncer.adapters.zk import (
    NodeExistsError,
    NoNodeError,
    SessionEvent,
    WatchEvent,
    ZkClient,
)
from pysyncer.adapters.zk.proto import ACL, OPEN_ACL, Perm, perms_from_letters
from pysyncer.aiowait import wait_event
from pysyncer.credentials import read_secret
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey

__all__ = ["ZookeeperAdapter", "ZookeeperSettings", "create"]

log = logging.getLogger(__name__)

PROVIDERS = "providers"
_RESCAN_ALL = "\x00all"  # a dirty-set marker: re-read the whole tree (new session)
READ_CONCURRENCY = 64  # interfaces read at once (their requests are pipelined)
LOGIN_SETTINGS: Final = "adapter.username and adapter.password-file (or PYSYNCER_ADAPTER_PASSWORD)"


@dataclass(frozen=True, slots=True)
class ZookeeperSettings:
    """Settings of the ZooKeeper adapter (``[adapter]`` keys with dashes)."""

    root: str = "/dubbo"  # Dubbo's registry group: the tree's root node
    session_timeout: float = 10.0  # asked of the server (it clamps to 2..20 tickTime)
    connect_timeout: float = 3.0
    request_timeout: float = 10.0  # per request, including waiting for a reconnect
    close_session: bool = False  # end the session on close (copies vanish at once)
    retry_max: float = RETRY_MAX  # largest backoff of the change feed's retries
    username: str = ""  # digest auth user; copies and created parents then get ACLs
    password_file: str = ""  # file holding the digest password
    password: str = field(default="", repr=False)  # e.g. from PYSYNCER_ADAPTER_PASSWORD
    dir_world_perms: str = "rc"  # what anyone may do on parents this adapter creates
    tls: bool = False  # connect with TLS (also on with tls-ca or tls-cert)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True
    tls_server_name: str = ""  # name the server certificate carries, if not the host

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> ZookeeperSettings:
        result = settings_from_mapping(cls, "zookeeper", settings)
        root = result.root
        if not root.startswith("/") or root.endswith("/") or "//" in root:
            raise ConfigError(
                f"zookeeper adapter: adapter.root must be an absolute node path, got {root!r}"
            )
        for name in ("session_timeout", "connect_timeout", "request_timeout", "retry_max"):
            if getattr(result, name) <= 0:
                raise ConfigError(
                    f"zookeeper adapter: adapter.{name.replace('_', '-')} must be > 0"
                )
        try:
            perms_from_letters(result.dir_world_perms)
        except ValueError as exc:
            raise ConfigError(f"zookeeper adapter: adapter.dir-world-perms: {exc}") from None
        if (result.password or result.password_file) and not result.username:
            raise ConfigError(f"zookeeper adapter: a password without a user: set {LOGIN_SETTINGS}")
        return result

    def digest(self) -> bytes:
        """``user:password`` for ``addauth digest`` (empty without a user)."""
        if not self.username:
            return b""
        setting = "zookeeper adapter: adapter.password-file"
        password = read_secret(self.password_file, "", setting) or self.password
        if not password:
            raise ConfigError(
                f"zookeeper adapter: user {self.username!r} has no password: set {LOGIN_SETTINGS}"
            )
        return f"{self.username}:{password}".encode()

    def acls(self) -> tuple[ACL, ACL]:
        """(ACL of copies, ACL of created parents): open without a user."""
        if not self.username:
            return OPEN_ACL, OPEN_ACL
        creator = (Perm.ALL, "auth", "")
        world = perms_from_letters(self.dir_world_perms)
        parents = (creator, (world, "world", "anyone")) if world else (creator,)
        return (creator, (Perm.READ, "world", "anyone")), parents

    def tls_context(self) -> ssl.SSLContext | None:
        options = TlsOptions.of(self)
        if not (self.tls or options.ca or options.cert):
            return None
        return options.context("zookeeper adapter: ")


def interface_segment(name: str) -> str:
    """The interface's node name (Java class names stay as they are)."""
    return quote(name, safe="-_.$:@")


@dataclass(slots=True)
class _Copy:
    instance: Instance
    path: str


class ZookeeperAdapter:
    """Dubbo providers in ZooKeeper as an :class:`~pysyncer.adapters.base.Adapter`."""

    name = "zookeeper"

    def __init__(self, addresses: Sequence[str], settings: ZookeeperSettings | None = None) -> None:
        self.settings = settings or ZookeeperSettings()
        s = self.settings
        digest = s.digest()
        acl, dir_acl = s.acls()
        self.client = ZkClient(
            addresses,
            session_timeout=s.session_timeout,
            connect_timeout=s.connect_timeout,
            request_timeout=s.request_timeout,
            on_state=self._on_state,
            auth=[("digest", digest)] if digest else [],
            acl=acl,
            dir_acl=dir_acl,
            tls=s.tls_context(),
            tls_server_name=s.tls_server_name,
        )
        self.root = s.root
        self._closed = asyncio.Event()
        self._copies: dict[str, _Copy] = {}  # instance id -> what we registered, where
        # providers dir -> node name -> (instance, ref); None until the first listing
        self._known: dict[str, dict[str, tuple[Instance, LocalRef]]] | None = None
        self._interfaces: set[str] = set()  # the root's children at the last read
        # Interfaces whose node and providers node were read in this session, i.e. with
        # their watches armed: a change of the root's children reads only the others.
        self._armed: set[str] = set()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._recreate_task: asyncio.Task[None] | None = None
        self._started_once = False
        self.recreated = 0  # copies created again after session expiries (a metric)
        self.skipped_nodes = 0  # provider nodes whose name is not a URL
        self._warned: set[str] = set()  # the skipped nodes already logged (once each)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._closed.clear()
        await self.client.start()
        self._started_once = True

    async def close(self) -> None:
        self._closed.set()
        self._wake.set()
        task, self._recreate_task = self._recreate_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Without close_session the session is left to expire on the server, like a
        # crash: the copies stay for the session timeout, as every registry's copies
        # outlive a stopped syncer by their TTL.
        self.client.on_state = None
        await self.client.close(end_session=self.settings.close_session)
        self.client.on_state = self._on_state

    def _on_state(self, event: SessionEvent) -> None:
        if event.state == "expired":
            log.warning("zookeeper session expired: %d copies to create again", len(self._copies))
        elif event.state == "connected" and event.new_session and self._started_once:
            # Watches and our ephemeral nodes died with the old session.
            self._mark_dirty(_RESCAN_ALL)
            idle = self._recreate_task is None or self._recreate_task.done()
            if self._copies and not self._closed.is_set() and idle:
                self._recreate_task = asyncio.get_running_loop().create_task(
                    self._recreate_copies()
                )

    async def _recreate_copies(self) -> None:
        backoff = Backoff(self.settings.retry_max)
        pending = dict(self._copies)
        while pending and not self._closed.is_set():
            for instance_id, copy in list(pending.items()):
                if self._copies.get(instance_id) is not copy:
                    pending.pop(instance_id)  # re-registered or removed meanwhile
                    continue
                try:
                    await self._create_ephemeral(copy.path)
                except UnavailableError:
                    break
                except AdapterError as exc:
                    log.warning("zookeeper: cannot recreate %s: %s", instance_id, exc)
                pending.pop(instance_id)
                self.recreated += 1
            if pending:
                await self._sleep(backoff.failed())

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._closed, seconds)

    # -- paths -------------------------------------------------------------------------

    def _service_dir(self, name: str) -> str:
        return f"{self.root}/{interface_segment(name)}"

    def _providers_dir(self, name: str) -> str:
        return f"{self._service_dir(name)}/{PROVIDERS}"

    def _node_path(self, instance: Instance) -> str:
        if not instance.service.name:
            raise ConfigError("zookeeper adapter: a Dubbo provider needs a service name")
        url = instance_to_url(instance)
        return f"{self._providers_dir(instance.service.name)}/{encode_node_name(url)}"

    def _parse_node(self, interface: str, node: str) -> tuple[Instance, LocalRef] | None:
        try:
            instance = instance_from_url(decode_node_name(node), interface)
        except ValueError as exc:
            self.skipped_nodes += 1
            path = f"{self._providers_dir(interface)}/{node}"
            if path not in self._warned:
                self._warned.add(path)
                log.warning("zookeeper: skipping provider node %s: %s", path, exc)
            return None
        return instance, LocalRef(interface, instance.instance_id)

    # -- services and copies -----------------------------------------------------------

    async def ensure_service(self, service: ServiceKey) -> str:
        if not service.name:
            raise ConfigError("zookeeper adapter: a Dubbo provider needs a service name")
        await self.client.ensure_path(self._providers_dir(service.name))
        return service.name

    async def _create_ephemeral(self, path: str) -> None:
        try:
            await self.client.create(path, b"", ephemeral=True, make_parents=True)
        except NodeExistsError:
            stat = await self.client.exists(path)
            if stat is not None and stat.ephemeral_owner == self.client.session_id:
                return
            # left by an earlier session (ours or another syncer's): take it over
            with contextlib.suppress(NoNodeError):
                await self.client.delete(path)
            await self.client.create(path, b"", ephemeral=True, make_parents=True)

    async def register(self, instance: Instance) -> LocalRef:
        path = self._node_path(instance)
        old = self._copies.get(instance.instance_id)
        if old is not None and old.path != path:
            with contextlib.suppress(NoNodeError):
                await self.client.delete(old.path)
        await self._create_ephemeral(path)
        self._copies[instance.instance_id] = _Copy(instance, path)
        return LocalRef(instance.service.name, instance.instance_id)

    async def _find(self, ref: LocalRef) -> tuple[str, Instance] | None:
        """(node path, instance) of a ref as the registry holds it now, or None."""
        directory = self._providers_dir(ref.service_id)
        copy = self._copies.get(ref.instance_id)
        mine = copy is not None and copy.path.startswith(directory + "/")
        if copy is not None and mine and await self.client.exists(copy.path) is not None:
            parsed = self._parse_node(ref.service_id, copy.path.rsplit("/", 1)[1])
            if parsed is not None:
                return copy.path, parsed[0]
        try:
            children = await self.client.get_children(directory)
        except NoNodeError:
            return None
        for node in children:
            parsed = self._parse_node(ref.service_id, node)
            if parsed is not None and parsed[0].instance_id == ref.instance_id:
                return f"{directory}/{node}", parsed[0]
        return None

    async def get_instance(self, ref: LocalRef) -> Instance:
        found = await self._find(ref)
        if found is None:
            raise NotFoundError(f"zookeeper: no provider {ref.instance_id!r} of {ref.service_id}")
        return found[1]

    async def unregister(self, ref: LocalRef) -> None:
        copy = self._copies.pop(ref.instance_id, None)
        path = copy.path if copy is not None else None
        if path is None:
            found = await self._find(ref)
            path = found[0] if found is not None else None
        if path is not None:
            with contextlib.suppress(NoNodeError):
                await self.client.delete(path)

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        """A copy is alive while its ephemeral node exists: one getChildren per interface."""
        by_dir: dict[str, set[str] | AdapterError | None] = {}
        for ref in refs:
            by_dir.setdefault(self._providers_dir(ref.service_id), None)

        async def read(directory: str) -> None:
            try:
                by_dir[directory] = set(await self.client.get_children(directory))
            except NoNodeError:
                by_dir[directory] = set()
            except AdapterError as exc:
                by_dir[directory] = exc

        await asyncio.gather(*(read(d) for d in by_dir))
        results: list[RenewResult] = []
        for ref in refs:
            directory = self._providers_dir(ref.service_id)
            children = by_dir[directory]
            copy = self._copies.get(ref.instance_id)
            if isinstance(children, AdapterError):
                results.append(RenewResult(ref, "error", str(children)))
            elif copy is None or not copy.path.startswith(directory + "/"):
                results.append(RenewResult(ref, "not_found", "not registered by this syncer"))
            elif copy.path.rsplit("/", 1)[1] in (children or ()):
                results.append(RenewResult(ref, "ok"))
            else:
                results.append(RenewResult(ref, "not_found", "provider node is gone"))
        return results

    # -- listing -----------------------------------------------------------------------

    def _on_watch(self, event: WatchEvent) -> None:
        self._mark_dirty(event.path)

    def _mark_dirty(self, path: str) -> None:
        self._dirty.add(path)
        self._wake.set()

    async def _children(self, path: str) -> list[str] | None:
        """Children of ``path`` with a child watch re-armed; None (exists watch) if absent."""
        try:
            return await self.client.get_children(path, watch=self._on_watch)
        except NoNodeError:
            # Watch for its creation; created in between: read it again.
            if await self.client.exists(path, watch=self._on_watch) is not None:
                return await self._children(path)
            return None

    async def _read_tree(self) -> dict[str, dict[str, tuple[Instance, LocalRef]]]:
        """Every providers dir under the root, all watches armed."""
        interfaces = set(await self._children(self.root) or [])
        listings = await self._read_interfaces(interfaces)
        self._interfaces = interfaces
        self._armed = set(interfaces)
        return {
            f"{self.root}/{segment}/{PROVIDERS}": listing
            for segment, listing in listings.items()
            if listing
        }

    async def _read_interfaces(
        self, segments: Collection[str]
    ) -> dict[str, dict[str, tuple[Instance, LocalRef]]]:
        """Read each interface node and its providers, arming both watches (pipelined)."""
        listings: dict[str, dict[str, tuple[Instance, LocalRef]]] = {}

        async def one(segment: str) -> None:
            node, listing = await asyncio.gather(
                self._children(f"{self.root}/{segment}"),
                self._read_providers(segment),
                return_exceptions=True,
            )
            for result in (node, listing):
                if isinstance(result, BaseException):
                    raise result
            assert not isinstance(listing, BaseException)
            listings[segment] = listing

        await _each(segments, one)
        return listings

    async def _read_providers(self, segment: str) -> dict[str, tuple[Instance, LocalRef]]:
        nodes = await self._children(f"{self.root}/{segment}/{PROVIDERS}") or []
        interface = unquote(segment)
        listing: dict[str, tuple[Instance, LocalRef]] = {}
        for node in nodes:
            parsed = self._parse_node(interface, node)
            if parsed is not None:
                listing[node] = parsed
        return listing

    async def list_instances(self) -> Snapshot:
        self._dirty.clear()  # the listing covers every change before it
        tree = await self._read_tree()
        self._known = tree
        instances: list[Instance] = []
        refs: dict[str, LocalRef] = {}
        for listing in tree.values():
            for instance, ref in listing.values():
                instances.append(instance)
                refs[instance.instance_id] = ref
        return Snapshot(tuple(instances), refs, str(self.client.last_zxid))

    # -- change detection --------------------------------------------------------------

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = Backoff(self.settings.retry_max)
        while not self._closed.is_set():
            try:
                if self._known is None:
                    self._dirty.clear()
                    self._known = await self._read_tree()
                    yield ChangeBatch([], resync=True)  # no listing covers the start point
                    continue
                if not self._dirty:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                dirty, self._dirty = self._dirty, set()
                try:
                    events = await self._rescan(dirty)
                except BaseException:
                    self._dirty |= dirty  # read them again after the retry
                    raise
                backoff.succeeded()
                if events:
                    yield ChangeBatch(events)
            except AdapterError as exc:
                if self._closed.is_set():
                    return
                delay = backoff.failed()
                log.warning("zookeeper change detection: %s (retrying in %.1fs)", exc, delay)
                await self._sleep(delay)

    async def _rescan(self, dirty: set[str]) -> list[ChangeEvent]:
        """Re-read what the fired watches in ``dirty`` point at; the events of the diff.

        All reads come first (concurrently); the adapter's state (known listings, the
        root's children, the armed interfaces) changes only once all of them succeeded,
        so a failed rescan read again from ``dirty`` loses neither an event nor a watch.
        """
        known = self._known
        assert known is not None
        prefix = self.root + "/"
        interfaces, armed = self._interfaces, self._armed
        whole: set[str] = set()  # interfaces: read the node and its providers node
        providers: set[str] = set()  # interfaces: read the providers node only
        if _RESCAN_ALL in dirty or self.root in dirty:
            interfaces = set(await self._children(self.root) or [])
            if _RESCAN_ALL in dirty:
                armed = set()  # the watches died with the old session
            whole |= interfaces - armed  # new interfaces (or never read in full)
            providers |= self._interfaces - interfaces  # gone: their providers too
        for path in dirty:
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            if len(parts) == 1:  # an interface node: categories came or went
                whole.add(parts[0])
            elif len(parts) == 2 and parts[1] == PROVIDERS:
                providers.add(parts[0])
        gone = (whole | providers) - interfaces
        whole &= interfaces
        providers -= whole
        listings = await self._read_interfaces(whole)

        async def read_providers(segment: str) -> None:
            listings[segment] = await self._read_providers(segment)

        await _each(providers & interfaces, read_providers)
        events: list[ChangeEvent] = []
        for segment in sorted(listings.keys() | gone):
            directory = f"{prefix}{segment}/{PROVIDERS}"
            current = listings.get(segment, {})
            previous = known.get(directory, {})
            for node, (instance, ref) in current.items():
                if node not in previous:
                    events.append(ChangeEvent("upsert", instance, ref))
            for node, (instance, ref) in previous.items():
                if node not in current:
                    events.append(ChangeEvent("delete", instance, ref))
            if current:
                known[directory] = current
            else:
                known.pop(directory, None)
        self._interfaces = interfaces
        self._armed = (armed | whole) & interfaces
        return events


async def _each(items: Collection[str], call: Callable[[str], Awaitable[None]]) -> None:
    """``call`` for every item, at most :data:`READ_CONCURRENCY` at once.

    After an error no new call starts; the first error is raised once the calls under
    way have ended (nothing is left running behind a failed rescan).
    """
    pending = iter(items)
    failed = False

    async def worker() -> None:
        nonlocal failed
        for item in pending:
            if failed:
                return
            try:
                await call(item)
            except BaseException:
                failed = True
                raise

    workers = min(READ_CONCURRENCY, len(items))
    results = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> ZookeeperAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``zookeeper``)."""
    return ZookeeperAdapter(addresses, ZookeeperSettings.from_mapping(settings))
