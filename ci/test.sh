#!/usr/bin/env bash
# The test command of the README, and what .ci/run calls.
#
# On a fresh Debian machine it:
#   1. installs the Debian packages the tests need when they are missing (as root),
#   2. creates a venv (.venv, or $PYSYNCER_VENV) and installs pysyncer with its test extras,
#      compiling the Cython core,
#   3. runs the whole suite twice: on the compiled core, then with PYSYNCER_NO_EXTENSIONS=1
#      on the pure-Python twins. Lint and type checks are part of the suite.
#   4. runs ci/wheels.sh (builds the sdist and wheels, installs each, smoke test; about
#      2-3 minutes), unless PYSYNCER_SKIP_WHEELS=1 or pytest arguments are given.
# Extra arguments go to pytest (e.g. ci/test.sh -k slots -x).
set -euo pipefail
cd "$(dirname "$0")/.."

# program (name on PATH, or absolute path) -> Debian package, for the real servers the tests start on loopback.
DEBIAN_PACKAGES=(
    "redis-server:redis-server"
    "serf:serf"
    "etcd:etcd-server"
    "/usr/share/zookeeper/bin/zkServer.sh:zookeeper"
    "iptables-legacy:iptables"
    "chromium:chromium"
    "chromedriver:chromium-driver"
)

log() { printf '== %s\n' "$*"; }

install_debian_packages() {
    local missing=() entry program package
    for entry in "${DEBIAN_PACKAGES[@]}"; do
        program=${entry%%:*}
        package=${entry#*:}
        if [[ $program == /* ]]; then
            [[ -x $program ]] || missing+=("$package")
        elif ! command -v "$program" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$program" ]]; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        log "missing Debian packages (not root, not installing): ${missing[*]}"
        log "tests that need them skip here, and fail under CI=true"
        return
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts packaged services; the tests start their own servers on other ports.
    for package in "${missing[@]}"; do
        systemctl stop "$package" >/dev/null 2>&1 || service "$package" stop >/dev/null 2>&1 || true
    done
}

setup_venv() {
    local venv=${PYSYNCER_VENV:-.venv}
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating venv $venv"
        python3 -m venv "$venv"
    fi
    PYTHON="$venv/bin/python"
    log "installing pysyncer[test] (compiles the Cython core)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]"
}

run_suite() {
    local label=$1
    shift
    log "test suite: $label"
    if "$@"; then
        results+=("$label: passed")
    else
        results+=("$label: FAILED")
        failed=1
    fi
}

install_debian_packages
setup_venv
export PYTHON

# Most tests wait on sockets and subprocesses, not the CPU: run several per core
# (pytest-xdist; PYSYNCER_TEST_WORKERS=0 runs them in one process).
WORKERS=${PYSYNCER_TEST_WORKERS:-4}

failed=0
results=()
run_suite "compiled core" env PYSYNCER_NO_EXTENSIONS= "$PYTHON" -m pytest -n "$WORKERS" "$@"
run_suite "pure-Python twins" env PYSYNCER_NO_EXTENSIONS=1 "$PYTHON" -m pytest -n "$WORKERS" "$@"

# The release artefacts (sdist, manylinux wheel, pure wheel) built, installed offline into
# fresh venvs and smoke-tested by ci/wheels.sh. Only on a full run: skipped when arguments
# select tests, or with PYSYNCER_SKIP_WHEELS=1.
if [[ ${PYSYNCER_SKIP_WHEELS:-} == 1 ]] || (($# > 0)); then
    results+=("wheels: skipped")
else
    run_suite "wheels" ci/wheels.sh
fi

log "summary"
printf '   %s\n' "${results[@]}"
exit $failed
