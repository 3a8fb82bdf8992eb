#!/usr/bin/env bash
# Set up (or refresh) the development environment; quick when nothing changed.
#
#   1. .venv with Python 3.11 (override: MAVEN_FAST_PYTHON=/path/to/python3.x)
#   2. the pinned packages of requirements/pinned.txt (torch 2.14.1 etc.)
#   3. an editable, no-build-isolation build of maven_fast and its extension
#
# Each step is skipped when its inputs are unchanged (hash stamps in .venv/).
# Environment knobs: MAVEN_FAST_VENV (venv path), MAVEN_FAST_CUDA=AUTO|ON|OFF,
# MAVEN_FAST_CUDA_ARCHS (default "80;90"), CUDA_HOME (toolkit root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAVEN_FAST_VENV:-$ROOT/.venv}"
log() { echo "[setup] $*" >&2; }

# ---------------------------------------------------------------- 1. venv
if [ ! -x "$VENV/bin/python" ]; then
  PY="${MAVEN_FAST_PYTHON:-}"
  if [ -z "$PY" ]; then
    for cand in python3.11 python3; do
      if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
    done
  fi
  [ -n "$PY" ] || { log "no python3 found; install Python 3.11 or set MAVEN_FAST_PYTHON"; exit 1; }
  log "creating $VENV with $("$PY" --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
PYBIN="$VENV/bin/python"

# pip on these machines warns about every mirror folder it skips; keep errors only.
quiet_pip() {
  "$PYBIN" -m pip --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
  return "${PIPESTATUS[0]}"
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- 2. packages
REQ="$ROOT/requirements/pinned.txt"
req_hash="$(hash_of "$REQ")"
if [ "$(cat "$VENV/.requirements-stamp" 2>/dev/null)" != "$req_hash" ]; then
  log "installing pinned packages (first time: a few minutes; torch 2.14.1 is large)"
  quiet_pip install -q -r "$REQ"
  echo "$req_hash" > "$VENV/.requirements-stamp"
fi

# ---------------------------------------------------------------- 3. build
# Find the real CUDA toolkit (nvcc on PATH may be a wrapper script): CMake needs
# its directory for the headers and libcudart.
find_cuda_root() {
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then echo "$CUDA_HOME"; return; fi
  for c in /usr/local/cuda $(ls -d /usr/local/cuda-* 2>/dev/null | sort -rV); do
    if [ -x "$c/bin/nvcc" ] && [ -f "$c/include/cuda_runtime_api.h" ]; then echo "$c"; return; fi
  done
  if command -v nvcc >/dev/null 2>&1; then
    local real
    real="$(grep -ao '/[^ "]*/bin/nvcc' "$(command -v nvcc)" 2>/dev/null | head -1 || true)"
    [ -n "$real" ] || real="$(readlink -f "$(command -v nvcc)")"
    dirname "$(dirname "$real")"
  fi
}
CMAKE_EXTRA=""
CUDA_ROOT="$(find_cuda_root || true)"
if [ -n "$CUDA_ROOT" ] && [ "${MAVEN_FAST_CUDA:-AUTO}" != "OFF" ]; then
  CMAKE_EXTRA="-DCMAKE_CUDA_COMPILER=$CUDA_ROOT/bin/nvcc -DCUDAToolkit_ROOT=$CUDA_ROOT"
fi

src_hash="$( (cd "$ROOT" && find CMakeLists.txt pyproject.toml cmake csrc -type f | sort | xargs cat;
              find maven_fast kernels -name '*.py' | sort;
              echo "${MAVEN_FAST_CUDA:-AUTO} ${MAVEN_FAST_CUDA_ARCHS:-80;90} ${MAVEN_FAST_BOUNDS_CHECKS:-OFF} $CUDA_ROOT") \
            | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.build-stamp" 2>/dev/null)" != "$src_hash" ]; then
  log "building maven_fast (CUDA toolkit: ${CUDA_ROOT:-none}; incremental after the first build)"
  CMAKE_ARGS="${CMAKE_ARGS:-} $CMAKE_EXTRA" \
    quiet_pip install -q --no-build-isolation --no-deps -e "$ROOT"
  echo "$src_hash" > "$VENV/.build-stamp"
fi
echo "$PYBIN"
