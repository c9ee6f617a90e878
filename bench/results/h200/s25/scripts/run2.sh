#!/bin/bash
# run 2 (main): ncu source counters of the M=16 TMA GEMV (4096x14336, 8192x28672); gemv_time default; e2e nf4lora+bnb_peft mb4 profile
export NF4LORA_GIT_SHA=$1
t0=$(date +%s)
source bench/device_build.sh || exit 1
for s in "16 4096 14336" "16 8192 28672"; do
  set -- $s
  timeout 120 ncu --clock-control none --kernel-name regex:qlora_gemv_tma --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters --section MemoryWorkloadAnalysis -o $OUT/ncu_m16_${2}x${3} python3 bench/ncu_gemv.py $1 $2 $3 > $OUT/ncu_m16_${2}x${3}.log 2>&1
  echo "rc $? $s"
  ncu --import $OUT/ncu_m16_${2}x${3}.ncu-rep --page details > $OUT/ncu_m16_${2}x${3}-details.txt 2>&1
  ncu --import $OUT/ncu_m16_${2}x${3}.ncu-rep --page source --csv --print-source sass 2>&1 | gzip > $OUT/ncu_m16_${2}x${3}-sass.csv.gz
  grep -E "Duration|DRAM Throughput|Issue Slots|Registers Per|Achieved Occ|Eligible|No Eligible|Waves|Block Limit" $OUT/ncu_m16_${2}x${3}-details.txt | head -20
done
echo "ncu at $(( $(date +%s) - t0 )) s"
timeout 100 python3 bench/gemv_time.py --out $OUT/gemv_time.jsonl > $OUT/gemv_time.log 2>&1; echo "gemv rc $? at $(( $(date +%s) - t0 )) s"
mkdir -p $OUT/e2e
PYTHONUNBUFFERED=1 timeout $((575 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out $OUT/e2e --stacks nf4lora,bnb_peft --loss-steps 0 --decode-tokens 32 --profile > $OUT/e2e/e2e.log 2>&1; echo "e2e rc $? $(( $(date +%s) - t0 )) s"
tail -5 $OUT/e2e/e2e.log
