"""The demo's scenario, one function per step, and the bounded wait they share.

Owns the order of events and what each step prints: start the syncers and wait until
they form one pool with every link streaming; register the sample instances in every
registry and measure their propagation; delete one instance at its origin; stop one
syncer, watch the others keep its copies, restart it and wait until it caught up (the
full run only); and the summary, whose verdict is the exit status. Every wait is
bounded and fails early, with the log tail, when a syncer exits. It must not start or
signal a process except through :class:`~pysyncer.demo.cluster.DataCenter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysyncer.demo.cluster import Cluster, DataCenter
from pysyncer.demo.display import Display, ms, percentile
from pysyncer.demo.plan import (
    CATCH_UP_TIMEOUT,
    CONVERGE_TIMEOUT,
    DOWN_PAUSE,
    EXIT_FAILED,
    EXIT_OK,
    HEARTBEAT_INTERVAL,
    POLL_INTERVAL,
    START_TIMEOUT,
    STOP_TIMEOUT,
    DemoError,
)
from pysyncer.demo.registries import Application, Observer
from pysyncer.demo.state import DemoState

__all__ = [
    "Scenario",
    "delete_one",
    "register_samples",
    "restart_one",
    "start_syncers",
    "summary",
]


@dataclass
class Scenario:
    """Everything the steps share: the data centers, their clients, the running tasks."""

    state: DemoState
    display: Display
    cluster: Cluster
    observer: Observer
    apps: dict[str, Application]
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)
    restarted: DataCenter | None = None  # the syncer the restart step stopped and started

    @property
    def dcs(self) -> list[DataCenter]:
        return self.state.dcs

    def say(self, text: str = "") -> None:
        self.display.say(text)

    def table(self) -> list[str]:
        return self.state.registry_table(self.observer, self.cluster.links)

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        self.background.append(asyncio.get_running_loop().create_task(work))

    async def wait(
        self,
        condition: Callable[[], Any],
        timeout: float,
        what: str,
        progress: Callable[[], str] | None = None,
        *,
        show_progress: bool = True,
        interval: float = POLL_INTERVAL,
    ) -> float:
        """:func:`wait_for` on this scenario's data centers (and display, for progress)."""
        shown = self.display if progress is not None and show_progress else None
        return await wait_for(condition, timeout, what, progress, shown, self.dcs, interval)


async def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    progress: Callable[[], str] | None = None,
    display: Display | None = None,
    dcs: Sequence[DataCenter] = (),
    interval: float = POLL_INTERVAL,
) -> float:
    """Await ``condition()`` (sync or async) until true; the seconds it took.

    DemoError after ``timeout`` s, or as soon as one of ``dcs`` exits (with its log tail).
    """
    started = time.monotonic()
    deadline = started + timeout
    last_text, last_print = "", 0.0
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        for dc in dcs:
            status = dc.exited()
            if status is not None:
                raise DemoError(
                    f"the {dc.name} syncer exited with status {status} while "
                    f"waiting for {what}; its log ({dc.log_path}) ends with:\n{dc.log_tail()}"
                )
        now = time.monotonic()
        if now > deadline:
            extra = f" ({progress()})" if progress else ""
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        if progress and display:
            text = progress()
            if text != last_text or now - last_print > 2.0:
                display.say(f"   ... {text}")
                last_text, last_print = text, now
        await asyncio.sleep(interval)


# -- 1. start ---------------------------------------------------------------------------------


async def start_syncers(run: Scenario) -> None:
    """Start every daemon (all joining the first) and wait until they form one pool."""
    dcs, n = run.dcs, len(run.dcs)
    run.say(f"1. Starting {n} data centers: one syncer daemon each, with its embedded registry")
    first = dcs[0]
    first.start(join=None)
    for dc in dcs[1:]:
        dc.start(join=first.bind)
    for dc in dcs:
        run.say(
            f"   {dc.name:<10} pid {dc.pid:<7} gossip {dc.bind:<21} "
            f"registry {dc.registry:<28} admin {dc.admin}"
        )

    def progress() -> str:
        return "; ".join(
            f"{name.removeprefix('dc-')}: "
            + ("up" if s[0] else "starting")
            + (f", sees {s[1]}/{n}, {s[2]}/{n - 1} streaming" if s[0] else "")
            for name, s in run.cluster.seen.items()
        )

    took = await run.wait(
        run.cluster.all_ready, START_TIMEOUT, "every syncer healthy, in the pool and streaming",
        progress, interval=0.2,
    )  # fmt: skip
    run.state.figures["startup"] = took
    run.say(
        f"   all {n} syncers healthy, each sees {n} members, every link streaming ({took:.1f} s)"
    )
    for dc in dcs:
        run.say(f"   dashboard of {dc.name:<10} {dc.dashboard}")
    run.run_in_background(run.observer.run())


