#!/usr/bin/env bash
# On a machine with a CUDA GPU and its own torch (e.g. the lent H100/H200 image:
# Python 3.12, torch 2.11 + CUDA 13, Triton 3.6, no network), in one call:
#   1. build maven_fast against that torch (no build isolation, no deps),
#      keeping the CUDA compiler's resource report (registers, smem, spills);
#   2. run the GPU tests (pytest -m gpu) and a compute-sanitizer memcheck pass;
#   3. run the whole benchmark (`maven-fast bench --device cuda`: polar head,
#      cross-modal block, training step, accuracy next to speed, SPEC 6 GPU
#      targets) into the same folder;
# and write everything under one folder (default bench/results/gpu-<date>).
#
# Missing Python packages (scikit-build-core, pybind11, pytest, ...) can travel
# as wheels in .whl/ (see the device tool's README); they are installed first.
#
#   bash bench/gpu.sh [OUTDIR]          (BENCH_ARGS="--quick" for a shorter benchmark)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTDIR="${1:-bench/results/gpu-$(date +%F)}"
PY="${PYTHON:-python3}"
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $*"; }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  step "installing carried wheels"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi

step "machine"
{ nvidia-smi; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
  2>&1 | tee "$OUTDIR/machine.txt"

step "build (resource report in build.log)"
if ! MAVEN_FAST_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps -v -e . > "$OUTDIR/build.log" 2>&1; then
  echo "BUILD FAILED: see $OUTDIR/build.log"; tail -40 "$OUTDIR/build.log"; exit 1
fi
grep -E "ptxas info|spill|Used [0-9]+ registers" "$OUTDIR/build.log" > "$OUTDIR/ptxas-resources.txt" || true
"$PY" -c "import json, maven_fast; print(json.dumps(maven_fast.build_info(), indent=2))" | tee "$OUTDIR/build_info.json"

step "GPU tests"
"$PY" -m pytest -q -m gpu tests 2>&1 | tee "$OUTDIR/gpu-tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

if command -v compute-sanitizer >/dev/null 2>&1; then
  step "compute-sanitizer memcheck (GPU tests without torch.compile)"
  compute-sanitizer --tool memcheck --error-exitcode 7 "$PY" -m pytest -q -m gpu -k "not compile" tests \
    > "$OUTDIR/sanitizer.log" 2>&1
  rc=$?; tail -5 "$OUTDIR/sanitizer.log"; [ $rc -eq 0 ] || { echo "compute-sanitizer: exit $rc"; status=1; }
fi

step "benchmark (maven-fast bench --device cuda ${BENCH_ARGS:-})"
"$PY" -m maven_fast bench --device cuda --out "$OUTDIR" ${BENCH_ARGS:-} 2>&1 | tee "$OUTDIR/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "done: everything is under $OUTDIR (exit $status)"
exit $status
