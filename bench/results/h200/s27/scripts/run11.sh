#!/bin/bash
# s27 run 11: the dx rs producers' table-slot mapping: dx tests, dx_ab on 4 shapes (rs / ws against run 10's), ncu
export NF4LORA_GIT_SHA=${SHA:?pass SHA=<commit>}; t0=$(date +%s); mkdir -p /tmp/o11
source bench/device_build.sh > /tmp/o11/build.txt || { cat /tmp/o11/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 100 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_cuda_dx.py > /tmp/o11/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o11/tests.txt
timeout 60 python3 bench/dx_ab.py --shapes "4096,4096,14336;8192,4096,14336;4096,14336,4096;1024,4096,14336" --rounds 8 --out /tmp/o11/dx_ab.jsonl 2>&1 | cut -c1-330
echo "checks at $(( $(date +%s) - t0 )) s"
timeout 60 ncu --clock-control none --kernel-name regex:qlora_dx_rs --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis -o /tmp/o11/dx python3 .s27/ncu_dx.py 4096 4096 14336 rs > /tmp/o11/ncu_dx.log 2>&1
echo "ncu rc $?"
ncu --import /tmp/o11/dx.ncu-rep --page details > /tmp/o11/dx-details.txt 2>&1
grep -E "Duration|SM Frequency|Compute \(SM\)|Warp Cycles Per Issued|excessive" /tmp/o11/dx-details.txt | head -8
rm -f /tmp/o11/*.ncu-rep /tmp/o11/build.txt
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run11.tgz -C /tmp o11
