#!/bin/bash
# run 5: (a) main: TMA ring tiles 1 vs 2 at M 9-16; (b) wip-ws-lut: ncu source counters of the ws forward, modes 0 and 3
# (.s25/ncu_ws.py was bench/results/h200/cuda_dx/s13/ncu_ws.py without its sys.path line)
export NF4LORA_GIT_SHA=$1
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build_main.txt || exit 1
timeout 150 python3 .s25/tiles_ab.py --env GEMV_TILES_AB=2,1 --spec "4096,14336:9/12/16;14336,4096:9/12/16;8192,28672:9/16;4096,4096:16" --out /tmp/o/tiles_ab.jsonl 2>&1 | tail -12
echo "tiles at $(( $(date +%s) - t0 )) s"
cd .s25/lut && export PYTHONPATH= NF4LORA_GIT_SHA=$2
NODE=0 source bench/device_build.sh > /tmp/o/build_lut.txt || exit 1
for m in 0 3; do
  NF4LORA_WS_LUT=$m timeout 120 ncu --clock-control none --kernel-name regex:qlora_wgmma_ws --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters --section MemoryWorkloadAnalysis -o /tmp/o/ws_lut$m python3 ../ncu_ws.py 4096 4096 14336 > /tmp/o/ncu_ws_lut$m.log 2>&1
  echo "ncu mode $m rc $?"
  ncu --import /tmp/o/ws_lut$m.ncu-rep --page details > /tmp/o/ws_lut$m-details.txt 2>&1
  ncu --import /tmp/o/ws_lut$m.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/o/ws_lut$m-sass.csv.gz
  grep -E "Duration|Issue Slots|Eligible Warps|Shared" /tmp/o/ws_lut$m-details.txt | head -8
done
rm -f /tmp/o/*.ncu-rep
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
