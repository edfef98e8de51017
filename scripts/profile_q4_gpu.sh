#!/usr/bin/env bash
# Nsight Compute profile of the q4 GEMV kernel at a few Llama-2-13B shapes (a development aid:
# run it through the device tool after scripts/gpu_check.sh has installed pntk on that machine).
# One steady-state launch per case (weights rotating as in the benchmark), with the sections
# that say what bounds it: throughput, memory, warp stalls, scheduler and occupancy.
# Reports go to $OUT (else build/gpu_check) as ncu_<shape>_g<group>_m<rows>.txt; the key lines
# are printed.
#   PNTK_PROFILE_CASES="5120x5120:128:1 ..."   shape:group:rows cases
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${OUT:-build/gpu_check}"
mkdir -p "$logs"
python="${PYTHON:-python3}"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "profile_q4_gpu: error: ncu (Nsight Compute) not found" >&2; exit 2; }
# Cycles a warp spends stalled for each reason, per issued instruction.
stall_metrics=$(printf 'smsp__average_warps_issue_stalled_%s_per_issue_active.ratio,' long_scoreboard \
  short_scoreboard barrier wait math_pipe_throttle mio_throttle lg_throttle membar drain imc_miss no_instruction \
  dispatch_stall not_selected selected sleeping branch_resolving tex_throttle misc)
stall_metrics=${stall_metrics%,}
cases="${PNTK_PROFILE_CASES:-5120x5120:128:1 5120x27648:128:1 13824x5120:128:16}"
for case in $cases; do
  IFS=: read -r shape group rows <<<"$case"
  report="$logs/ncu_${shape}_g${group}_m${rows}.txt"
  timeout 150 "$ncu" --kernel-name regex:q4_gemv --launch-skip 40 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section SchedulerStats --section Occupancy --section LaunchStats \
    --metrics "smsp__inst_executed.sum,dram__bytes_read.sum,$stall_metrics" \
    "$python" scripts/bench_q4_gpu.py --quick --shape "$shape" --group "$group" --rows "$rows" >"$report" 2>&1
  echo "== $shape group $group M=$rows (exit $?) =="
  grep -E "q4_gemv_kernel|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Issued Warp Per|No Eligible|Warp Cycles Per Issued|Grid Size|Waves Per SM|inst_executed|dram__bytes" \
    "$report" | sed 's/  */ /g' | head -20
  grep -E "issue_stalled" "$report" | sed 's/  */ /g; s/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//' |
    awk '$NF + 0 >= 0.3' | head -12
  grep -E "^ *(OPT|WRN) " "$report" | head -4 | cut -c1-200
done