# -- 2. register and measure propagation -------------------------------------------------------


async def register_samples(run: Scenario) -> None:
    """Register the samples in every registry, keep them alive, wait until every registry
    holds every instance, and print the propagation table."""
    state, dcs, observer = run.state, run.dcs, run.observer
    per_dc = state.services * state.instances
    run.say()
    run.say(
        f"2. Registering {state.services} services x {state.instances} instances in each "
        f"registry ({per_dc} originals per data center, {per_dc * len(dcs)} in all), kept "
        f"alive by heartbeats every {HEARTBEAT_INTERVAL:.0f} s"
    )
    await run.wait(lambda: all(s.up for s in observer.latest.values()), 5, "first listings")
    with run.display.live(run.table):
        await asyncio.gather(
            *(run.apps[dc.name].register_all(i + 1, state.services, state.instances)
              for i, dc in enumerate(dcs))
        )  # fmt: skip
        for app in run.apps.values():
            run.run_in_background(app.keep_alive())
        await run.wait(
            lambda: not state.mismatches(observer), CONVERGE_TIMEOUT,
            "every registry to hold every instance", lambda: "; ".join(state.mismatches(observer)),
            show_progress=False,
        )  # fmt: skip
        await run.cluster.refresh_links()
    observer.expected = state.expected_from  # from now on, no registry may lack a copy
    run.say()
    for line in state.propagation_table(observer, run.apps):
        run.say(line)


# -- 3. delete --------------------------------------------------------------------------------


async def delete_one(run: Scenario) -> None:
    """Unregister one instance at its origin and time its disappearance everywhere."""
    state, dcs, observer = run.state, run.dcs, run.observer
    origin, origin_app = dcs[0], run.apps[dcs[0].name]
    victim = origin_app.instances[0]
    run.say()
    run.say(
        f"3. Unregistering {victim.app}/{victim.service} instance {victim.host_name} "
        f"({victim.instance_id[:12]}) at its origin {origin.name}"
    )
    state.deleted[victim.instance_id] = origin.name  # expected counts drop first
    await origin_app.unregister(victim)
    deleted_at = time.monotonic()

    def gone_everywhere() -> bool:
        return all(
            observer.latest[dc.name].at > deleted_at
            and not observer.latest[dc.name].holds(victim.instance_id)
            for dc in dcs
        )

    await run.wait(gone_everywhere, CONVERGE_TIMEOUT, f"{victim.host_name} to disappear everywhere")
    delays = {
        dc.name: observer.gone_at.get((dc.name, victim.instance_id), deleted_at) - deleted_at
        for dc in dcs
        if dc is not origin
    }
    state.figures["delete"] = max(delays.values())
    run.say(
        "   gone from " + ", ".join(f"{name} after {ms(max(0.0, d))}" for name, d in delays.items())
    )
    await run.wait(lambda: not state.mismatches(observer), CONVERGE_TIMEOUT, "counts after delete")


# -- 4. restart one syncer --------------------------------------------------------------------


