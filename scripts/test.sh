#!/usr/bin/env bash
# The README's test command: set up (if needed) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k polar_head -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYBIN="$(bash "$ROOT/scripts/setup.sh")"
cd "$ROOT"
exec "$PYBIN" -m pytest -q "$@"
