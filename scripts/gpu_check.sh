#!/usr/bin/env bash
# The device check, in one call on a fresh GPU machine without network (within 8 minutes):
# build pntk for this GPU only, run the CUDA tests, run the GPU benchmark (with ExLlama's own
# kernel when an ExLlama v1 wheel is installed there), run the fp16 CUDA tests again under
# compute-sanitizer memcheck, and print a summary table last.
# Logs (build, tests, benchmark text and JSON) go to $OUT, else build/gpu_check.
#   Beforehand, where there is network: bash scripts/gpu_deps.sh, then carry build/deps
#   (nlohmann/json headers; wheels of pytest, numpy, transformers for whichever are missing).
#   PNTK_CUDA_ARCHS=90     architectures to build (default 90: the H100 / H200)
#   PYTHON=python3         the interpreter that has torch
#   PNTK_CHECK_SECONDS=450 the time the steps share (each step gets what is left, capped)
#   PNTK_CHECK_STEPS="tests benchmark memcheck"   the steps after the build; "profile" adds
#                          scripts/profile_q4_gpu.sh (Nsight Compute, PNTK_PROFILE_CASES)
set -uo pipefail
cd "$(dirname "$0")/.."
began=$(date +%s)
budget="${PNTK_CHECK_SECONDS:-450}"
logs="${OUT:-build/gpu_check}"
mkdir -p "$logs"
python="${PYTHON:-python3}"
archs="${PNTK_CUDA_ARCHS:-90}"
wanted_steps=" ${PNTK_CHECK_STEPS:-tests benchmark memcheck} "
# Whether step $1 (named $2 in PNTK_CHECK_STEPS, default $1) is to run: pntk built and the step
# asked for; else it is recorded as skipped.
runs() {
  if [ "$built" != 1 ]; then record "$1" skipped 0 "no build"; return 1; fi
  if [[ "$wanted_steps" != *" ${2:-$1} "* ]]; then record "$1" skipped 0 "not in PNTK_CHECK_STEPS"; return 1; fi
}
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
# Console scripts pip installs land here.
export PATH="$($python -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"

# A system Python marked externally managed (PEP 668) needs pip's consent to install into it.
pip_flags=(--disable-pip-version-check)
if $python -c 'import os, sys, sysconfig; sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(
    os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))' 2>/dev/null; then
  pip_flags+=(--break-system-packages)
fi

steps=()  # "name|status|seconds|detail"
record() { steps+=("$1|$2|$3|$4"); }
since() { echo $(( $(date +%s) - $1 )); }
# Seconds a step may take: what is left of the budget, at most $1.
allow() {
  local left=$(( budget - $(since "$began") ))
  [ "$left" -lt "$1" ] && echo $(( left > 10 ? left : 10 )) || echo "$1"
}

gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "gpu_check: ${gpu:-no nvidia-smi}; $($python --version 2>&1); nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')"

# 1. Test dependencies missing here, from the carried wheels.
t=$(date +%s)
missing=()
for module in pytest numpy transformers; do
  $python -c "import $module" 2>/dev/null || missing+=("$module")
