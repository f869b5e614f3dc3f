"""The dashboard in a real browser: headless Chromium against three real daemons (e2e).

Three syncers of three data centers run as subprocesses (:mod:`pysyncer.procs`), each
with an admin token that its read routes need; Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) opens their ``/ui/`` pages. Checked: the page
refuses without the token and works with it; it lists the members and links; an
instance registered in one data center changes its copy count on another's page without
a reload; a stopped syncer shows as failed; the diff view shows a copy deleted by hand
and shows it resolved after ``POST /v1/sync/full``. Screenshots go to
``test-artefacts/dashboard/`` (not in git); the page's own measurements (first render,
update latency, bytes per update) are written there as ``measurements.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer.admin.app import build_app
from pysyncer.admin.payloads import Member, SyncStatus
from pysyncer.procs import DaemonProcess, RegistryClient, eventually
from pysyncer.sync.peers import PeerStatus
from pysyncer.sync.status import remote_links
from tests.admin.test_admin_app import InMemoryBackend
from tests.support.sync import stop_daemons

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "dashboard"
TOKEN = "dashboard-test-token-7f3a"
HOSTS = {"dc-a": "127.0.0.141", "dc-b": "127.0.0.142", "dc-c": "127.0.0.143"}


def api(daemon: DaemonProcess, path: str, body: Any = None) -> Any:
    """The admin API of ``daemon`` with the token (POST when ``body`` is given)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{daemon.admin}{path}",
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def streaming(daemon: DaemonProcess, peers: int) -> bool:
    try:
        remote = api(daemon, "/v1/sync/status")["remote"]
    except OSError:
        return False
    return sum(1 for link in remote.values() if link["state"] == "streaming") == peers


class Pool:
    """Three data centers, one syncer each (embedded registry), sharing the admin token."""

    def __init__(self, workdir: Path) -> None:
        token_file = workdir / "admin.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        flags = ("--admin-token-file", str(token_file), "--admin-read-auth", "token")
        self.daemons: dict[str, DaemonProcess] = {}
        first: DaemonProcess | None = None
        for dc, host in HOSTS.items():
            join = ("--join", first.bind) if first is not None else ()
            daemon = DaemonProcess(f"n-{dc}", host, workdir, dc, *flags, *join)
            self.daemons[dc] = daemon
            first = first or daemon
        for daemon in self.daemons.values():
            linked = functools.partial(streaming, daemon, 2)
            eventually(linked, 90, f"{daemon.name} linked", daemon)
        self.registries = {dc: RegistryClient(d.registry) for dc, d in self.daemons.items()}

    def close(self) -> None:
        stop_daemons(self.daemons.values())


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with contextlib.closing(Pool(tmp_path_factory.mktemp("dashboard"))) as made:
        yield made


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1500,1900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def wait_for(driver: WebDriver, check: Any, timeout: float, what: str) -> Any:
    """``check(driver)`` once truthy (stale elements are retried); fails with a screenshot."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check(driver)
        except WebDriverException:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            shot(driver, "failed-" + what.replace(" ", "-"))
            raise AssertionError(f"the page never showed {what}")
        time.sleep(0.25)


def text(driver: WebDriver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def open_page(driver: WebDriver, daemon: DaemonProcess) -> None:
    """``daemon``'s dashboard, the token given when it asks (once per origin and tab)."""
    driver.get(f"http://{daemon.admin}/ui/")

    def shown(d: WebDriver) -> str:
        for name in ("auth", "main"):
            if d.find_element(By.ID, name).is_displayed():
                return name
        return ""

    if wait_for(driver, shown, 15, "the token form or the panels") == "auth":
        driver.find_element(By.ID, "auth-token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#auth-form button").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "main").is_displayed(), 15, "the panels")


def copies_of(driver: WebDriver, origin: str) -> int:
    cell = text(driver, f'#links tr[data-dc="{origin}"] td.copies').replace(",", "")
    return int(cell) if cell.isdigit() else -1


# -- the tests (in order: they share the pool and the browser) ---------------------------------


