#!/usr/bin/env bash
# bench/gpu.sh: everything maven_fast needs from a lent GPU, in ONE device call
# of at most 8 minutes (the lent H200 image: Python 3.12, torch 2.11 + CUDA 13,
# Triton 3.6, nvcc 13.0, 16 cores, no network; only $OUT comes back).
#
#   bash bench/gpu.sh [--full] [OUTDIR]      on the GPU machine
#   bash bench/gpu.sh --dry-run [--full]     on any CPU machine (CI): checks the logic
#
# With the device tool: run with command `bash bench/gpu.sh` (timeout_s 600);
# results come back from $OUT. Without $OUT they go to OUTDIR (default
# bench/results/gpu-<date>). Either way the folder receives exactly these files
# (at most 8, names [A-Za-z0-9._-], no sub-folders, checked before exit):
#   report.md           step table (status, seconds, limit), test / sanitizer /
#                       benchmark summaries, which steps were cut
#   results.tar.gz      results/: every step's log (machine, build, tests, memcheck,
#                       racecheck, bench .log), build_info.json, ptxas-resources.txt
#                       and .md, tests.junit.xml, gpu_select-*.txt (selection counts),
#                       sanitizer-probe.cu, bench-suites.tsv, bench/<suite>/*.md|csv|png,
#                       timeline.tsv, report.md
#   timeline.tsv        step, start, end, seconds, base budget, limit, status, rc
#   ptxas-resources.md  registers / shared memory / spills per CUDA kernel (build)
#   bench.md            the benchmark reports (maven-fast bench --quick --device cuda)
# A file a step could not produce holds one line saying why.
#
# Steps, in order. Each runs under `timeout` with a hard limit = its base budget
# plus the seconds the steps before it left unused (so the total never exceeds
# the sum of the budgets, 470 s); a step that reaches its limit is cut (its
# process group killed), reported as `cut`, and the next step still runs. Only a
# failed or cut build stops the run (nothing can run without it): the report is
# written all the same. GPU_SH_BUDGET_<step>=N sets one step's limit to exactly N s.
#
#   step       budget  ESTIMATED on the H200 (no GPU has run this yet: estimates, reasoning below)
#   machine      20 s   ~5-10 s: nvidia-smi, python -c "import torch, triton", nvcc/sanitizer --version
#   build       150 s   ~45-70 s. Measured on the 2-core build box: the last full build
#                       (ninja log, 2 jobs, archs 80;90) ran 22 compile jobs in 149 s,
#                       ~400 s of job time under contention; compiled alone, one core:
#                       cross_modal_attention_kernel.cu 12.5 s for sm_90 only (32 s for
#                       80+90), cross_modal_cuda.cpp 12.9 s, polar_head_cuda.cpp 12.2 s
#                       (torch headers), LTO link 5.7 s. With 16 jobs and sm_90 only the
#                       compile is ~15-25 s (its longest job, or the total over 16),
#                       plus the link, CMake configure (not measured: ~10-20 s) and pip
#                       (~5-10 s). A failed build stops the run, hence the wide budget;
#                       what it leaves unused passes to the steps after it
#   tests       140 s   ~60-110 s: the default pass is ~120 tests (235 with --full);
#                       the CUDA op tests take milliseconds each, the cost is Triton's
#                       cold JIT: ~170 compiles (3 autotuned attention kernels x 3
#                       configs per key, ~15 keys of dtype x head size x length class,
#                       plus combine, dropout and polar-head kernels) at ~1.5-3 s each,
#                       spread over 8 pytest-xdist workers, plus ~4 torch.compile tests
#                       (cold Inductor, ~15-30 s each, in parallel)
#   memcheck     50 s   ~40-70 s: nvcc probe ~5 s, then ~45 CUDA op tests at their
#                       smallest shapes under compute-sanitizer (only maven_fast's
#                       kernels instrumented): ~15 s start-up, ~0.5-1 s per test
#   racecheck    50 s   ~40-70 s: the same tests under racecheck
#   bench        60 s   ~100-200 s: `maven-fast bench --quick --device cuda` per suite;
#                       dominated by cold torch.compile / reduce-overhead variants of
#                       the polar head and the cross-modal block; it runs one suite per
#                       process (cross_modal first), so a cut keeps the finished suites;
#                       it usually inherits 50-100 s left over by the build and machine steps
#   report        -     ~1 s (not timed out: it must always run)
#
# Which GPU tests run (pytest markers, no test file edited):
#   default  -m "gpu and not slow", thinned by bench/plugins/gpu_select.py
#            (GPU_SELECT=matter): every GPU test function; of a parametrized one,
#            each combination of its mode parameters (backend, dtype, pathway,
#            preset: strings, booleans, dtypes) at its smallest and largest size
#            parameters (numbers, shapes). Unparametrized tests (graph capture,
#            determinism, opcheck, reduce-overhead ...) always run.
#   --full   -m gpu, every GPU test (GPU_SELECT=all); a GPU test also marked
#            `slow` runs only here.
#   sanitize -m "gpu and not slow", GPU_SELECT=sanitize: the CUDA op tests
#            (test_*cuda*.py, or backend == "cuda" outside the model tests) without
#            torch.compile / Triton / large cases, at their smallest shape.
#
# compute-sanitizer: each pass first runs a 10-line probe (nvcc-built) with a
# planted out-of-bounds write (memcheck) or shared-memory race (racecheck); the
# tool must flag it, else the pass is reported `refused` (e.g. gVisor machines:
# "Device not supported") and the script moves on. The pass itself runs with
# PYTORCH_NO_CUDA_MEMORY_CACHING=1 and --kernel-name kns=maven_fast.
#
# --dry-run: every step runs its logic with each command replaced by a check that
# it exists and accepts what it is given (python modules import, files exist,
# the CLI's own parser accepts each `maven_fast bench` command line, each pytest selection collects
# > 0 tests with --collect-only, nvcc builds the probe when nvcc is there,
# nvidia-smi / compute-sanitizer presence only reported), writes simulated
# outputs, and produces the same files. GPU_SH_DRY_OVERRUN=<step> makes that
# step overrun a 2 s limit: it must be cut (the run fails if it is not; a cut
# there is expected and does not fail it) and the later steps must run.
# Exit status: 0 all steps ok (or skipped / refused), 1 a step failed or was cut,
# 2 the build failed (stopped), 64 bad usage. A real run also fails a GPU step
# when the machine step found no CUDA device, and the tests step when every
# selected test was skipped.
#
# Environment: PYTHON (default python3), OUT, MAVEN_FAST_CUDA_ARCHS (default: the
# GPU's own arch, else 80;90), GPU_SH_WORKERS (xdist workers for the tests step,
# default min(8, cores/2); 0 = serial), GPU_SH_BUDGET_<step>, GPU_SH_DRY_OVERRUN.
# Missing Python packages can travel as wheels in .whl/ (device tool README);
# they are installed into a scratch folder first.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/bench/gpu.sh"
cd "$ROOT" || exit 1

