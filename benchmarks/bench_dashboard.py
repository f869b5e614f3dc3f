"""Dashboard costs on a pool of three data centers holding 10,000 instances.

Three ``pysyncer daemon`` processes (one per data center, embedded registries, an
admin token their read routes need) on loopback. ``--instances`` originals are
registered across them (``--services`` services, round robin over the data centers)
and the pool is left to converge (every data center holds a copy of every other's).
Then headless Chromium (Debian's ``chromium`` and ``chromium-driver``, via selenium)
opens data center A's ``/ui/`` and reports:

* **first render**: navigation start to the first rendered snapshot (the page's own
  ``performance.now()``), over ``--loads`` fresh loads; p50 and max;
* **snapshot**: bytes of the first ``snapshot`` event;
* **update latency**: one instance registered in data center B until A's page shows
  one more copy of B (sync propagation plus the stream's 1 s cadence plus rendering),
  over ``--updates`` registrations; p50 and max;
* **bytes per update**: ``delta`` events while idle and while the registrations run;
* **diff**: ``GET /v1/sync/diff`` of one service and of the whole pool (``limit`` 10,000).

    python -m benchmarks.bench_dashboard [--instances 10000] [--services 100]
                                         [--updates 10] [--loads 5] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from pysyncer.procs import DaemonProcess, RegistryClient, eventually

TOKEN = "bench-dashboard-token"
HOSTS = ("127.0.0.161", "127.0.0.162", "127.0.0.163")
INTERVAL, TIMES = 600, 3  # a lease of 40 min: no heartbeats needed for the run's length


def api(daemon: DaemonProcess, path: str) -> Any:
    request = urllib.request.Request(
        f"http://{daemon.admin}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def register_many(client: RegistryClient, dc: str, services: int, count: int) -> None:
    sids = [client.create_service("bench", f"svc-{i:03d}") for i in range(services)]
    for n in range(count):
        # endpoints unique across the pool: a registry answers a registration with the
        # endpoints of an instance it holds (a copy included) with that instance's id
        endpoint = f"rest://10.{ord(dc[-1]) % 256}.{n // 250}.{n % 250}:8080"
        client.register(sids[n % services], f"{dc}-{n}", [endpoint], interval=INTERVAL, times=TIMES)


def linked(daemon: DaemonProcess) -> bool:
    try:
        remote = api(daemon, "/v1/sync/status")["remote"]
    except OSError:
        return False
    streaming = sum(link["state"] == "streaming" for link in remote.values())
    return bool(streaming == len(HOSTS) - 1)


def converged(daemons: list[DaemonProcess], per_dc: list[int]) -> bool:
    for index, daemon in enumerate(daemons):
        remote = api(daemon, "/v1/sync/status")["remote"]
        for other, d in enumerate(daemons):
            if other != index and remote.get(d.dc, {}).get("copies") != per_dc[other]:
                return False
    return True


def browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1500,1900", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def open_page(driver: Any, daemon: DaemonProcess) -> dict[str, Any]:
    """Load A's page (token in session storage already) and wait for its first render."""
    driver.get(f"http://{daemon.admin}/ui/")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = driver.execute_script("return window.pysyncerStats")
        if stats and stats.get("firstRenderAt") is not None:
            return dict(stats)
        time.sleep(0.02)
    raise TimeoutError("the page never rendered")


def copies_shown(driver: Any, dc: str) -> int:
    text = driver.execute_script(
        "const c = document.querySelector(arguments[0]); return c ? c.textContent : '';",
        f'#links tr[data-dc="{dc}"] td.copies',
    )
    digits = str(text).replace(",", "")
    return int(digits) if digits.isdigit() else -1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    token_file = work / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    flags = ("--admin-token-file", str(token_file))
    daemons: list[DaemonProcess] = []
    driver = None
    try:
        for index, host in enumerate(HOSTS):
            join = ("--join", daemons[0].bind) if daemons else ()
            daemons.append(
                DaemonProcess(f"bd{index}", host, work, f"dc-{'abc'[index]}", *flags, *join)
            )
        for daemon in daemons:
            eventually(functools.partial(linked, daemon), 60, "up and linked", daemon)
        per_dc = [args.instances // 3 + (1 if i < args.instances % 3 else 0) for i in range(3)]
        started = time.monotonic()
        threads = [
            threading.Thread(
                target=register_many,
                args=(RegistryClient(d.registry), d.dc, args.services, per_dc[i]),
            )
            for i, d in enumerate(daemons)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        registered = time.monotonic() - started
        eventually(lambda: converged(daemons, per_dc), 300, "convergence", *daemons)
        converged_after = time.monotonic() - started
        a, b = daemons[0], daemons[1]
        driver = browser(work / "profile")
        driver.get(f"http://{a.admin}/ui/")
        driver.execute_script("sessionStorage.setItem('pysyncer-admin-token', arguments[0])", TOKEN)
        loads = [open_page(driver, a) for _ in range(args.loads)]
        first_render = [s["firstRenderAt"] for s in loads]
        snapshot_bytes = loads[-1]["frameBytes"][0]
        time.sleep(5)  # idle deltas
        idle = driver.execute_script("return window.pysyncerStats.frameBytes.slice(1)")
        client_b = RegistryClient(b.registry)
        sid = client_b.create_service("bench", "latency")
        latencies = []
        for n in range(args.updates):
            before = copies_shown(driver, b.dc)
            began = time.monotonic()
            client_b.register(
                sid, f"lat-{n}", [f"rest://10.9.9.{n}:80"], interval=INTERVAL, times=TIMES
            )
            while copies_shown(driver, b.dc) != before + 1:
                if time.monotonic() - began > 30:
                    raise TimeoutError("the page never showed the new copy")
                time.sleep(0.01)
            latencies.append((time.monotonic() - began) * 1000)
        stats = driver.execute_script("return window.pysyncerStats")
        busy = stats["frameBytes"][1 + len(idle) :]
        began = time.monotonic()
        one = api(a, "/v1/sync/diff?service=svc-001")
        diff_one = time.monotonic() - began
        began = time.monotonic()
        whole = api(a, "/v1/sync/diff?limit=10000")
        diff_pool = time.monotonic() - began
        return {
            "instances": args.instances,
            "services": args.services,
            "registered_seconds": round(registered, 1),
            "converged_seconds": round(converged_after, 1),
            "first_render_ms": {
                "p50": round(statistics.median(first_render), 1),
                "max": round(max(first_render), 1),
            },
            "snapshot_bytes": snapshot_bytes,
            "update_latency_ms": {
                "p50": round(statistics.median(latencies), 1),
                "p90": round(percentile(latencies, 0.9), 1),
                "max": round(max(latencies), 1),
            },
            "render_latency_ms_p50": round(statistics.median(stats["latenciesMs"]), 1),
            "delta_bytes_idle": {
                "mean": round(statistics.mean(idle), 1) if idle else 0,
                "count": len(idle),
            },
            "delta_bytes_busy": {
                "mean": round(statistics.mean(busy), 1) if busy else 0,
                "max": max(busy, default=0),
                "count": len(busy),
            },
            "diff_one_service": {
                "seconds": round(diff_one, 3),
                "instances": len(one["instances"]),
                "discrepancies": len(one["discrepancies"]),
            },
            "diff_whole_pool": {
                "seconds": round(diff_pool, 3),
                "instances": len(whole["instances"]),
                "truncated": [dc for dc, r in whole["registries"].items() if r["truncated"]],
            },
        }
    finally:
        if driver is not None:
            driver.quit()
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
