#!/usr/bin/env bash
# ComfyUI's own execution suite (tests/execution of a ComfyUI checkout, with its testing_nodes pack) run
# against Plexus servers: only the server start is swapped (tests/comfyui_suite/plexus_adapter.py), the
# test bodies are ComfyUI's. Nothing is written into the checkout (no bytecode, no pytest cache, outputs
# and server base directories in temporary folders).
#
#   scripts/comfyui_execution_suite.sh /path/to/ComfyUI [--port N] [pytest args...]
#
# Without a path, $PLEXUS_COMFYUI_DIR is used; with neither, a ComfyUI checkout at the pinned reference
# commit is cloned into a temporary folder (needs git and network).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMFYUI_COMMIT="a125cd84"      # ComfyUI v0.3.64, the reference peer
comfy="${1:-${PLEXUS_COMFYUI_DIR:-}}"
[ $# -gt 0 ] && shift
if [ -z "$comfy" ]; then
  comfy="$(mktemp -d)/ComfyUI"
  git clone -q https://github.com/comfyanonymous/ComfyUI "$comfy"
  git -C "$comfy" checkout -q "$COMFYUI_COMMIT"
fi
PY="${PLEXUS_PYTHON:-$ROOT/.venv/bin/python}"
out="$(mktemp -d)"
port_args=(--port 8189)
for arg in "$@"; do [ "$arg" = "--port" ] && port_args=(); done
cd "$comfy"
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$ROOT/tests/comfyui_suite" \
  "$PY" -m pytest tests/execution -p plexus_adapter -p no:cacheprovider --output_dir "$out" \
  "${port_args[@]}" -q -rf "$@"
