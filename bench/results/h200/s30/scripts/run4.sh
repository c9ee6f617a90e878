#!/bin/bash
# s30 run 4: main (SHA=): NODE=0 build; the small-M forward's tests (launch_typed's rank_blocks lambda);
# Nsight Compute (source counters) of the register GEMV after the vote, M = 1 on 14336x4096 and 8192x28672.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_gemv.py tests/test_qlora_fwd.py tests/test_gpu.py > /tmp/o/tests4.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests4.txt
grep -E "FAILED|Error" /tmp/o/tests4.txt | head -5
tar -czf $OUT/run4.tgz -C /tmp o
for s in "1 14336 4096" "1 8192 28672"; do
  set -- $s; n=ncu_m${1}_${2}x${3}
  timeout 100 ncu --clock-control none --kernel-name regex:qlora_gemv_rows --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section SourceCounters --section MemoryWorkloadAnalysis -o /tmp/o/$n python3 bench/ncu_gemv.py $1 $2 $3 > /tmp/o/$n.log 2>&1
  echo "rc $? $s"
  ncu --import /tmp/o/$n.ncu-rep --page details > /tmp/o/$n-details.txt 2>&1
  ncu --import /tmp/o/$n.ncu-rep --page source --csv --print-source sass 2>&1 | gzip > /tmp/o/$n-sass.csv.gz
  rm -f /tmp/o/$n.ncu-rep
  grep -E "Duration|DRAM Throughput|L1/TEX Hit|Issue Slots|Registers Per|Achieved Occ|Eligible|No Eligible|Issued Warp" /tmp/o/$n-details.txt | head -14
done
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
