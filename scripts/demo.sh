#!/usr/bin/env bash
# The README's main command: set up (if needed) and run `maven-fast demo`,
# the end-to-end job on built-in synthetic data. Extra arguments go to the demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYBIN="$(bash "$ROOT/scripts/setup.sh")"
cd "$ROOT"
exec "$PYBIN" -m maven_fast demo "$@"