STEPS=(machine build tests memcheck racecheck bench)
declare -A BUDGET=([machine]=20 [build]=150 [tests]=140 [memcheck]=50 [racecheck]=50 [bench]=60)
KEY_FILES=(report.md results.tar.gz timeline.tsv ptxas-resources.md bench.md)

PY="${PYTHON:-python3}"
NPROC="$(nproc 2>/dev/null || echo 1)"

# --------------------------------------------------------------------------- helpers
now_ms() { date +%s%3N; }
secs() { local ms=$1; printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }
note() { echo "$*" >> "$LOGS/$STEP.note"; }   # one line for the report's note column
have() { command -v "$1" >/dev/null 2>&1; }
pymod() { "$PY" -c "import $1" >/dev/null 2>&1; }

# A CUDA tool on PATH, else in the usual toolkit folders.
find_tool() {
  local t=$1 d
  if have "$t"; then command -v "$t"; return 0; fi
  for d in "${CUDA_HOME:-/nonexistent}/bin" /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer \
           $(ls -d /usr/local/cuda-*/bin /opt/nvidia/*/bin 2>/dev/null); do
    if [ -x "$d/$t" ]; then echo "$d/$t"; return 0; fi
  done
  return 1
}

# The test files that can hold GPU tests: those that mention the marker (mark.gpu)
# or whose name says cuda / gpu / triton / graph; collecting only these skips
# importing the rest of the suite (transformers etc.).
gpu_test_files() {
  { grep -lE 'mark\.gpu' tests/test_*.py; ls tests/test_*.py | grep -E 'cuda|gpu|triton|graph'; } 2>/dev/null \
    | grep -v emulat | sort -u
}

# The pytest command of a selection (default | full | sanitize): PYENV (its
# environment, as an `env` prefix) and PYTEST (the command); PYRUN = both.
pytest_cmd() {
  local sel=$1 mexpr="gpu and not slow" mode=matter files
  [ "$sel" = full ] && { mexpr="gpu"; mode=all; }
  [ "$sel" = sanitize ] && mode=sanitize
  mapfile -t files < <(gpu_test_files)
  [ ${#files[@]} -gt 0 ] || files=(tests)
  PYENV=(env "PYTHONPATH=$ROOT/bench/plugins${PYTHONPATH:+:$PYTHONPATH}" PYTEST_PLUGINS=gpu_select
         "GPU_SELECT=$mode" "GPU_SELECT_LOG=$LOGS/gpu_select-$sel.txt")
  PYTEST=("$PY" -m pytest "${files[@]}" -m "$mexpr" -p no:cacheprovider --continue-on-collection-errors -rfE)
  PYRUN=("${PYENV[@]}" "${PYTEST[@]}")
}

show() { printf '%q ' "$@"; }

# Runs a pytest selection with --collect-only; prints the number of tests; fails on 0.
collect_count() {
  local out n
  out="$("${PYRUN[@]}" --collect-only -q 2>&1)"
  echo "$out" | tail -4
  n="$(echo "$out" | sed -nE 's/^([0-9]+)(\/[0-9]+)? tests? collected.*/\1/p' | tail -1)"
  [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "CHECK FAILED: the selection collects no test"; return 1; }
  echo "collected: $n"
}

# A one-line summary of a pytest log: the final counts line, else counts so far.
pytest_summary() {
  local f=$1 line
  [ -f "$f" ] || { echo "no log"; return; }
  line="$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected|xfailed|xpassed)' "$f" \
          | grep -E ' in [0-9.]+s' | tail -1 | sed -E 's/^=+ //; s/ =+$//')"
  if [ -n "$line" ]; then echo "$line"; return; fi
  echo "no final summary (cut?); so far: $(grep -cE '(^| )PASSED' "$f") passed, $(grep -cE '(^| )FAILED' "$f") failed, $(grep -cE '(^| )ERROR' "$f") errors"
}

# Compute capability of GPU 0 as "90", if known.
gpu_cc() { cat "$WORK/cc" 2>/dev/null || echo ""; }
# A real run of a GPU step needs the device the machine step found (else every GPU test would skip).
need_gpu() { [ "$DRY" = 1 ] || [ -s "$WORK/cc" ] || { echo "no CUDA device (see machine.log)"; note "no CUDA device"; return 1; }; }

# --------------------------------------------------------------------------- steps
# Each runs in its own process (bash gpu.sh --step NAME) under timeout; stdout and
# stderr go to $LOGS/NAME.log. Exit 0 ok, 3 skipped/refused (see .note), else failed.

step_machine() {
  echo "== machine $(date -u +%FT%TZ)"
  uname -a; echo "cores: $NPROC"; free -g 2>/dev/null | head -2; df -h "$ROOT" /tmp 2>/dev/null
  local smi; smi="$(find_tool nvidia-smi)" && echo "nvidia-smi: $smi" || echo "nvidia-smi: not found"
  local nvcc; nvcc="$(find_tool nvcc)" && echo "nvcc: $nvcc" || echo "nvcc: not found"
  local cs; cs="$(find_tool compute-sanitizer)" && echo "compute-sanitizer: $cs" || echo "compute-sanitizer: not found"
  pymod xdist && echo "pytest-xdist: yes" || echo "pytest-xdist: no (tests run serially)"
  pymod pytest_timeout && echo "pytest-timeout: yes" || echo "pytest-timeout: no"
  "$PY" - "$WORK/cc" <<'EOF' || { echo "CHECK FAILED: $PY cannot import torch"; return 1; }
import platform, sys, torch
try:
    import triton; tv = triton.__version__
except Exception as exc:  # noqa: BLE001
    tv = f"not importable ({exc})"
print(f"python {platform.python_version()} torch {torch.__version__} cuda {torch.version.cuda} triton {tv}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
    open(sys.argv[1], "w").write(f"{p.major}{p.minor}\n")
else:
    print("gpu: none visible to torch")
EOF
  if [ "$DRY" = 1 ]; then
    echo "(dry run) nvidia-smi, nvcc and compute-sanitizer are only looked up here"
    echo "90" > "$WORK/cc"; note "dry run: no GPU; sm_90 assumed for the probe"
    return 0
  fi
  [ -n "$smi" ] && "$smi" && "$smi" --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
  [ -n "$nvcc" ] && "$nvcc" --version | tail -2
  [ -n "$cs" ] && "$cs" --version | head -2
  [ -s "$WORK/cc" ] || { echo "no CUDA device visible to torch"; note "no CUDA device"; return 1; }
}

step_build() {
  local archs="${MAVEN_FAST_CUDA_ARCHS:-$(gpu_cc)}"; archs="${archs:-80;90}"
  local pip=("$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e .)
  echo "== build: MAVEN_FAST_CUDA=ON MAVEN_FAST_CUDA_ARCHS=$archs CMAKE_BUILD_PARALLEL_LEVEL=$NPROC ${pip[*]}"
  local f
  for f in pyproject.toml CMakeLists.txt scripts/ptxas_report.py; do
    [ -f "$f" ] || { echo "CHECK FAILED: missing $f"; return 1; }
  done
  if ls .whl/*.whl >/dev/null 2>&1; then
    echo "== carried wheels: $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')"
    local pipw=("$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$WORK/site" .whl/*.whl)
    if [ "$DRY" = 1 ]; then echo "(dry run) would run: ${pipw[*]}"; else "${pipw[@]}" || return 1; fi
  fi
  if [ "$DRY" = 1 ]; then
    "$PY" -m pip --version || { echo "CHECK FAILED: pip"; return 1; }
    "$PY" -c "import scikit_build_core, pybind11; print('scikit-build-core', scikit_build_core.__version__, 'pybind11', pybind11.__version__)" \
      || { echo "CHECK FAILED: the build needs scikit-build-core and pybind11 (carry them as wheels)"; return 1; }
    { have cmake || pymod cmake; } && { have ninja || pymod ninja; } \
      || { echo "CHECK FAILED: cmake / ninja not found"; return 1; }
    echo "(dry run) not building; a simulated ptxas report follows"
    cat <<'EOF'
ptxas info    : Compiling entry function '_ZN10maven_fast4cuda12_GLOBAL__N_120dry_run_probe_kernelEv' for 'sm_90'
ptxas info    : Function properties for _ZN10maven_fast4cuda12_GLOBAL__N_120dry_run_probe_kernelEv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
EOF
  else
    MAVEN_FAST_CUDA=ON MAVEN_FAST_CUDA_ARCHS="$archs" CMAKE_BUILD_PARALLEL_LEVEL="$NPROC" \
      PIP_DISABLE_PIP_VERSION_CHECK=1 "${pip[@]}" || { echo "BUILD FAILED"; return 1; }
  fi
  # The ptxas resource report of this build (the CMake build passes -Xptxas=-v).
  grep -E "ptxas info|bytes stack frame|Used [0-9]+ registers" "$LOGS/build.log" > "$LOGS/ptxas-resources.txt" || true
  "$PY" scripts/ptxas_report.py "$LOGS/ptxas-resources.txt" > "$LOGS/ptxas-resources.md" \
    || { echo "CHECK FAILED: scripts/ptxas_report.py"; return 1; }
  echo "ptxas: $(grep -c 'Compiling entry' "$LOGS/ptxas-resources.txt") kernel builds reported"
  "$PY" - "$LOGS/build_info.json" "$DRY" <<'EOF' || return 1
import json, sys
import maven_fast
info = maven_fast.build_info()
json.dump(info, open(sys.argv[1], "w"), indent=2)
print({k: info.get(k) for k in ("extension_loaded", "cuda_kernels", "cuda_archs", "torch_version", "triton_version")})
if sys.argv[2] != "1" and not (info.get("extension_loaded") and info.get("cuda_kernels")):
    sys.exit(f"BUILD FAILED: the extension has no CUDA kernels ({info.get('cuda_disabled_reason')})")
EOF
}

step_tests() {
  need_gpu || return 1
  local sel=default; [ "$FULL" = 1 ] && sel=full
  pytest_cmd "$sel"
  local extra=(-v --durations=20 "--junitxml=$LOGS/tests.junit.xml")
  local workers="${GPU_SH_WORKERS:-$(( NPROC / 2 < 8 ? NPROC / 2 : 8 ))}"
  if [ "$workers" -gt 1 ] && pymod xdist; then extra+=(-n "$workers" --dist load); else workers=0; fi
  pymod pytest_timeout && extra+=(--timeout 120)
  echo "== tests ($sel, xdist workers: $workers): $(show "${PYRUN[@]}" "${extra[@]}")"
  if [ "$DRY" = 1 ]; then
    [ -f bench/plugins/gpu_select.py ] || { echo "CHECK FAILED: bench/plugins/gpu_select.py"; return 1; }
    collect_count > "$WORK/collect-$sel" || { cat "$WORK/collect-$sel"; return 1; }
    cat "$WORK/collect-$sel"
    echo "(dry run) simulated: 0 failed, $(sed -n 's/^collected: //p' "$WORK/collect-$sel") passed in 0.00s"
    return 0
  fi
  TORCHINDUCTOR_COMPILE_THREADS=4 "${PYRUN[@]}" "${extra[@]}"
  local rc=$? suite
  suite="$(grep -o '<testsuite [^>]*>' "$LOGS/tests.junit.xml" 2>/dev/null | head -1)"
  if [ -n "$suite" ] && [ "$(echo "$suite" | sed -nE 's/.* tests="([0-9]+)".*/\1/p')" = \
       "$(echo "$suite" | sed -nE 's/.* skipped="([0-9]+)".*/\1/p')" ]; then
    note "every selected test was skipped"; [ $rc -eq 0 ] && rc=1
  fi
  return $rc
}

# A probe that the sanitizer must flag: an out-of-bounds global write (oob) or a
# shared-memory race between warps (race). Its kernels' names contain maven_fast,
# like the project's, so the --kernel-name filter is checked too.
write_probe() {
  cat > "$1" <<'EOF'
#include <cstdio>
#include <cstring>
__global__ void maven_fast_probe_oob(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) p[i] = i;  // i == n: one past the end
}
__global__ void maven_fast_probe_race(int* out) {
  __shared__ int s[32];
  s[threadIdx.x % 32] = threadIdx.x;  // two warps write the same words, no barrier
  out[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}
int main(int argc, char** argv) {
  int* p = nullptr;
  if (cudaMalloc(&p, 64 * sizeof(int)) != cudaSuccess) { std::printf("probe: cudaMalloc failed\n"); return 2; }
  if (argc > 1 && std::strcmp(argv[1], "race") == 0) maven_fast_probe_race<<<1, 64>>>(p);
  else maven_fast_probe_oob<<<1, 128>>>(p, 64);
  std::printf("probe: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
  cudaFree(p);
  return 0;
}
EOF
}

step_sanitizer() {
  need_gpu || return 1
  local tool=$1 kind=oob; [ "$tool" = racecheck ] && kind=race
  pytest_cmd sanitize
  local cs nvcc filter=(--kernel-name kns=maven_fast)
  cs="$(find_tool compute-sanitizer)" || cs=""
  nvcc="$(find_tool nvcc)" || nvcc=""
  echo "== $tool: compute-sanitizer ${cs:-not found}, nvcc ${nvcc:-not found}"
  echo "== pass: $(show "${PYENV[@]}" PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 7 --print-limit 30 "${filter[@]}" "${PYTEST[@]}" -v)"
  local probe="$WORK/probe" src="$LOGS/sanitizer-probe.cu" arch="sm_$(gpu_cc)"
  [ "$arch" = sm_ ] && arch=sm_90
  [ -f "$probe" ] || { write_probe "$src"; [ -n "$nvcc" ] && "$nvcc" -O0 -arch="$arch" -o "$probe" "$src"; }
  if [ "$DRY" = 1 ]; then
    [ -x "$probe" ] && echo "(dry run) probe built with nvcc for $arch" \
      || echo "(dry run) probe not built (${nvcc:+nvcc failed}${nvcc:-no nvcc here})"
    if [ -f "$WORK/collect-sanitize" ]; then cat "$WORK/collect-sanitize"
    else collect_count > "$WORK/collect-sanitize" || { cat "$WORK/collect-sanitize"; return 1; }; cat "$WORK/collect-sanitize"
    fi
    echo "(dry run) simulated: ========= ERROR SUMMARY: 0 errors"
    return 0
  fi
  [ -n "$cs" ] || { note "compute-sanitizer not found"; return 3; }
  if [ -x "$probe" ]; then
    local out rc
    out="$("$cs" --tool "$tool" --error-exitcode 7 "${filter[@]}" "$probe" "$kind" 2>&1)"; rc=$?
    echo "$out" | tail -25; echo "probe exit: $rc"
    if [ $rc -ne 7 ] && ! echo "$out" | grep -qiE "not supported|error 999|unknown error"; then
      echo "the probe was not flagged with the kernel filter: trying without it"
      out="$("$cs" --tool "$tool" --error-exitcode 7 "$probe" "$kind" 2>&1)"; rc=$?
      echo "$out" | tail -25; echo "probe exit (no filter): $rc"
      [ $rc -eq 7 ] && filter=()
    fi
    if [ $rc -ne 7 ]; then
      note "refused: the probe's planted error was not flagged (exit $rc: $(echo "$out" | grep -iE 'not supported|error' | head -1 | cut -c1-120))"
      return 3
    fi
    echo "probe: planted $kind error flagged"
  else
    note "probe not built (no nvcc): the pass runs unchecked"
  fi
  echo "== running: $(show "${PYENV[@]}" PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool "$tool" --error-exitcode 7 --print-limit 30 "${filter[@]}" "${PYTEST[@]}" -v)"
  "${PYENV[@]}" PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$cs" --tool "$tool" --error-exitcode 7 --print-limit 30 "${filter[@]}" \
    "${PYTEST[@]}" -v
  local rc=$?
  [ $rc -eq 7 ] && note "compute-sanitizer $tool reported errors"
  return $rc
}

# The command of one benchmark suite (the CLI's own flags; one process per suite).
bench_cmd() { BENCH=("$PY" -m maven_fast bench --quick --device cuda --out "$LOGS/bench/$1" --suite "$1"); }

step_bench() {
  need_gpu || return 1
  local list
  bench_cmd SUITE
  # Lists the suites (cross_modal first) and why one cannot run here. In a dry run it
  # also parses every suite's command line with the CLI's own parser (python -m
  # maven_fast runs maven_fast.cli.main, which builds that parser).
  list="$("$PY" - "$DRY" "${BENCH[@]:3}" <<'EOF'
import os, sys
import maven_fast
from maven_fast.benchmark.suites import SUITES
dry, argv = sys.argv[1] == "1", sys.argv[2:]
order = sorted(SUITES, key=lambda n: n != "cross_modal")  # the cross-modal block first
if dry:
    from maven_fast.cli import build_parser
    main = os.path.join(os.path.dirname(maven_fast.__file__), "__main__.py")
    assert os.path.isfile(main), "python -m maven_fast needs maven_fast/__main__.py"
    for name in order:
        args = build_parser().parse_args([a.replace("SUITE", name) for a in argv])  # exits 2 on a bad flag
        assert (args.quick, args.device, args.suite) == (True, "cuda", [name]), args
for name in order:
    reason = SUITES[name].unavailable_on("cuda")
    print(name, (reason or "").replace("\n", " "), sep="\t")
EOF
)" || { echo "$list"; echo "CHECK FAILED: maven_fast.benchmark.suites / the bench command line"; return 1; }
  local name reason failed=0
  while IFS=$'\t' read -r name reason; do
    [ -n "$name" ] || continue
    if [ -n "$reason" ]; then echo "== suite $name: unavailable here: $reason"; echo "$name	unavailable: $reason" >> "$LOGS/bench-suites.tsv"; continue; fi
    bench_cmd "$name"
    echo "== suite $name: ${BENCH[*]}"
    mkdir -p "$LOGS/bench/$name"
    if [ "$DRY" = 1 ]; then
      printf '# maven_fast benchmark (cuda, quick) [dry run: simulated]\n\n## SPEC 6 targets\n\n| target | status |\n|---|---|\n| %s | not measured (dry run) |\n' \
        "$name" > "$LOGS/bench/$name/dry-run-$name-quick.md"
      echo "(dry run) $name: command line parsed by the CLI; simulated report written"
      echo "$name	ok (dry run)" >> "$LOGS/bench-suites.tsv"
    else
      local t0=$SECONDS rc
      echo "$name	running (cut?)" >> "$LOGS/bench-suites.tsv"
      "${BENCH[@]}" < /dev/null; rc=$?
      sed -i '$d' "$LOGS/bench-suites.tsv"
      if [ $rc -eq 0 ]; then echo "$name	ok in $((SECONDS - t0)) s" >> "$LOGS/bench-suites.tsv"
      else echo "$name	failed (exit $rc) after $((SECONDS - t0)) s" >> "$LOGS/bench-suites.tsv"; failed=1
      fi
    fi
  done <<< "$list"
  [ $failed -eq 0 ]
}

if [ "${1:-}" = "--step" ]; then
  STEP=$2
  case "$STEP" in
    machine) step_machine ;;
    build) step_build ;;
    tests) step_tests ;;
    memcheck) step_sanitizer memcheck ;;
    racecheck) step_sanitizer racecheck ;;
    bench) step_bench ;;
    *) echo "unknown step $STEP"; exit 1 ;;
  esac
  exit $?
