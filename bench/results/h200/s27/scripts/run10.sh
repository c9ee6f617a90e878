#!/bin/bash
# s27 run 10: rs_consume (the RS kernels' consumer loop shared by the forward and the dx): dx + mma tests, dx_ab and
# rs_ab on two shapes; ncu source counters of the rs dx on 4096x4096x14336 (where its time goes)
export NF4LORA_GIT_SHA=${SHA:?pass SHA=<commit>}; t0=$(date +%s); mkdir -p /tmp/o10
source bench/device_build.sh > /tmp/o10/build.txt || { cat /tmp/o10/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_cuda_dx.py tests/test_cuda_mma.py > /tmp/o10/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o10/tests.txt
timeout 40 python3 bench/dx_ab.py --shapes "4096,4096,14336;8192,4096,14336" --rounds 6 --out /tmp/o10/dx_ab.jsonl 2>&1 | cut -c1-330
timeout 40 python3 bench/rs_ab.py --shapes "4096,4096,14336" --rounds 4 --out /tmp/o10/rs_ab.jsonl 2>&1 | tail -1 | cut -c1-400
echo "checks at $(( $(date +%s) - t0 )) s"
timeout 90 ncu --clock-control none --kernel-name regex:qlora_dx_rs --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters --section MemoryWorkloadAnalysis -o /tmp/o10/dx python3 .s27/ncu_dx.py 4096 4096 14336 rs > /tmp/o10/ncu_dx.log 2>&1
echo "ncu rc $?"
ncu --import /tmp/o10/dx.ncu-rep --page details > /tmp/o10/dx-details.txt 2>&1
ncu --import /tmp/o10/dx.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/o10/dx-sass.csv.gz
grep -E "Duration|SM Frequency|Compute \(SM\)|Eligible Warps|No Eligible|Warp Cycles Per Issued|Shared" /tmp/o10/dx-details.txt | head -12
rm -f /tmp/o10/*.ncu-rep /tmp/o10/build.txt
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run10.tgz -C /tmp o10
