#!/bin/bash
# s26 run 10 (main 771b546): the interleaved-replay refactor (gemv_time, rs_ab) on one shape each; ncu source
# counters of the ws dx on 4096x4096x14336 (where its time goes, for the next design)
export NF4LORA_GIT_SHA=771b546; t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 40 python3 bench/gemv_time.py --spec "4096,14336:1/16" --rounds 6 --out /tmp/o/gemv_time.jsonl 2>&1 | tail -2 | cut -c1-300
timeout 40 python3 bench/rs_ab.py --shapes "4096,4096,14336" --rounds 4 --out /tmp/o/rs_ab.jsonl 2>&1 | tail -1 | cut -c1-400
echo "checks at $(( $(date +%s) - t0 )) s"
timeout 90 ncu --clock-control none --kernel-name regex:qlora_dx_ws --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters -o /tmp/o/dx python3 .s26/ncu_dx.py 4096 4096 14336 > /tmp/o/ncu_dx.log 2>&1
echo "ncu rc $?"
ncu --import /tmp/o/dx.ncu-rep --page details > /tmp/o/dx-details.txt 2>&1
ncu --import /tmp/o/dx.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/o/dx-sass.csv.gz
grep -E "Duration|SM Frequency|Compute \(SM\)|Eligible Warps|No Eligible|Warp Cycles Per Issued" /tmp/o/dx-details.txt | head -8
rm -f /tmp/o/*.ncu-rep /tmp/o/build.txt
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run10.tgz -C /tmp o
