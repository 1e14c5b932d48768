#!/usr/bin/env bash
# Run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh test
exec "$PLEXUS_PYTHON" -m pytest "$@"
