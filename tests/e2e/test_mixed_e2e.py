"""Four data centers of four registry kinds, synced by real ``pysyncer daemon`` processes.

dc-a: the embedded registry (Service-Center REST); dc-b: Eureka (the in-process fake);
dc-c: Consul (the in-process fake, agent API); dc-d: a real ZooKeeper with Dubbo
providers. An instance registered natively in any one of them appears in the three
others with the field mapping of docs/adapters.md applied, and leaves all of them when
it is unregistered at its origin; copies are never exported back. Every process is
started by the test and stopped by its pid; every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import IN_CI
from tests.support.mixed import KINDS, MixedPool, Native, Seen, census
from tests.support.sync import ORIGIN_DC, ORIGIN_ID, eventually
from tests.support.zk import zookeeper_available

pytestmark = [pytest.mark.slow, pytest.mark.needs_server("zookeeper")]

CONVERGE = 40.0  # s; observed: a few seconds (Eureka polls every 0.5 s here)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedPool]:
    reason = zookeeper_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    made = MixedPool(tmp_path_factory.mktemp("mixed"))
    try:
        yield made
    finally:
        made.close()


def expected_copies(natives: list[Native], dc: str) -> dict[str, set[str]]:
    """origin dc -> origin ids that ``dc`` must hold copies of."""
    want: dict[str, set[str]] = {}
    for native in natives:
        if native.dc != dc:
            want.setdefault(native.dc, set()).add(native.native_id)
    return want


def converged(pool: MixedPool, natives: list[Native]) -> bool:
    """Every registry: exactly its own natives, and exactly one copy of each other one."""
    for dc, side in pool.sides.items():
        seen = census(side)
        if set(seen.natives) != {n.native_id for n in natives if n.dc == dc}:
            return False
        copies = {origin: set(ids) for origin, ids in seen.copies.items()}
        if copies != expected_copies(natives, dc):
            return False
    return True


def check_copy(kind: str, copy: Seen, native: Native) -> None:
    """The mapped fields of ``native``'s copy in a registry of ``kind``."""
    where = f"copy of {native.kind} {native.native_id} in {kind}: {copy}"
    assert copy.props[ORIGIN_DC] == native.dc, where
    assert copy.props[ORIGIN_ID] == native.native_id, where
    assert copy.native_id != native.native_id or kind == "eureka", where
    assert (copy.host, copy.port) == (native.ip, native.port), where
    for key, value in native.props.items():  # metadata carried under its own key
        assert copy.props.get(key) == value, (key, where)
    if kind == "servicecomb":
        assert copy.native_id.startswith("px"), where
        assert copy.service == native.name, where
        assert copy.extra["endpoints"] == native.endpoint, where
        assert copy.extra["hostName"] == native.host_name, where
        assert copy.extra["version"] == (native.version or copy.extra["version"]), where
        if native.app:
            assert copy.extra["app"] == native.app, where
        assert copy.status == "UP", where
    elif kind == "eureka":
        assert copy.service == native.name.upper(), where
        assert copy.extra["hostName"] == native.host_name, where
        assert copy.extra["portEnabled"] == "true", where
        assert copy.status == "UP", where
    elif kind == "consul":
        assert copy.service == native.name, where
        assert copy.status == "passing", where
        assert "_pysyncer" in copy.extra["rawMetaKeys"].split(","), where
        for key in native.props:  # plain keys stay plain in Meta
            assert key in copy.extra["rawMetaKeys"].split(","), (key, where)
    elif kind == "zookeeper":
        assert copy.service == native.name, where
        assert copy.extra["znode"] == native.name, where
        assert copy.scheme == native.scheme, where
        assert copy.props["side"] == "provider", where
        if native.app:
            assert copy.props["application"] == native.app, where
        if native.version:
            assert copy.props["version"] == native.version, where
        assert copy.status is None
    else:  # pragma: no cover
        raise AssertionError(kind)


def check_native(side_kind: str, seen: Seen, native: Native) -> None:
    """A native instance reads back as its client registered it (nothing added)."""
    assert ORIGIN_DC not in seen.props and ORIGIN_ID not in seen.props
    assert (seen.host, seen.port) == (native.ip, native.port)
    for key, value in native.props.items():
        assert seen.props.get(key) == value
    assert not any(k.startswith("pysyncer.") for k in seen.props), seen


