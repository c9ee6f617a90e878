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
  set -- $s; n=ncu_m${1}_${2}x${3}
  timeout 100 ncu --clock-control none --kernel-name regex:qlora_gemv_rows --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters --section MemoryWorkloadAnalysis -o /tmp/o/$n python3 bench/ncu_gemv.py $1 $2 $3 > /tmp/o/$n.log 2>&1
  echo "rc $? $s"
  ncu --import /tmp/o/$n.ncu-rep --page details > /tmp/o/$n-details.txt 2>&1
  ncu --import /tmp/o/$n.ncu-rep --page source --csv --print-source sass 2>&1 | gzip > /tmp/o/$n-sass.csv.gz
  rm -f /tmp/o/$n.ncu-rep
  grep -E "Duration|Issued Warp|Eligible Warps|No Eligible" /tmp/o/$n-details.txt | head -5
  python3 bench/results/h200/s25/scripts/sass.py top /tmp/o/$n-sass.csv.gz 8 | cut -c1-160
done
tar -czf $OUT/next_run1.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv_time rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/gemv_time.jsonl'):
    d=json.loads(l)
    print(d if 'K' not in d else (d['K'],d['N'],d['M'],d['sm_MHz'],d['us'],d['pct_copy']))
P
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
