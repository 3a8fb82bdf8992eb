#!/usr/bin/env bash
# The README's test command: set up (if needed) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k polar_head -x`.
# `bash scripts/test.sh --stack oldest [pytest args]` does the same on the oldest
# supported stack (requirements/oldest.txt, .venv-oldest/; see scripts/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--stack" ]; then export MAVEN_FAST_STACK="${2:?--stack needs a name: pinned or oldest}"; shift 2; fi
PYBIN="$(bash "$ROOT/scripts/setup.sh")"
# A test builds a wheel with pip: it must use this stack's build folder.
SKBUILD_BUILD_DIR="$(cat "$(dirname "$(dirname "$PYBIN")")/.skbuild-build-dir" 2>/dev/null || true)"
if [ -n "$SKBUILD_BUILD_DIR" ]; then export SKBUILD_BUILD_DIR; else unset SKBUILD_BUILD_DIR; fi
cd "$ROOT"
exec "$PYBIN" -m pytest -q "$@"
