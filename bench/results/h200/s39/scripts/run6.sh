#!/bin/bash
# s39 run 6 (main SHA=, NODE=0): ncu of the register GEMV at M = 8, K = 4096, N = 14336, r = 64 and r = 16 (run 5:
# 25.0 against 17.2 us, not understood): warp states and the per-SASS-instruction stall samples (source page, CSV).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu | head -1)
for r in 64 16; do
  timeout 80 $NCU --clock-control none --kernel-name regex:qlora_gemv_rows --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SourceCounters \
    -o /tmp/o/ncu_r$r python3 bench/ncu_gemv.py 8 4096 14336 $r > /tmp/o/ncu_r$r.log 2>&1
  echo "ncu r=$r rc $? at $(( $(date +%s) - t0 )) s"
  $NCU -i /tmp/o/ncu_r$r.ncu-rep --page details > /tmp/o/ncu_r$r.txt 2>&1
  $NCU -i /tmp/o/ncu_r$r.ncu-rep --page source --csv --print-source sass > /tmp/o/ncu_r${r}_sass.csv 2>&1
  grep -E "Duration|Issue Slots|Eligible|No Eligible" /tmp/o/ncu_r$r.txt | head -5
  rm -f /tmp/o/ncu_r$r.ncu-rep; gzip -f /tmp/o/ncu_r${r}_sass.csv
  tar -czf $OUT/run6.tgz -C /tmp o
done
