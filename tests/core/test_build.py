"""setup.py honours PYSYNCER_NO_EXTENSIONS and fails in one line without a C compiler; the
sdist holds the Cython sources, LICENSE and the whole test suite, never generated C, and its
tests run from the unpacked tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.gossip import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def copy_source_tree(dest: Path) -> Path:
    """A clean copy of the sources, free of build products that could leak into a wheel."""
    tree = dest / "src"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.so", "*.c", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    return tree


def test_pure_wheel_compiles_nothing(tmp_path: Path) -> None:
    tree = copy_source_tree(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(tree),
        ],
        env={**os.environ, "PYSYNCER_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("pysyncer-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "pysyncer/py.typed" in names
    assert "pysyncer/_core/_slots_py.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c", ".pyx"))]


def test_build_without_compiler_fails_in_one_line(tmp_path: Path) -> None:
    tree = copy_source_tree(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-temp",
            str(tmp_path / "t"),
            "--build-lib",
            str(tmp_path / "l"),
        ],
        cwd=tree,
        env={**os.environ, "CC": str(tmp_path / "no-such-cc"), "PYSYNCER_NO_EXTENSIONS": ""},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("pysyncer: cannot compile the Cython core"), out.stderr
    assert "PYSYNCER_NO_EXTENSIONS=1" in last_line


# Directories shipped whole in the sdist (MANIFEST.in), and files at the top of the tree.
# Any other top-level package the tests import must ship whole too (_packages_tests_import).
SHIPPED_TREES = ("tests", "docs", "benchmarks", "ci")
SHIPPED_FILES = ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "setup.py")
BUILD_PRODUCTS = (".c", ".html", ".so")


def build_sdist(tree: Path, outdir: Path) -> Path:
    """The sdist of ``tree``, made by the setuptools backend as pip or build would."""
    code = (
        "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(outdir)],
        cwd=tree,
        env={**os.environ, "PYSYNCER_NO_EXTENSIONS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return outdir / out.stdout.strip().splitlines()[-1]


def _packages_tests_import(tree: Path) -> set[str]:
    """Top-level packages of the tree, other than pysyncer, that some test imports."""
    packages = {p.parent.name for p in tree.glob("*/__init__.py")} - {"pysyncer", "tests"}
    imported = set()
    for test in (tree / "tests").rglob("*.py"):
        for line in test.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                imported.add(words[1].split(".")[0])
    return packages & imported


def source_files(tree: Path, top: str) -> set[str]:
    return {
        path.relative_to(tree).as_posix()
        for path in (tree / top).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(source tree with stray build products in it, its sdist)."""
    tmp_path = tmp_path_factory.mktemp("sdist")
    tree = copy_source_tree(tmp_path)
    for name in ("_slots_c.c", "_slots_c.html", "_slots_c.cpython-311-x86_64-linux-gnu.so"):
        (tree / "pysyncer" / "_core" / name).write_text("/* a build product */\n")
    return tree, build_sdist(tree, tmp_path / "dist")


def sdist_members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        prefix = archive.name.removesuffix(".tar.gz") + "/"
        return {m.name.removeprefix(prefix) for m in tar.getmembers() if m.isfile()}


def test_sdist_ships_sources_license_and_the_whole_test_suite(sdist: tuple[Path, Path]) -> None:
    tree, archive = sdist
    members = sdist_members(archive)
    pyx = {p.relative_to(tree).as_posix() for p in (tree / "pysyncer" / "_core").glob("*.pyx")}
    assert len(pyx) == 4, pyx
    assert pyx <= members
    for name in (*SHIPPED_FILES, "tests/conftest.py", "tests/support/__init__.py"):
        assert name in members, name
    imported = _packages_tests_import(tree)
    assert "lab" in imported  # the detection works on today's tree
    for top in (*SHIPPED_TREES, *sorted(imported)):
        missing = sorted(source_files(tree, top) - members)
        assert not missing, f"{top}/ files left out of the sdist: {missing[:10]}"
    assert any(m.startswith("tests/golden/") for m in members)


