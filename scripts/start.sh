#!/usr/bin/env bash
# Start Plexus (server + editor on http://127.0.0.1:8188). Extra arguments go to main.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec "$PLEXUS_PYTHON" main.py "$@"
