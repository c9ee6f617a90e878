#!/bin/bash
# run 6 (main a9308ae): ncu of the register GEMV at M=1 on 4096x14336 and 8192x28672
NODE=0 source bench/device_build.sh || exit 1
which ncu || ls /usr/local/cuda*/bin/ncu
for s in "1 4096 14336" "1 8192 28672"; do
  set -- $s
  timeout 150 ncu --kernel-name regex:qlora_gemv --launch-skip 2 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section LaunchStats --section Occupancy --section SchedulerStats python3 bench/ncu_gemv.py $1 $2 $3 > $OUT/ncu_${2}x${3}.txt 2>&1
  echo "rc $? $s"; grep -E "Duration|Memory Throughput|DRAM Throughput|L1/TEX Hit|L2 Hit|Issue Slots|Registers|Shared Memory Config|Achieved Occ|Stall|Block Limit|Waves" $OUT/ncu_${2}x${3}.txt | head -40
done
