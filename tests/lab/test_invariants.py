"""The lab's invariant checker on hand-built registry states: it passes a converged state
and names each kind of violation (with instance and time) when one is planted."""

from __future__ import annotations

from typing import Any

from lab.invariants import (
    Admission,
    Copy,
    Monitor,
    Observation,
    RegistryView,
    check_converged,
    registry_view,
    view_of,
)

ORDERS = "lab/orders/1.0.0"
PRIVATE = "lab/private-svc/1.0.0"


def view(service: str = ORDERS, host: str = "h1", gen: str = "0") -> tuple[Any, ...]:
    return (service, host, ("rest://x:1",), "UP", (("gen", gen),))


def converged_state() -> dict[str, RegistryView]:
    a = RegistryView("dc-a", originals={"a1": view(), "a2": view(host="h2")})
    b = RegistryView("dc-b", originals={"b1": view(host="hb")})
    a.copies = [Copy("dc-b", "b1", "px1", view(host="hb"))]
    b.copies = [Copy("dc-a", "a1", "px2", view()), Copy("dc-a", "a2", "px3", view(host="h2"))]
    return {"dc-a": a, "dc-b": b}


def kinds(found: list[Any]) -> list[tuple[str, str, str]]:
    return sorted((v.kind, v.dc, v.instance) for v in found)


def test_a_converged_state_passes() -> None:
    snapshot = Observation(10.0, converged_state(), exported={"dc-a": 2, "dc-b": 1})
    assert check_converged(snapshot, Admission()) == []


def test_missing_duplicate_deleted_and_stale_copies_are_named() -> None:
    state = converged_state()
    b = state["dc-b"]
    b.copies = [
        Copy("dc-a", "a1", "px2", view(gen="7")),  # stale fields
        Copy("dc-a", "gone", "px4", view()),  # origin deleted it
        Copy("dc-a", "gone", "px5", view()),  # ... twice
    ]  # a2 missing
    found = check_converged(Observation(42.5, state), Admission())
    assert kinds(found) == [
        ("copy-of-deleted-instance", "dc-b", "dc-a/gone"),
        ("duplicate-copy", "dc-b", "dc-a/gone"),
        ("missing-copy", "dc-b", "dc-a/a2"),
        ("stale-fields", "dc-b", "dc-a/a1"),
    ]
    assert all(v.at == 42.5 for v in found)
    assert "t=42.5s missing-copy in dc-b: dc-a/a2" in [str(v) for v in found]


def test_copies_of_copies_and_of_own_instances_are_flagged() -> None:
    state = converged_state()
    c = RegistryView(
        "dc-c", copies=[Copy("dc-b", "px2", "px9", view()), Copy("dc-c", "c0", "px8", view())]
    )
    c.copies += [Copy("dc-a", "a1", "pxa", view()), Copy("dc-a", "a2", "pxb", view(host="h2"))]
    c.copies += [Copy("dc-b", "b1", "pxc", view(host="hb"))]
    state["dc-c"] = c
    state["dc-a"].copies.append(Copy("dc-c", "never", "pxd", view()))
    found = kinds(check_converged(Observation(1.0, state), Admission()))
    assert ("exported-by-non-origin", "dc-c", "dc-b/px2") in found
    assert ("copy-of-own-instance", "dc-c", "dc-c/c0") in found
    assert ("copy-of-deleted-instance", "dc-a", "dc-c/never") in found


def test_filters_decide_what_must_and_must_not_be_held() -> None:
    admission = Admission(
        export_exclude={"dc-a": ["private-*"]}, import_exclude={"dc-b": [("dc-c", "*")]}
    )
    state = converged_state()
    state["dc-a"].originals["a3"] = view(service=PRIVATE)  # stays home: no copy wanted
    state["dc-c"] = RegistryView("dc-c", originals={"c1": view(host="hc")})
    state["dc-a"].copies.append(Copy("dc-c", "c1", "pxe", view(host="hc")))
    state["dc-c"].copies = [
        Copy("dc-a", "a1", "pxf", view()),
        Copy("dc-a", "a2", "pxg", view(host="h2")),
    ]
    state["dc-c"].copies.append(Copy("dc-b", "b1", "pxh", view(host="hb")))
    assert check_converged(Observation(1.0, state, {"dc-a": 2}), admission) == []
    state["dc-b"].copies.append(Copy("dc-a", "a3", "pxi", view(service=PRIVATE)))
    state["dc-b"].copies.append(Copy("dc-c", "c1", "pxj", view(host="hc")))
    found = kinds(check_converged(Observation(2.0, state, {"dc-a": 3}), admission))
    assert found == [
        ("copy-not-admitted", "dc-b", "dc-a/a3"),
        ("copy-not-admitted", "dc-b", "dc-c/c1"),
        ("exported-count", "dc-a", "-"),
    ]
    assert 'name = "private-*"' in admission.toml("dc-a")
    assert 'dc = "dc-c"' in admission.toml("dc-b")
    assert Admission(receive_only={"dc-x"}).toml("dc-x").startswith('direction = "receive"')


