#!/bin/bash
# s35 run 3: branch wip-rows16w8 (SHA=) built NODE=0 — why the M 9-16 register GEMV (NT = 2, 8 warps) takes 1.1-1.7x
# the TMA ring's time and kD (2-4 tiles ahead) does not matter: ncu of the register kernel at M = 16 (NT = 2) and
# M = 8 (NT = 1, 16 warps) on K = 4096, N = 14336 (one slice; NT = 2 walks it in 2 passes): warp states, scheduler,
# memory tables, and the per-SASS-instruction stall samples (source page, CSV).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NCU=$(which ncu || ls /usr/local/cuda*/bin/ncu | head -1)
for M in 16 8; do
  timeout 150 $NCU --clock-control none --kernel-name regex:qlora_gemv_rows --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    --section SourceCounters --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    -o /tmp/o/ncu_m$M python3 -c "
import runpy, sys
from nf4lora import _cuda_ext
_cuda_ext.GEMV_PIPELINE = 'rows'
sys.argv = ['ncu_gemv.py', '$M', '4096', '14336']
runpy.run_path('bench/ncu_gemv.py', run_name='__main__')
" > /tmp/o/ncu_m$M.log 2>&1
  echo "ncu M=$M rc $? at $(( $(date +%s) - t0 )) s"
  $NCU -i /tmp/o/ncu_m$M.ncu-rep --page details > /tmp/o/ncu_m$M.txt 2>&1
  $NCU -i /tmp/o/ncu_m$M.ncu-rep --page source --csv --print-source sass > /tmp/o/ncu_m${M}_sass.csv 2>&1
  grep -E "Duration|Memory Throughput|L1/TEX Hit|Issue Slots|Registers Per|Achieved Occ|Eligible|Active Warps|No Eligible|One or More" /tmp/o/ncu_m$M.txt | head -14
  rm -f /tmp/o/ncu_m$M.ncu-rep
  tar -czf $OUT/run3.tgz -C /tmp o
done
echo "done at $(( $(date +%s) - t0 )) s"
