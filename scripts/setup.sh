#!/usr/bin/env bash
# Set up (or refresh) the development environment; quick when nothing changed.
#
#   1. a venv with Python 3.11 (override: MAVEN_FAST_PYTHON=/path/to/python3.x)
#   2. the stack's pinned packages
#   3. an editable, no-build-isolation build of maven_fast and its extension
#
# `--packages-only` (after --stack, if any) stops after step 2: .ci/run installs the
# oldest stack's packages in the background while the pinned leg builds and tests.
#
# Two stacks (MAVEN_FAST_STACK, or `--stack NAME` as the first arguments):
#   pinned (default)  requirements/pinned.txt (torch 2.14.1 etc.), .venv/, build/{wheel_tag}
#   oldest            the oldest supported torch: requirements/oldest.txt (torch 2.11.0,
#                     triton 3.6.0, ...) in place of pinned.txt's torch lines,
#                     .venv-oldest/, build/oldest/{wheel_tag}
# Each stack has its own venv and its own CMake build folder (both stacks have the
# same wheel tag), so switching between them never rebuilds the other.
#
# Each step is skipped when its inputs are unchanged (hash stamps in the venv).
# Environment knobs: MAVEN_FAST_STACK, MAVEN_FAST_VENV (venv path),
# MAVEN_FAST_CUDA=AUTO|ON|OFF, MAVEN_FAST_CUDA_ARCHS (default "80;90"),
# CUDA_HOME (toolkit root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--stack" ]; then MAVEN_FAST_STACK="${2:?--stack needs a name: pinned or oldest}"; shift 2; fi
PACKAGES_ONLY=0
if [ "${1:-}" = "--packages-only" ]; then PACKAGES_ONLY=1; shift; fi
[ $# -eq 0 ] || { echo "[setup] unknown argument '$1' (usage: setup.sh [--stack pinned|oldest] [--packages-only])" >&2; exit 2; }
STACK="${MAVEN_FAST_STACK:-pinned}"
log() { echo "[setup] $*" >&2; }
case "$STACK" in
  pinned) VENV="${MAVEN_FAST_VENV:-$ROOT/.venv}" ;;
  oldest) VENV="${MAVEN_FAST_VENV:-$ROOT/.venv-oldest}"
          # scikit-build-core reads SKBUILD_BUILD_DIR over pyproject's build-dir.
          export SKBUILD_BUILD_DIR="${SKBUILD_BUILD_DIR:-build/oldest/{wheel_tag}}" ;;
  *) log "unknown stack '$STACK' (MAVEN_FAST_STACK / --stack): pinned or oldest"; exit 2 ;;
esac

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
# The oldest stack installs pinned.txt with oldest.txt's lines in place of the
# lines that pin the same packages (one list to maintain; the merged file is
# written to the venv).
REQ="$ROOT/requirements/pinned.txt"
REQ_FILES=("$REQ")
if [ "$STACK" = oldest ]; then
  REQ_FILES+=("$ROOT/requirements/oldest.txt")
  REQ="$VENV/requirements-oldest.txt"
  awk 'function name(l) { sub(/[ \t]*#.*/, "", l); sub(/[ \t<>=!~;\[].*/, "", l); return tolower(l) }
       FNR == NR { if (name($0) != "") over[name($0)] = 1; print; next }
       !/^[ \t]*#/ && !(name($0) in over)' "$ROOT/requirements/oldest.txt" "$ROOT/requirements/pinned.txt" > "$REQ"
fi
req_hash="$(hash_of "${REQ_FILES[@]}")"
if [ "$(cat "$VENV/.requirements-stamp" 2>/dev/null)" != "$req_hash" ]; then
  log "installing the $STACK stack's packages (first time: a few minutes; torch is large)"
  quiet_pip install -q -r "$REQ"
  echo "$req_hash" > "$VENV/.requirements-stamp"
fi
if [ "$PACKAGES_ONLY" = 1 ]; then log "$STACK stack's packages installed in $VENV (--packages-only: no build)"; exit 0; fi

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
              echo "${MAVEN_FAST_CUDA:-AUTO} ${MAVEN_FAST_CUDA_ARCHS:-80;90} ${MAVEN_FAST_BOUNDS_CHECKS:-OFF} $CUDA_ROOT ${SKBUILD_BUILD_DIR:-}") \
            | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.build-stamp" 2>/dev/null)" != "$src_hash" ]; then
  log "building maven_fast (CUDA toolkit: ${CUDA_ROOT:-none}; incremental after the first build)"
  CMAKE_ARGS="${CMAKE_ARGS:-} $CMAKE_EXTRA" \
    quiet_pip install -q --no-build-isolation --no-deps -e "$ROOT"
  echo "$src_hash" > "$VENV/.build-stamp"
fi
# Where this venv's build lives (scripts/test.sh exports it for the tests that build a wheel).
echo "${SKBUILD_BUILD_DIR:-}" > "$VENV/.skbuild-build-dir"
echo "$PYBIN"
