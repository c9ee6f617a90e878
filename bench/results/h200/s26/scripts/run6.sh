#!/bin/bash
# s26 run 6 (main 66db20c, wgmma_rs auto): full build, full GPU suite, rs_ab, large-M grid (fwd, fwdbwd) vs dense_bf16
export NF4LORA_GIT_SHA=66db20c
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -4 /tmp/o/tests.txt
echo "suite at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
timeout 60 python3 bench/rs_ab.py --rounds 6 --out /tmp/o/rs_ab.jsonl > /tmp/o/rs_ab.log 2>&1; echo "rs_ab rc $?"; python3 -c "
import json
for l in open('/tmp/o/rs_ab.jsonl'):
    d=json.loads(l); print(d['M'],d['K'],d['N'],d['sm_MHz'],d['us[wgmma_ws]'],d['us[wgmma_rs]'],d['ratio[rs/ws]'],d['same_bits'])"
echo "rs_ab at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
timeout $((570 - ($(date +%s) - t0))) python3 bench/bench_qlora.py --out /tmp/o/grid --shapes 0,1,2,4 --ranks 16 --ms 1024,4096,16384 --modes fwd,fwdbwd --providers nf4lora,dense_bf16 --tag s26-$NF4LORA_GIT_SHA > /tmp/o/grid.log 2>&1; echo "grid rc $?"; tail -3 /tmp/o/grid.log
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