def test_page_refuses_without_the_token_and_works_with_it(pool: Pool, browser: WebDriver) -> None:
    a = pool.daemons["dc-a"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{a.admin}/v1/sync/stream", timeout=5)
    assert refused.value.code == 401
    refused.value.close()
    browser.get(f"http://{a.admin}/ui/")
    wait_for(browser, lambda d: d.find_element(By.ID, "auth").is_displayed(), 15, "token form")
    assert "needs its token" in text(browser, "#auth-message")
    assert not browser.find_element(By.ID, "main").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "#pool tr[data-member]")
    shot(browser, "01-refused-without-token")
    browser.find_element(By.ID, "auth-token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "#auth-form button").click()
    wait_for(browser, lambda d: "refused" in text(d, "#auth-message"), 15, "the refusal")
    open_page(browser, a)
    shot(browser, "02-with-token")


def test_page_lists_members_and_links(pool: Pool, browser: WebDriver) -> None:
    open_page(browser, pool.daemons["dc-a"])
    for daemon in pool.daemons.values():
        row = f'#pool tr[data-member="{daemon.name}"][data-status="alive"]'
        wait_for(browser, lambda d, r=row: d.find_elements(By.CSS_SELECTOR, r), 20, daemon.name)
    for dc in ("dc-b", "dc-c"):
        state = f'#links tr[data-dc="{dc}"] .state-streaming'
        wait_for(browser, lambda d, s=state: d.find_elements(By.CSS_SELECTOR, s), 20, dc)
    assert "exporter" in text(browser, '#pool tr[data-member="n-dc-b"]')
    wait_for(browser, lambda d: "initial sync from dc-b" in text(d, "#progress"), 20, "progress")
    wait_for(browser, lambda d: "no alarms" in text(d, "#alarms"), 20, "no alarms")
    shot(browser, "03-members-and-links")


def test_a_registration_changes_the_copy_count_on_another_page(
    pool: Pool, browser: WebDriver
) -> None:
    open_page(browser, pool.daemons["dc-b"])
    before = wait_for(browser, lambda d: copies_of(d, "dc-a") + 1, 20, "copies") - 1
    browser.execute_script("window.notReloaded = true")
    registry = pool.registries["dc-a"]
    sid = registry.create_service("shop", "cart")
    registry.register(sid, "cart-1", ["rest://10.0.0.1:8080"])
    wait_for(browser, lambda d: copies_of(d, "dc-a") == before + 1, 30, "one more copy")
    assert browser.execute_script("return window.notReloaded === true")
    shot(browser, "04-copy-count-changed")


def test_the_diff_view_shows_a_deleted_copy_until_the_repair(
    pool: Pool, browser: WebDriver
) -> None:
    a, b = pool.registries["dc-a"], pool.registries["dc-b"]
    sid = a.create_service("shop", "diffsvc")
    origin_id = a.register(sid, "diff-1", ["rest://10.0.0.2:8080"])

    def copy_in_b() -> dict[str, Any] | None:
        for copy in b.copies():
            if copy["properties"].get("pysyncer.origin.id") == origin_id:
                return copy
        return None

    eventually(lambda: copy_in_b() is not None, 30, "the copy in dc-b")
    open_page(browser, pool.daemons["dc-c"])
    browser.find_element(By.ID, "diff-service").send_keys("diffsvc")
    missing = '#diff-discrepancies li[data-kind="copy_missing"]'
    for _attempt in range(3):  # a renewal round may find the loss first and repair it
        copy = copy_in_b()
        if copy is not None:
            b.unregister(copy["_sid"], copy["instanceId"])
        browser.find_element(By.CSS_SELECTOR, "#diff-form button").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "diff-summary").get_attribute(
            "data-problems") is not None, 20, "a diff")  # fmt: skip
        if browser.find_elements(By.CSS_SELECTOR, missing):
            break
    assert "dc-b" in text(browser, missing) and "holds no copy" in text(browser, missing)
    assert browser.find_elements(By.CSS_SELECTOR, 'td.missing[data-registry="dc-b"]')
    shot(browser, "05-diff-copy-missing")
    api(pool.daemons["dc-b"], "/v1/sync/full", {})
    eventually(lambda: copy_in_b() is not None, 30, "the copy back in dc-b")

    def resolved(driver: WebDriver) -> bool:
        driver.find_element(By.CSS_SELECTOR, "#diff-form button").click()
        time.sleep(0.5)
        summary = driver.find_element(By.ID, "diff-summary")
        return summary.get_attribute("data-problems") == "0"

    wait_for(browser, resolved, 30, "the diff resolved")
    assert "no discrepancy" in text(browser, "#diff-summary")
    shot(browser, "06-diff-resolved")


def test_the_filter_dry_run_lists_the_services(pool: Pool, browser: WebDriver) -> None:
    registry = pool.registries["dc-a"]
    registry.register(registry.create_service("shop", "drysvc"), "dry-1", ["rest://10.0.0.5:80"])
    open_page(browser, pool.daemons["dc-a"])
    browser.find_element(By.CSS_SELECTOR, "#dryrun-form button").click()
    wait_for(browser, lambda d: "drysvc" in text(d, "#dryrun"), 20, "the dry run")
    assert "no export rules: everything passes" in text(browser, "#dryrun")
    shot(browser, "07-filter-dry-run")


