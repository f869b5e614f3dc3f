#!/usr/bin/env bash
# Lint and type-check everything: ruff (lint + format check), mypy (strict), cython-lint.
# Usage: ci/lint.sh            (tools from the venv that PYTHON, default .venv/bin/python, lives in)
#        ci/lint.sh --fix      (apply ruff's fixes and formatting first)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
export PATH="$BIN:$PATH"  # cython-lint runs pycodestyle from PATH
status=0

if [[ "${1:-}" == "--fix" ]]; then
    "$PYTHON" -m ruff check --fix --quiet . || true
    "$PYTHON" -m ruff format --quiet .
fi

step() {
    local name=$1
    shift
    if "$@"; then
        echo "lint: $name ok"
    else
        echo "lint: $name FAILED" >&2
        status=1
    fi
}

step "ruff check" "$PYTHON" -m ruff check --quiet .
step "ruff format" "$PYTHON" -m ruff format --check --quiet .
step "mypy" "$PYTHON" -m mypy --no-error-summary
step "cython-lint" "$BIN/cython-lint" pysyncer/_core/*.pyx
exit $status
