#!/usr/bin/env bash
# Set up the benchmark peer: ComfyUI v0.3.64 (a125cd84) exported from a bare git mirror, in its own venv.
# Usage: bash bench/setup_peer.sh MIRROR_GIT_DIR [PEER_ROOT]   (PEER_ROOT defaults to ../peer)
# The export goes blob by blob, because `git archive` stops at the first blob a partial mirror lacks;
# missing blobs (large binary assets the benchmarks never read) are listed and skipped.
# The bench scripts find the peer at PEER_ROOT/ComfyUI and its venv at PEER_ROOT/venv.
set -euo pipefail
MIRROR="${1:?usage: setup_peer.sh MIRROR_GIT_DIR [PEER_ROOT]}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEER="${2:-$ROOT/../peer}"
COMMIT=a125cd84
mkdir -p "$PEER/ComfyUI"
PEER="$(cd "$PEER" && pwd)"
missing=0
while IFS=$'\t' read -r meta path; do
  read -r mode type sha <<<"$meta"
  [ "$type" = blob ] || continue
  mkdir -p "$PEER/ComfyUI/$(dirname "$path")"
  if ! git --git-dir="$MIRROR" cat-file blob "$sha" >"$PEER/ComfyUI/$path" 2>/dev/null; then
    rm -f "$PEER/ComfyUI/$path"; echo "peer: blob missing, skipped: $path" >&2; missing=$((missing + 1))
  fi
  [ "$mode" = 100755 ] && chmod +x "$PEER/ComfyUI/$path"
done < <(git --git-dir="$MIRROR" ls-tree -r "$COMMIT")
echo "peer: exported ComfyUI $COMMIT to $PEER/ComfyUI ($missing blobs missing)" >&2
if [ ! -x "$PEER/venv/bin/python" ]; then
  python3 -m venv "$PEER/venv"
fi
# ComfyUI's own requirements, with the torch pair the benchmarks were measured on.
"$PEER/venv/bin/python" -m pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1
grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ]|$)' "$PEER/ComfyUI/requirements.txt" >"$PEER/requirements-peer.txt"
# requests: ComfyUI's frontend manager imports it, but its requirements.txt leaves it to transformers' old deps
"$PEER/venv/bin/python" -m pip install --disable-pip-version-check -q -r "$PEER/requirements-peer.txt" requests
"$PEER/venv/bin/python" "$PEER/ComfyUI/main.py" --cpu --quick-test-for-ci >/dev/null
echo "peer: venv ready at $PEER/venv" >&2