def test_sdist_holds_no_build_products(sdist: tuple[Path, Path]) -> None:
    _, archive = sdist
    products = sorted(m for m in sdist_members(archive) if m.endswith(BUILD_PRODUCTS))
    assert not products, products
    assert not [m for m in sdist_members(archive) if "__pycache__" in m]


def test_sdist_metadata_names_the_license(sdist: tuple[Path, Path]) -> None:
    _, archive = sdist
    with tarfile.open(archive) as tar:
        member = tar.extractfile(archive.name.removesuffix(".tar.gz") + "/PKG-INFO")
        assert member is not None
        headers = member.read().decode()
    assert "License-Expression: Apache-2.0" in headers.splitlines()
    assert "License-File: LICENSE" in headers.splitlines()


def test_tests_run_from_the_unpacked_sdist(sdist: tuple[Path, Path], tmp_path: Path) -> None:
    """The shipped suite finds its conftest and support code in the sdist alone (run on the
    pure-Python twins, since the unpacked tree has nothing compiled)."""
    _, archive = sdist
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    unpacked = tmp_path / archive.name.removesuffix(".tar.gz")
    env = {**os.environ, "PYSYNCER_NO_EXTENSIONS": "1", "PYTHONPATH": ""}
    where = subprocess.run(
        [sys.executable, "-c", "import pysyncer; print(pysyncer.__file__)"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip() == str(unpacked / "pysyncer" / "__init__.py"), where
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",
            "tests/core/test_core_dispatch.py",
            "tests/core/test_slots.py",
        ],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout.strip().splitlines()[-1]


def start_daemon_and_read_its_first_lines(tree: Path, workdir: Path, no_extensions: str) -> str:
    """Start ``pysyncer daemon`` from ``tree`` (nothing compiled in it), return its log once it
    has said which core it runs (or has exited), and stop it."""
    log_path = workdir / "daemon.log"
    ports = {flag: f"127.0.0.1:{free_port()}" for flag in DAEMON_ADDRESS_FLAGS}
    command = [sys.executable, "-m", "pysyncer", "daemon", "--node", "n1", "--dc", "dc1"]
    for flag, address in ports.items():
        command += [flag, address]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYSYNCER_NO_EXTENSIONS": no_extensions}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--data-dir", str(workdir / "data")],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not any(m in log_path.read_text() for m in CORE_LINES) and process.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    return log_path.read_text()


DAEMON_ADDRESS_FLAGS = ("--bind", "--admin-addr", "--rpc-addr", "--registry-addr")
CORE_LINES = ("compiled core not loaded", "core: pure-Python twins")


@pytest.fixture(scope="module")
def pure_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sources without any compiled module, as a pure-Python wheel installs them."""
    tree = copy_source_tree(tmp_path_factory.mktemp("pure"))
    assert not list((tree / "pysyncer" / "_core").glob("*.so"))
    return tree


def test_missing_compiled_core_is_a_warning_naming_the_module(
    pure_tree: Path, tmp_path: Path
) -> None:
    log = start_daemon_and_read_its_first_lines(pure_tree, tmp_path, no_extensions="")
    warnings = [line for line in log.splitlines() if " WARNING " in line and " core " in line]
    assert len(warnings) == 1, log
    assert "pysyncer._core._" in warnings[0] and "is not installed" in warnings[0], warnings
    assert "PYSYNCER_NO_EXTENSIONS=1" in warnings[0]
    assert "circular" not in log


def test_pure_core_on_purpose_is_info(pure_tree: Path, tmp_path: Path) -> None:
    log = start_daemon_and_read_its_first_lines(pure_tree, tmp_path, no_extensions="1")
    assert " INFO pysyncer.daemon: core: pure-Python twins (PYSYNCER_NO_EXTENSIONS=1 is set)" in log
    assert not [line for line in log.splitlines() if " WARNING " in line and " core " in line]