# what a copy's native status field must read for each model status
EUREKA_STATUS = {"UP": "UP", "DOWN": "DOWN", "OUTOFSERVICE": "OUT_OF_SERVICE"}


def copy_status_ok(kind: str, copy: Seen, status: str) -> bool:
    """The copy shows model ``status`` natively where its kind has a status field."""
    carried = copy.props.get("pysyncer.status")
    if kind == "servicecomb":
        return copy.status == status
    if kind == "eureka":
        return copy.status == EUREKA_STATUS[status]
    if kind == "consul":  # agent-mode copies: passing when UP, else warning; exact in Meta
        return copy.status == ("passing" if status == "UP" else "warning") and carried == status
    return carried == (None if status == "UP" else status)  # zookeeper: presence is UP


def statuses_shown(pool: MixedPool, changed: dict[str, tuple[Native, str]]) -> bool:
    for dc, side in pool.sides.items():
        seen = census(side)
        for origin, (native, status) in changed.items():
            if origin == dc:
                continue
            copy = seen.copies.get(origin, {}).get(native.native_id)
            if copy is None or not copy_status_ok(side.kind, copy, status):
                # an assertion, not False: a timeout then says which copy lacked what
                raise AssertionError(
                    f"{dc} ({side.kind}): copy of {origin}'s {native.native_id} "
                    f"{'missing' if copy is None else f'shows {copy.status!r} {copy.props}'}"
                    f", want {status}"
                )
    return True


@pytest.mark.timeout(100)
def test_native_instances_reach_every_other_kind_and_leave_everywhere(pool: MixedPool) -> None:
    daemons = pool.daemons
    natives: list[Native] = []
    for n, kind in enumerate(KINDS):
        side = pool.by_kind(kind)
        props = {"color": f"c{n}", "zone": f"z-{kind}"}
        natives.append(side.register(pool.tag(), f"10.20.{n}.1", 8080 + n, props))
    eventually(lambda: converged(pool, natives), CONVERGE, "4 natives everywhere", *daemons)

    for dc, side in pool.sides.items():
        seen = census(side)
        for native in natives:
            if native.dc == dc:
                check_native(side.kind, seen.natives[native.native_id], native)
            else:
                check_copy(side.kind, seen.copies[native.dc][native.native_id], native)
    for daemon in daemons:  # copies are never exported back
        status = daemon.status()
        assert status["exported"] == 1, status
        for dc, remote in status["remote"].items():
            assert remote["copies"] == 1, (daemon.dc, dc, status)

    # Status changes at the origins (ZooKeeper has no status) reach every other kind.
    changed = {n.dc: (n, pool.sides[n.dc].set_down(n)) for n in natives if n.kind != "zookeeper"}
    eventually(lambda: statuses_shown(pool, changed), CONVERGE, "status changes", *daemons)
    origin_status = {
        "servicecomb": "DOWN",
        "eureka": "OUT_OF_SERVICE",
        "consul": "critical",
    }
    for dc, (native, _) in changed.items():
        shown = census(pool.sides[dc]).natives[native.native_id]
        assert shown.status == origin_status[native.kind], shown  # the origin keeps its own

    # A second instance of each kind, then every first one leaves at its origin.
    more = []
    for n, kind in enumerate(KINDS):
        side = pool.by_kind(kind)
        more.append(side.register(pool.tag(), f"10.21.{n}.1", 9080 + n, {"wave": "2"}))
    eventually(lambda: converged(pool, natives + more), CONVERGE, "8 natives everywhere", *daemons)
    for native in natives:
        pool.sides[native.dc].unregister(native)
    eventually(lambda: converged(pool, more), CONVERGE, "first wave gone everywhere", *daemons)
    for native in more:
        pool.sides[native.dc].unregister(native)
    eventually(lambda: converged(pool, []), CONVERGE, "every copy gone", *daemons)
    for daemon in daemons:
        assert daemon.status()["exported"] == 0, daemon.status()
        assert daemon.process.poll() is None, daemon.log()[-3000:]
