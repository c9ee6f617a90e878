#!/bin/bash
# s26 run 4 (wip-rs-proto, NF4LORA_RS_MODE 0-3): rs tests per mode, rs_ab over the modes
cd "$(dirname "$0")/wip-rs-proto"
mkdir -p /tmp/o; t0=$(date +%s)
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
for m in 0 1 2 3; do
  NF4LORA_RS_MODE=$m timeout 100 python3 -m pytest -q --maxfail=5 -n 8 -p no:cacheprovider tests/test_cuda_mma.py -k "wgmma_rs or uses_the_weights" > /tmp/o/test$m.log 2>&1; echo "mode $m test rc $?"; tail -2 /tmp/o/test$m.log
done
echo "tested at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/rs_ab.py --rounds 6 --modes 0,1,2,3 2>&1 | tail -6 | tee -a /tmp/o/ab.jsonl | python3 -c "
import sys,json
for l in sys.stdin:
  try: d=json.loads(l)
  except Exception: print(l.strip()); continue
  print(d['M'],d['K'],d['N'],'MHz',d['sm_MHz'],'ws',d['us[wgmma_ws]'],d['tflops[wgmma_ws]'],' '.join(f\"m{m}: {d[f'ratio[wgmma_rs:{m}/ws]']} {d[f'tflops[wgmma_rs:{m}]']} {d[f'same_bits[wgmma_rs:{m}]']}\" for m in range(4)))"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