fi

# --------------------------------------------------------------------------- driver
DRY=0; FULL=0; OUTARG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --full) FULL=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    *) [ -z "$OUTARG" ] || { echo "bench/gpu.sh: one OUTDIR only" >&2; exit 64; }; OUTARG=$1 ;;
  esac
  shift
done

if [ -n "${OUT:-}" ]; then
  DEST="$OUT"
  [ -z "$OUTARG" ] || echo "bench/gpu.sh: \$OUT is set: writing to $OUT, not $OUTARG" >&2
else
  DEST="${OUTARG:-bench/results/gpu-$(date +%F)}"
fi
mkdir -p "$DEST" || exit 1
DEST="$(cd "$DEST" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/maven-gpu.XXXXXX")" || exit 1
LOGS="$WORK/results"
mkdir -p "$LOGS"
export DRY FULL WORK LOGS PY NPROC PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1  # nothing written into the checkout
# Carried wheels are installed (build step) into $WORK/site, ahead of everything.
if ls .whl/*.whl >/dev/null 2>&1; then export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"; fi

T0=$(now_ms)
tline() { printf '[gpu.sh %s +%5ss] %s\n' "$(date +%T)" "$(secs $(( $(now_ms) - T0 )))" "$*"; }
declare -A STATUS SECS LIMIT RC
BANK=0
CUR_PID=""
printf 'step\tstart_s\tend_s\tseconds\tbudget_s\tlimit_s\tstatus\trc\n' > "$LOGS/timeline.tsv"
tline "bench/gpu.sh $([ "$DRY" = 1 ] && echo '--dry-run ')$([ "$FULL" = 1 ] && echo '--full ')-> $DEST (work: $WORK)"

interrupted() {
  tline "interrupted: cutting the running step and writing the report"
  [ -n "$CUR_PID" ] && kill -TERM "$CUR_PID" 2>/dev/null
  INTERRUPTED=1
}
INTERRUPTED=0
trap interrupted TERM INT

run_step() {
  local name=$1 base=${BUDGET[$1]} limit var="GPU_SH_BUDGET_$1"
  limit=$(( base + BANK )); [ $limit -lt 5 ] && limit=5
  [ -n "${!var:-}" ] && limit=${!var}
  local overrun=0
  if [ "$DRY" = 1 ] && [ "${GPU_SH_DRY_OVERRUN:-}" = "$name" ]; then overrun=1; limit=2; fi
  LIMIT[$name]=$limit
  tline "step $name: start (budget ${base} s, limit ${limit} s)"
  local t=$(now_ms) rc
  if [ $overrun = 1 ]; then
    timeout -k 5 "$limit" bash -c 'echo "(dry run) simulated overrun: sleeping past the limit"; sleep 60' \
      > "$LOGS/$name.log" 2>&1 &
  else
    timeout -k 5 "$limit" bash "$SELF" --step "$name" > "$LOGS/$name.log" 2>&1 &
  fi
  CUR_PID=$!
  wait "$CUR_PID"; rc=$?
  [ "$INTERRUPTED" = 1 ] && { wait "$CUR_PID" 2>/dev/null; rc=130; }
  CUR_PID=""
  local ms=$(( $(now_ms) - t )) st
  case $rc in
    0) st=ok ;;
    124|137) st=cut ;;
    130) st=interrupted ;;
    3) st=skipped ;;
    *) st="failed" ;;
  esac
  [ $rc = 3 ] && grep -q "^refused" "$LOGS/$name.note" 2>/dev/null && st=refused
  [ "$DRY" = 1 ] && [ "$st" = ok ] && st="ok (dry run)"
  [ $overrun = 1 ] && echo "simulated overrun (dry run): expected to be cut" >> "$LOGS/$name.note"
  STATUS[$name]=$st; SECS[$name]=$(secs $ms); RC[$name]=$rc
  BANK=$(( BANK + base - (ms + 999) / 1000 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(secs $((t - T0)))" "$(secs $(( $(now_ms) - T0 )))" \
    "${SECS[$name]}" "$base" "$limit" "$st" "$rc" >> "$LOGS/timeline.tsv"
  tline "step $name: $st in ${SECS[$name]} s (rc $rc)"
  case $st in ok*|skipped) ;; *) echo "---- last lines of $name.log:"; tail -15 "$LOGS/$name.log"; echo "----" ;; esac
}

STOPPED=""
for s in "${STEPS[@]}"; do
  if [ -n "$STOPPED" ] || [ "$INTERRUPTED" = 1 ]; then
    STATUS[$s]="not run (${STOPPED:-interrupted})"; SECS[$s]=0; LIMIT[$s]=-; RC[$s]=-
    printf '%s\t-\t-\t0\t%s\t-\t%s\t-\n' "$s" "${BUDGET[$s]}" "${STATUS[$s]}" >> "$LOGS/timeline.tsv"
    continue
  fi
  run_step "$s"
  if [ "$s" = build ] && [[ "${STATUS[build]}" != ok* ]]; then STOPPED="the build ${STATUS[build]}"; fi
done
trap - TERM INT

# --------------------------------------------------------------------------- report
TOTAL=$(secs $(( $(now_ms) - T0 )))
EXIT=0
for s in "${STEPS[@]}"; do
  sim=0; [ "$DRY" = 1 ] && [ "${GPU_SH_DRY_OVERRUN:-}" = "$s" ] && sim=1
  case "${STATUS[$s]}" in
    ok*|skipped|refused) ;;
    cut) [ $sim = 1 ] || EXIT=1 ;;  # the simulated overrun is meant to be cut ...
    *) EXIT=1 ;;
  esac
  [ $sim = 1 ] && [ "${STATUS[$s]}" != cut ] && EXIT=1  # ... and not cutting it is a failure
done
[ -n "$STOPPED" ] && EXIT=2

section_of() {  # the "## SPEC 6 targets" section of a benchmark report
  awk '/^## SPEC 6 targets/{p=1; print; next} p && /^## /{exit} p' "$1"
}

{
  echo "# bench/gpu.sh report$([ "$DRY" = 1 ] && echo ' (DRY RUN: nothing ran on a GPU; outputs simulated)')"
  echo
  echo "- date: $(date -u +%FT%TZ); host: $(hostname 2>/dev/null); mode: $([ "$FULL" = 1 ] && echo full || echo default)$([ "$DRY" = 1 ] && echo ', dry run')"
  echo "- $(grep -m1 '^python ' "$LOGS/machine.log" 2>/dev/null || echo 'python/torch: unknown')"
  echo "- $(grep -m1 '^gpu: ' "$LOGS/machine.log" 2>/dev/null || echo 'gpu: unknown')"
  echo "- total: $TOTAL s of the 470 s budget; exit status $EXIT"
  echo
  echo "## Steps"
  echo
  echo "| step | status | seconds | budget s | limit s | note |"
  echo "|---|---|---|---|---|---|"
  for s in "${STEPS[@]}"; do
    echo "| $s | ${STATUS[$s]} | ${SECS[$s]} | ${BUDGET[$s]} | ${LIMIT[$s]} | $(cat "$LOGS/$s.note" 2>/dev/null | tr '\n' ' ' | sed 's/|/\\|/g') |"
  done
  echo
  cut_steps=""; for s in "${STEPS[@]}"; do [ "${STATUS[$s]}" = cut ] && cut_steps+="${cut_steps:+, }$s"; done
  echo "Cut (reached their limit): ${cut_steps:-none}."
  [ -n "$STOPPED" ] && echo "Stopped after the build: $STOPPED; the later steps did not run."
  echo
  echo "## Build"
  echo
  if [ -f "$LOGS/build_info.json" ]; then echo '```'; cat "$LOGS/build_info.json"; echo; echo '```'; else echo "no build_info.json"; fi
  if [ -f "$LOGS/ptxas-resources.txt" ]; then
    echo
    echo "ptxas: $(grep -c 'Compiling entry' "$LOGS/ptxas-resources.txt") kernel builds; spills: $(grep -E 'bytes spill' "$LOGS/ptxas-resources.txt" | grep -vc ' 0 bytes spill stores, 0 bytes spill loads') with spills (ptxas-resources.md)"
  fi
  echo
  echo "## GPU tests"
  echo
  echo '```'
  grep -m1 '^== tests' "$LOGS/tests.log" 2>/dev/null
  cat "$LOGS"/gpu_select-default.txt "$LOGS"/gpu_select-full.txt 2>/dev/null | sort -u
  echo "summary: $(pytest_summary "$LOGS/tests.log")"
  grep -E '^(FAILED|ERROR) ' "$LOGS/tests.log" 2>/dev/null | head -40
  echo '```'
  for tool in memcheck racecheck; do
    echo
    echo "## compute-sanitizer $tool"
    echo
    echo '```'
    grep -hE '^probe|^\(dry run\)|ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$tool.log" 2>/dev/null | head -20
    cat "$LOGS/gpu_select-sanitize.txt" 2>/dev/null | sort -u
    echo "pytest: $(pytest_summary "$LOGS/$tool.log")"
    grep -E '^(FAILED|ERROR) ' "$LOGS/$tool.log" 2>/dev/null | head -20
    echo '```'
  done
  echo
  echo "## Benchmark (maven-fast bench --quick --device cuda, one suite per process)"
  echo
  if [ -f "$LOGS/bench-suites.tsv" ]; then sed 's/^/- /; s/\t/: /' "$LOGS/bench-suites.tsv"; else echo "- no suite ran"; fi
  for md in "$LOGS"/bench/*/*.md; do
    [ -f "$md" ] || continue
    echo; echo "### $(basename "$(dirname "$md")"): $(basename "$md")"; echo
    section_of "$md"
  done
  echo
  echo "## Files"
  echo
  echo "${KEY_FILES[*]}; the logs are in results.tar.gz (results/<step>.log)."
} > "$WORK/report.md"