def cli(daemon: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    token_file = daemon.workdir / "admin.token"
    command = [sys.executable, "-m", "pysyncer", *args, "--admin-addr", daemon.admin,
               "--admin-token-file", str(token_file)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def copies_of_service(registry: RegistryClient, name: str) -> bool:
    return any(copy["_service"].split("/")[1] == name for copy in registry.copies())


def test_the_command_line_diff_dry_run_and_watch(pool: Pool) -> None:
    a = pool.daemons["dc-a"]
    registry = pool.registries["dc-a"]
    registry.register(registry.create_service("shop", "clisvc"), "cli-1", ["rest://10.0.0.4:80"])
    for dc in ("dc-b", "dc-c"):
        held = functools.partial(copies_of_service, pool.registries[dc], "clisvc")
        eventually(held, 30, f"the copy in {dc}")
    done = cli(a, "diff", "--service", "clisvc", "--format", "json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert sorted(answer["registries"]) == ["dc-a", "dc-b", "dc-c"]
    assert {i["registry"] for i in answer["instances"]} == {"dc-a", "dc-b", "dc-c"}
    text = cli(a, "diff", "--service", "clisvc")
    assert text.returncode == 0 and "no discrepancy" in text.stdout, text.stdout
    run = cli(a, "filters", "--dry-run")
    assert run.returncode == 0 and "no export rules: everything passes" in run.stdout
    assert "shop/clisvc" in run.stdout
    command = [sys.executable, "-m", "pysyncer", "status", "--watch", "--format", "json",
               "--interval", "0.2", "--admin-addr", a.admin,
               "--admin-token-file", str(a.workdir / "admin.token")]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as watch:
        try:
            assert watch.stdout is not None
            updates = [json.loads(watch.stdout.readline()) for _ in range(3)]
        finally:
            watch.terminate()
            watch.wait(10)
    assert all(u["dc"] == "dc-a" and set(u["remote"]) == {"dc-b", "dc-c"} for u in updates)
    assert updates[0]["remote"]["dc-b"]["progress"]["kind"] == "initial"


class LargePool(InMemoryBackend):
    """A pool of 300 members in 12 data centers, one member of which the test fails."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = ""

    def members(self) -> Sequence[Member]:
        return [
            {
                "name": f"n{i:03d}", "addr": f"10.0.{i // 250}.{i % 250}", "port": 7946,
                "status": "failed" if f"n{i:03d}" == self.failed else "alive",
                "tags": {"role": "pysyncer", "dc": f"dc-{i % 12:02d}", "version": "0.1.0"},
            }
            for i in range(300)
        ]  # fmt: skip

    def sync_status(self) -> SyncStatus:
        links = {f"dc-{d:02d}": PeerStatus(f"dc-{d:02d}", state="streaming") for d in range(1, 12)}
        copies = {dc: 1000 * n for n, dc in enumerate(links, 1)}
        return cast(
            SyncStatus, {"dc": "dc-00", "node": "n000", "remote": remote_links(links, copies)}
        )

    def full_sync(self) -> list[str]:
        return []


def test_a_pool_of_300_members_and_12_data_centers(browser: WebDriver) -> None:
    backend = LargePool()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(backend, CollectorRegistry(), sync=backend))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{port}/ui/")
        rows = "#pool tr[data-member]"
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == 300, 20, "300")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#links tr[data-dc]")) == 11
        stats = browser.execute_script("return window.pysyncerStats")
        (ARTEFACTS / "large-pool.json").write_text(json.dumps(stats, indent=2))
        backend.failed = "n123"
        failed = '#pool tr[data-member="n123"][data-status="failed"]'
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, failed), 10, "n123 failed")
        shot(browser, "09-large-pool")
    finally:
        began = time.monotonic()  # the page still streams: the server ends its stream
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        assert time.monotonic() - began < 5
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_stopped_syncer_shows_failed(pool: Pool, browser: WebDriver) -> None:
    open_page(browser, pool.daemons["dc-a"])
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#pool tr[data-member]"), 20,
             "members")  # fmt: skip
    time.sleep(3)  # a few deltas for the measurements
    stats = browser.execute_script("return window.pysyncerStats")
    (ARTEFACTS / "measurements.json").write_text(json.dumps(stats, indent=2))
    pool.daemons["dc-c"].kill()  # a crash: it does not leave, the pool finds it failed
    row = '#pool tr[data-member="n-dc-c"][data-status="failed"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, row), 60, "n-dc-c failed")
    wait_for(browser, lambda d: "failed: n-dc-c" in text(d, "#alarms"), 20, "the alarm")
    shot(browser, "08-syncer-failed")