done
if [ ${#missing[@]} -eq 0 ]; then
  record "test deps" ok "$(since "$t")" "all present"
elif [ -d build/deps/wheels ] && $python -m pip install -q "${pip_flags[@]}" --no-index \
    --find-links build/deps/wheels "${missing[@]}" >"$logs/deps.log" 2>&1; then
  record "test deps" ok "$(since "$t")" "installed ${missing[*]}"
else
  record "test deps" FAILED "$(since "$t")" "missing ${missing[*]} (see deps.log; run scripts/gpu_deps.sh and carry build/deps)"
fi

# 2. Build and install (nlohmann/json from build/deps/include when the package is absent).
t=$(date +%s)
if timeout "$(allow 240)" $python -m pip install -v "${pip_flags[@]}" --no-build-isolation --no-deps . \
    -Cbuild-dir=build/gpu \
    -Ccmake.define.PNTK_CUDA=ON \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$archs" \
    -Ccmake.define.PNTK_JSON_INCLUDE_DIR="$PWD/build/deps/include" \
    -Ccmake.define.PNTK_BUILD_TESTS=OFF >"$logs/build.log" 2>&1 &&
  info=$(cd /tmp && $python -c "import pntk; print(pntk.build_info())" 2>>"$logs/build.log"); then
  record build ok "$(since "$t")" "$info"
  built=1
else
  record build FAILED "$(since "$t")" "$(grep -m1 -iE 'error' "$logs/build.log" | cut -c1-100)"
  built=0
fi

# 3. CUDA tests (the installed module; tests/ holds no copy of pntk).
t=$(date +%s)
if runs "cuda tests" tests; then
  timeout "$(allow 150)" $python -m pytest tests/test_cuda_q4.py tests/test_cuda_rope.py tests/test_cuda_bindings.py \
    tests/test_q4_matrix.py -k "cuda or not test_q4_matrix" -q -rs -p no:cacheprovider \
    -o faulthandler_timeout=60 >"$logs/tests.log" 2>&1
  code=$?
  counts=$(tail -1 "$logs/tests.log" | sed 's/=//g; s/^ *//; s/ *$//')
  record "cuda tests" "$([ $code = 0 ] && echo ok || echo FAILED)" "$(since "$t")" "$counts"
fi

# 4. Benchmark.
t=$(date +%s)
if runs benchmark; then
  bench_seconds=$(allow 330)
  timeout "$bench_seconds" $python scripts/bench_q4_gpu.py --json "$logs/bench.json" \
    >"$logs/bench.txt" 2>&1
  code=$?
  summary=$(grep -m1 '^goals:' "$logs/bench.txt" || tail -1 "$logs/bench.txt")
  record benchmark "$([ $code = 0 ] && echo ok || echo FAILED)" "$(since "$t")" "$summary"
fi

# 5. compute-sanitizer memcheck over the fp16 cases of the CUDA tests (every kernel, every
#    launch shape they exercise), torch's caching allocator off so that an access past a tensor
#    is past an allocation. Last, so that its slowness cannot squeeze the benchmark.
t=$(date +%s)
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
  /opt/nvidia/nsight-compute/*/compute-sanitizer 2>/dev/null | head -1)
if runs memcheck && [ -n "$sanitizer" ]; then
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$(allow 150)" "$sanitizer" --tool memcheck --print-limit 20 \
    --error-exitcode 9 $python -m pytest tests/test_cuda_q4.py tests/test_cuda_rope.py \
    -k "not dtype1 and not dtype2" -q -p no:cacheprovider >"$logs/memcheck.log" 2>&1
  code=$?
  summary="$(grep -m1 -o 'ERROR SUMMARY.*' "$logs/memcheck.log"); $(grep -E ' in [0-9.]+s' "$logs/memcheck.log" | tail -1 | sed 's/=//g; s/^ *//')"
  case $code in
    0) record memcheck ok "$(since "$t")" "$summary" ;;
    124) record memcheck "timed out" "$(since "$t")" \
      "$(grep -oE '^[.sFE]+' "$logs/memcheck.log" | tr -d '\n' | wc -c) tests run; $summary" ;;
    *) record memcheck FAILED "$(since "$t")" "exit $code; $summary" ;;
  esac
elif [ "$built" = 1 ] && [[ "$wanted_steps" == *" memcheck "* ]]; then
  record memcheck skipped 0 "no compute-sanitizer"
fi

# 6. Nsight Compute profile of the GEMV (only when asked for).
t=$(date +%s)
if runs profile; then
  PYTHON="$python" OUT="$logs" timeout "$(allow 200)" bash scripts/profile_q4_gpu.sh >"$logs/profile.txt" 2>&1
  code=$?
  record profile "$([ $code = 0 ] && echo ok || echo FAILED)" "$(since "$t")" "key lines above; reports ncu_*.txt"
fi

# Summary, last: failures and skips of the tests, the benchmark table, then the steps.
echo
if [ -f "$logs/tests.log" ]; then
  grep -E '^(FAILED|ERROR|SKIPPED)' "$logs/tests.log" | head -20
fi
if [ -f "$logs/memcheck.log" ]; then
  grep -E '^(=========|FAILED|ERROR)' "$logs/memcheck.log" | grep -v 'COMPUTE-SANITIZER' | head -20
fi
for text in bench.txt profile.txt; do
  [ -f "$logs/$text" ] && cat "$logs/$text"
done
echo
echo "== pntk GPU check: ${gpu:-unknown GPU}, $(since "$began") s in all =="
printf '%-11s %-8s %5s  %s\n' step status s detail
for row in "${steps[@]}"; do
  IFS='|' read -r name status seconds detail <<<"$row"
  printf '%-11s %-8s %5s  %s\n' "$name" "$status" "$seconds" "$detail"
done
for row in "${steps[@]}"; do
  case "$row" in *"|FAILED|"*) exit 1 ;; esac
done
exit 0
