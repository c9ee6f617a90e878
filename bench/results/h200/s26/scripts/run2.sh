#!/bin/bash
# s26 run 2 (wip-rs-proto): why wgmma_rs lost its prototype's lead: rs_ab variants (L2-resident, plain absmax, LoRA
# in the epilogue), the prototype binary, ncu source counters of rs and ws on 4096x4096x14336
cd "$(dirname "$0")/wip-rs-proto"
mkdir -p /tmp/o; t0=$(date +%s)
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || exit 1
S="4096,4096,14336;4096,8192,28672;8192,4096,14336"
for v in "" "--weights 1" "--plain" "--plain --weights 1" "--no-fold"; do
  echo "== rs_ab $v"; timeout 60 python3 bench/rs_ab.py --shapes "$S" --rounds 6 $v 2>&1 | tail -3 | tee -a /tmp/o/ab.jsonl | cut -c1-400
done
echo "ab at $(( $(date +%s) - t0 )) s"
bash bench/rs_proto.sh 4096 14336 4096 4096 28672 8192 8192 14336 4096 2>&1 | tee /tmp/o/proto.txt
echo "proto at $(( $(date +%s) - t0 )) s"
for v in wgmma_rs wgmma_ws; do
  timeout 100 ncu --clock-control none --kernel-name regex:qlora_wgmma_ --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters --section MemoryWorkloadAnalysis -o /tmp/o/$v python3 ../ncu_rs.py 4096 4096 14336 $v > /tmp/o/ncu_$v.log 2>&1
  echo "ncu $v rc $?"
  ncu --import /tmp/o/$v.ncu-rep --page details > /tmp/o/$v-details.txt 2>&1
  ncu --import /tmp/o/$v.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/o/$v-sass.csv.gz
  grep -E "Duration|SM Frequency|Issue Slots|Eligible Warps|No Eligible|DRAM Through|Compute \(SM\)" /tmp/o/$v-details.txt | head -10
done
rm -f /tmp/o/*.ncu-rep
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
