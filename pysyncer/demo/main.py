"""``run_demo``: check the size, set up the work directory, run the steps, always clean up.

Owns one run from the command line's arguments to the exit status: the size (full or
quick) and its limits, the work directory (temporary unless given; removed after a
success, kept after a failure), the data centers, the HTTP session, the order of the
steps (the restart step only in a full run), the time budget, Ctrl-C and SIGTERM, and
stopping every daemon it started, by pid, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import aiohttp

from pysyncer import procs
from pysyncer.demo import steps
from pysyncer.demo.cluster import Cluster, DataCenter, stop_all
from pysyncer.demo.display import Display
from pysyncer.demo.pki import PoolSecrets
from pysyncer.demo.plan import (
    DCS_RANGE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    FULL,
    INSTANCES_RANGE,
    QUICK,
    SERVICES_RANGE,
    TOTAL_BUDGET,
    DemoError,
    dc_names,
)
from pysyncer.demo.registries import Application, Observer
from pysyncer.demo.state import DemoState

__all__ = ["run_demo"]


async def _run_steps(
    dcs: list[DataCenter], services: int, instances: int, restart: bool, display: Display
) -> int:
    timeout = aiohttp.ClientTimeout(total=3)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        run = steps.Scenario(
            state=DemoState(dcs, services, instances),
            display=display,
            cluster=Cluster(session, dcs),
            observer=Observer(session, dcs),
            apps={dc.name: Application(session, dc) for dc in dcs},
        )
        try:
            await steps.start_syncers(run)
            await steps.register_samples(run)
            await steps.delete_one(run)
            if restart:
                await steps.restart_one(run)
            return await steps.summary(run)
        finally:
            for task in run.background:
                task.cancel()
            await asyncio.gather(*run.background, return_exceptions=True)
            display.say()


def run_demo(
    dcs: int | None = None,
    services: int | None = None,
    instances: int | None = None,
    workdir: str | Path | None = None,
    *,
    quick: bool = False,
) -> int:
    """Run the demo; the exit status (0 all counts right, 1 failure, 130 interrupted).

    Sizes left None take the full run's defaults, or the quick run's with ``quick``
    (which also leaves out the restart step).
    """
    size = QUICK if quick else FULL
    dcs = size.dcs if dcs is None else dcs
    services = size.services if services is None else services
    instances = size.instances if instances is None else instances
    if dcs not in DCS_RANGE or services not in SERVICES_RANGE or instances not in INSTANCES_RANGE:
        print(
            f"pysyncer demo: needs {DCS_RANGE.start}-{DCS_RANGE.stop - 1} data centers, "
            f"{SERVICES_RANGE.start}-{SERVICES_RANGE.stop - 1} services and "
            f"{INSTANCES_RANGE.start}-{INSTANCES_RANGE.stop - 1} instances",
            file=sys.stderr,
        )
        return EXIT_FAILED
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="pysyncer-demo-")) if workdir is None else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    display = Display(sys.stdout)
    centers = [
        DataCenter(name, procs.loopback_host(i), root) for i, name in enumerate(dc_names(dcs))
    ]
    secrets = PoolSecrets(root)
    for center in centers:
        center.security = secrets.flags(center.name, center.node)
    display.say(f"pysyncer demo: logs in {root / 'logs'}, data in {root / 'data'}")
    display.say(
        f"gossip encrypted, sync plane mutual TLS: key and certificates in {secrets.directory}"
    )
    status = EXIT_FAILED
    previous_term = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread: no handler
        signal.signal(signal.SIGTERM, on_term)
    try:
        work = _run_steps(centers, services, instances, size.restart, display)
        status = asyncio.run(asyncio.wait_for(work, TOTAL_BUDGET))
    except KeyboardInterrupt:
        display.say("interrupted: stopping every syncer")
        status = EXIT_INTERRUPTED
    except TimeoutError:
        display.say(f"FAILED: the demo did not finish within {TOTAL_BUDGET:.0f} s")
    except (DemoError, OSError, aiohttp.ClientError) as exc:
        display.say(f"FAILED: {exc}")
    finally:
        stop_all(centers)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous_term)
        pids = ", ".join(str(p) for dc in centers for p in dc.pids)
        display.say(f"stopped every syncer (pids {pids})")
    if status == EXIT_OK and temporary:
        shutil.rmtree(root, ignore_errors=True)
    elif status != EXIT_OK:
        display.say(f"logs kept in {root / 'logs'}")
    return status
