#!/bin/bash
# s26 run 3 (wip-rs-proto + producer-built tables): test_cuda_mma, rs_ab (nested / plain), ncu of wgmma_rs
cd "$(dirname "$0")/wip-rs-proto"
mkdir -p /tmp/o; t0=$(date +%s)
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
grep -i "warn\|spill" $OUT/build.log | head -5
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q --maxfail=10 -n 8 -p no:cacheprovider tests/test_cuda_mma.py > /tmp/o/test.log 2>&1; echo "test rc $?"; tail -4 /tmp/o/test.log
echo "tested at $(( $(date +%s) - t0 )) s"
for v in "" "--plain"; do
  echo "== rs_ab $v"; timeout 80 python3 bench/rs_ab.py --rounds 6 $v 2>&1 | tail -6 | tee -a /tmp/o/ab.jsonl | python3 -c "
import sys,json
for l in sys.stdin:
  try: d=json.loads(l)
  except Exception: print(l.strip()); continue
  print(d['M'],d['K'],d['N'],'MHz',d['sm_MHz'],'ws',d['us[wgmma_ws]'],d['tflops[wgmma_ws]'],'rs',d['us[wgmma_rs]'],d['tflops[wgmma_rs]'],'ratio',d['ratio[rs/ws]'],'same',d['same_bits'])"
done
echo "ab at $(( $(date +%s) - t0 )) s"
v=wgmma_rs
timeout 100 ncu --clock-control none --kernel-name regex:qlora_wgmma_ --launch-skip 1 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters -o /tmp/o/$v python3 ../ncu_rs.py 4096 4096 14336 $v > /tmp/o/ncu_$v.log 2>&1
echo "ncu $v rc $?"
ncu --import /tmp/o/$v.ncu-rep --page details > /tmp/o/$v-details.txt 2>&1
ncu --import /tmp/o/$v.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > /tmp/o/$v-sass.csv.gz
grep -E "Duration|SM Frequency|Issue Slots|Eligible Warps|No Eligible|Compute \(SM\)|Warp Cycles Per Issued" /tmp/o/$v-details.txt | head -10
rm -f /tmp/o/*.ncu-rep
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