# Key files: always the same set; a missing one says why.
cp "$LOGS/timeline.tsv" "$WORK/timeline.tsv"
if [ -s "$LOGS/ptxas-resources.md" ]; then cp "$LOGS/ptxas-resources.md" "$WORK/ptxas-resources.md"
else echo "not produced: build ${STATUS[build]}" > "$WORK/ptxas-resources.md"; fi
: > "$WORK/bench.md"
for md in "$LOGS"/bench/*/*.md; do [ -f "$md" ] && { cat "$md"; echo; } >> "$WORK/bench.md"; done
[ -s "$WORK/bench.md" ] || echo "not produced: bench ${STATUS[bench]}" > "$WORK/bench.md"

# Large logs are cut to their first 1 MiB and last 3 MiB so the tarball stays small.
for f in "$LOGS"/*.log; do
  if [ "$(stat -c %s "$f")" -gt 6291456 ]; then
    { head -c 1048576 "$f"; printf '\n[... cut by bench/gpu.sh ...]\n'; tail -c 3145728 "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
  fi
done
cp "$WORK/report.md" "$LOGS/report.md"
tar -C "$WORK" -czf "$WORK/results.tar.gz" results

for f in "${KEY_FILES[@]}"; do cp "$WORK/$f" "$DEST/$f" || EXIT=1; done

# What was promised: at most 8 files in $OUT, plain names, nothing else, each < 16 MiB.
bad=""
n=0
for f in "$DEST"/* "$DEST"/.[!.]*; do
  [ -e "$f" ] || continue
  n=$((n + 1)); b=$(basename "$f")
  [[ "$b" =~ ^[A-Za-z0-9._-]+$ ]] && [ -f "$f" ] || bad+="$b (name or type) "
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 16777216 ] && bad+="$b (over 16 MiB) "
  if [ -n "${OUT:-}" ] && [[ " ${KEY_FILES[*]} " != *" $b "* ]]; then bad+="$b (not promised) "; fi
done
[ -n "${OUT:-}" ] && [ $n -gt 8 ] && bad+="($n files, over 8) "
if [ -n "$bad" ]; then echo "bench/gpu.sh: output check failed: $bad" >&2; EXIT=1; fi
rm -rf "$WORK"

echo "======================================== report.md"
[ -f "$DEST/report.md" ] && cat "$DEST/report.md"
echo "========================================"
echo "| step | status | seconds | limit s |"
echo "|---|---|---|---|"
for s in "${STEPS[@]}"; do echo "| $s | ${STATUS[$s]} | ${SECS[$s]} | ${LIMIT[$s]} |"; done
tline "done in $TOTAL s, exit $EXIT: $(cd "$DEST" && ls | tr '\n' ' ')in $DEST"
exit $EXIT