def test_a_down_registry_is_a_violation_but_not_a_source_of_missing_copies() -> None:
    state = converged_state()
    state["dc-b"] = RegistryView("dc-b", up=False)
    state["dc-a"].copies = []
    assert kinds(check_converged(Observation(1.0, state), Admission())) == [
        ("registry-down", "dc-b", "-")
    ]


def test_monitor_counts_lapses_and_flags_removal_before_origin_grace() -> None:
    monitor = Monitor(origin_grace=30.0, policy_slack=10.0)
    assert monitor.observe(Observation(0.0, converged_state()), {}, {}) == []
    lapsed = converged_state()
    lapsed["dc-b"].copies = lapsed["dc-b"].copies[:1]  # a2's copy went, a2 lives
    new = monitor.observe(Observation(1.0, lapsed), {("dc-a", "dc-b"): 0.5}, {}, cause="partition")
    assert kinds(new) == [("removed-before-origin-grace", "dc-b", "dc-a/a2")]
    assert monitor.lapses == 1 and monitor.lapses_by_cause == {"partition": 1}
    assert [str(v) for v in monitor.lapse_log] == ["t=1.0s lapse in dc-b: dc-a/a2 partition"]
    # a copy whose original was deleted is no lapse
    deleted = converged_state()
    monitor.observe(Observation(2.0, deleted), {}, {})
    deleted = converged_state()
    del deleted["dc-a"].originals["a1"]
    deleted["dc-b"].copies = deleted["dc-b"].copies[1:]
    assert monitor.observe(Observation(3.0, deleted), {}, {}) == []
    assert monitor.lapses == 1


def test_monitor_ignores_wiped_registries_and_sees_duplicates_once() -> None:
    monitor = Monitor(origin_grace=30.0, policy_slack=10.0)
    monitor.observe(Observation(0.0, converged_state()), {}, {})
    wiped = converged_state()
    wiped["dc-b"].copies = []
    assert monitor.observe(Observation(1.0, wiped), {}, {}, wiped={"dc-b"}) == []
    assert monitor.lapses == 0
    doubled = converged_state()
    doubled["dc-b"].copies.append(Copy("dc-a", "a1", "pxz", view()))
    assert kinds(monitor.observe(Observation(2.0, doubled), {}, {})) == [
        ("duplicate-copy", "dc-b", "dc-a/a1")
    ]
    monitor.observe(Observation(3.0, doubled), {}, {})
    assert monitor.duplicates == 1


def test_monitor_flags_an_origin_policy_not_applied_once() -> None:
    monitor = Monitor(origin_grace=30.0, policy_slack=10.0)
    gone = {"dc-a": 0.0}
    assert monitor.observe(Observation(35.0, converged_state()), {}, gone) == []  # within slack
    late = monitor.observe(Observation(41.0, converged_state()), {}, gone)
    assert kinds(late) == [  # dc-b holds dc-a's copies; dc-a, cut off, holds dc-b's
        ("origin-policy-not-applied", "dc-a", "dc-a/*"),
        ("origin-policy-not-applied", "dc-b", "dc-a/*"),
    ]
    assert monitor.observe(Observation(45.0, converged_state()), {}, gone) == []
    expired = converged_state()
    expired["dc-b"].copies = []
    expired["dc-a"].copies = []
    assert monitor.observe(Observation(50.0, expired), {}, gone) == []
    assert monitor.lapses == 0 and monitor.policy_expiries == 3


def test_copies_gone_after_origin_grace_are_policy_not_lapses() -> None:
    monitor = Monitor(origin_grace=30.0, policy_slack=10.0)
    monitor.observe(Observation(0.0, converged_state()), {}, {})
    early = converged_state()
    early["dc-b"].copies = early["dc-b"].copies[1:]
    found = monitor.observe(Observation(20.0, early), {}, {"dc-a": 0.0})
    assert kinds(found) == [("removed-before-origin-grace", "dc-b", "dc-a/a1")]
    late = converged_state()
    late["dc-b"].copies = []
    assert monitor.observe(Observation(31.0, late), {}, {"dc-a": 0.0}) == []
    assert (monitor.lapses, monitor.policy_expiries) == (1, 1)


def test_registry_view_reads_the_rest_listing_shape() -> None:
    listing = [
        {"instanceId": "a1", "_service": ORDERS, "hostName": "h1", "endpoints": ["rest://x:1"],
         "status": "UP", "properties": {"gen": "0"}},
        {"instanceId": "px1", "_service": ORDERS, "hostName": "hb", "endpoints": ["rest://x:1"],
         "status": "UP", "properties": {"gen": "0", "pysyncer.origin.dc": "dc-b",
                                         "pysyncer.origin.id": "b1"}},
    ]  # fmt: skip
    found = registry_view("dc-a", listing)
    assert found.originals == {"a1": view()}
    assert found.copies == [Copy("dc-b", "b1", "px1", view(host="hb"))]
    assert view_of(listing[1], ORDERS) == view(host="hb")
