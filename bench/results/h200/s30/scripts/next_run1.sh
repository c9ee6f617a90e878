#!/bin/bash
# Prepared in s30 for the next session's first device call (not run yet): where the register GEMV's stalls are
# after 13edc3d (the fold) and 3021a4a (no wait at the scale loads). Run from main's root:
#   SHA=$(git rev-parse --short HEAD) bash bench/results/h200/s30/scripts/next_run1.sh     (no carry needed)
# Nsight Compute (source counters) at M = 1 on 14336x4096 / 8192x28672 and at M = 4 on 8192x28672 (where 3021a4a
# gained nothing: 1.00x), then gemv_time's default grid. ~4 minutes with a cold start. Read the counters with
#   python3 bench/results/h200/s25/scripts/sass.py top <file>-sass.csv.gz 25
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
for s in "1 14336 4096" "1 8192 28672" "4 8192 28672"; do
  set -- $s; bench/ncu_kernel.sh qlora_gemv_rows ncu_m${1}_${2}x${3} /tmp/o python3 bench/ncu_gemv.py $1 $2 $3
done
tar -czf $OUT/next_run1.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv_time rc $?"
cut -c1-200 /tmp/o/gemv_time.jsonl
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
