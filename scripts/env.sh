#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install what is needed.
# Usage: source scripts/env.sh [test]   (with "test", the test-only dependencies too)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PLEXUS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "plexus: creating virtual environment in $VENV" >&2
  "$PY" -m venv "$VENV"
fi
want="$ROOT/requirements.txt"
nodeps=""
if [ "${1:-}" = "test" ]; then
  want="$want $ROOT/requirements-test.txt"
  nodeps="$ROOT/requirements-test-nodeps.txt"
fi
stamp="$VENV/.plexus-installed-$(cat $want $nodeps | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "plexus: installing dependencies (torch 2.13.0 CPU build; see README for CUDA)" >&2
  args=()
  for f in $want; do args+=(-r "$f"); done
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${args[@]}"
  if [ -n "$nodeps" ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -r "$nodeps"
  fi
  touch "$stamp"
fi
export PLEXUS_PYTHON="$VENV/bin/python"