async def restart_one(run: Scenario) -> None:
    """Stop the second syncer, watch the others keep its copies, start it again with the
    same data dir and wait until every registry holds the right counts again."""
    state, dcs, observer, cluster = run.state, run.dcs, run.observer, run.cluster
    target = run.restarted = dcs[1]
    others = [dc for dc in dcs if dc is not target]
    run.say()
    run.say(
        f"4. Stopping the {target.name} syncer (SIGTERM, pid {target.pid}); "
        "its embedded registry stops with it"
    )
    stop_began = time.monotonic()
    observer.untracked.add(target.name)
    observer.phase = f"while {target.name} was down"
    target.terminate()
    status = await asyncio.get_running_loop().run_in_executor(None, target.reap, STOP_TIMEOUT)
    state.stopped.add(target.name)
    run.say(f"   exited with status {status} after {time.monotonic() - stop_began:.1f} s")
    expected_kept = state.expected_from(target.name)
    kept_min = expected_kept

    def watch_kept() -> bool:
        nonlocal kept_min
        for dc in others:
            kept_min = min(kept_min, len(observer.latest[dc.name].copies.get(target.name, ())))
        return False

    with contextlib.suppress(DemoError):  # watching for DOWN_PAUSE s always "times out"
        await wait_for(watch_kept, DOWN_PAUSE, "")
    await cluster.refresh_links()
    with run.display.live(run.table):
        pass
    run.say(
        f"   while it was down for {DOWN_PAUSE:.0f} s the other registries kept serving its "
        f"{expected_kept} copies (fewest seen: {kept_min}); they expire only by TTL"
    )
    state.figures["kept_min"] = kept_min
    state.figures["kept_expected"] = expected_kept

    run.say(f"   starting {target.name} again with the same data dir ({target.data_dir})")
    target.start(join=dcs[0].bind)
    observer.phase = f"after {target.name} restarted with an empty registry"
    state.stopped.discard(target.name)

    async def caught_up() -> bool:
        return not state.mismatches(observer) and await cluster.all_ready()

    def progress() -> str:
        problems = state.mismatches(observer)
        return "; ".join(problems[:3]) or "counts right, waiting for links to stream"

    with run.display.live(run.table):
        took = await run.wait(
            caught_up, CATCH_UP_TIMEOUT, f"{target.name} to catch up", progress,
            show_progress=not run.display.tty, interval=0.05,
        )  # fmt: skip
    state.figures["catch_up"] = took
    observer.untracked.discard(target.name)
    run.say(
        f"   caught up {took:.2f} s after the restart: its registry holds all "
        f"{state.expected_total() - state.expected_from(target.name)} copies again, the "
        f"application re-registered its {state.expected_from(target.name)} originals "
        f"({run.apps[target.name].reregistered} re-registrations), no duplicates"
    )


# -- 5. summary -------------------------------------------------------------------------------


async def summary(run: Scenario) -> int:
    """Print the figures and the verdict; EXIT_OK when every count is right."""
    state, dcs, observer = run.state, run.dcs, run.observer
    await asyncio.sleep(0.1)
    problems = state.mismatches(observer)
    delays = state.all_delays()
    total = state.expected_total()
    per_dc = state.services * state.instances
    run.say()
    run.say("Summary")
    run.say(f"  data centers        {len(dcs)} ({', '.join(dc.name for dc in dcs)})")
    run.say(f"  instances           {total} originals ({per_dc} registered per dc, 1 deleted)")
    for dc in dcs:
        listing = observer.latest[dc.name]
        copies = sum(len(ids) for ids in listing.copies.values())
        expected = total - state.expected_from(dc.name)
        verdict = "ok" if copies == expected and not listing.duplicates else "WRONG"
        run.say(
            f"  {dc.name:<19} {len(listing.originals)} originals, {copies} copies "
            f"(expected {expected}), {listing.duplicates} duplicates: {verdict}"
        )
    if delays:
        run.say(
            f"  propagation         p50 {ms(statistics.median(delays))}, "
            f"p99 {ms(percentile(delays, 0.99))}, max {ms(max(delays))} "
            f"over {len(delays)} copies"
        )
    run.say(f"  delete              gone everywhere after {ms(state.figures['delete'])}")
    if run.restarted is not None:
        run.say(
            f"  restart             {run.restarted.name} caught up "
            f"{state.figures['catch_up']:.2f} s after restart; others kept "
            f"{int(state.figures['kept_min'])}/{int(state.figures['kept_expected'])} of its copies"
        )
    dips = {key: lacking for key, lacking in observer.deficit.items() if lacking > 0}
    restarted_aside = " (restarted one aside)" if run.restarted is not None else ""
    run.say(
        "  copies kept         "
        + (
            f"no registry ever lacked a copy once converged{restarted_aside}"
            if not dips
            else "WARNING: copies went missing for a while: "
            + "; ".join(f"{p}, {r} lacked {k} of {o}'s" for (p, r, o), k in sorted(dips.items()))
        )
    )
    run.say(f"  demo ran            {time.monotonic() - run.began:.1f} s")
    if problems or not delays:
        run.say("FAILED: " + "; ".join(problems or ["no propagation measured"]))
        return EXIT_FAILED
    run.say(
        f"OK: {len(dcs)} data centers, {total} instances, every registry holds all {total} "
        "(its originals + copies of the others'), no duplicates"
    )
    return EXIT_OK
