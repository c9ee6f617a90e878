#!/bin/bash
# s38 run 2 (main SHA=, full build, carry [".whl"]): the layer grid with every provider (nf4lora, dense_bf16,
# bnb_peft, naive) at main's head on the issue shapes (0, 1, 2, 4), r = 16 and 64, every M and mode (the last such
# grid was s19's, before the RS forward and dx); the interleaved fwd+bwd step at M 4096 / 16384 (step_ab); and
# gemv_time's A/B of the TMA ring's 16- against 32-row blocks at M 9-16 where the 32-row blocks take a partial last
# wave (8192x28672: 896 blocks over 264 slots, 3.39 waves; 16-row blocks 6.79). Results in $OUT/run2.tgz.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
el() { echo "$1 at $(( $(date +%s) - t0 )) s"; }
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
el built
for r in 16 64; do
  timeout 150 python3 bench/bench_qlora.py --out /tmp/o/grid --shapes 0,1,2,4 --ranks $r \
    --providers nf4lora,dense_bf16,bnb_peft,naive --tag s38r$r-$SHA > /tmp/o/grid$r.log 2>&1; el "grid r$r rc $?"
  tail -2 /tmp/o/grid$r.log; tar -czf $OUT/run2.tgz -C /tmp o
done
timeout 100 python3 bench/step_ab.py --rounds 4 --steps 10 \
  --shapes 4096x4096x4096,4096x14336x4096,4096x4096x14336,4096x28672x8192,16384x4096x4096,16384x14336x4096,16384x4096x14336,16384x28672x8192 \
  > /tmp/o/step_ab.jsonl 2> /tmp/o/step_ab.err; el "step_ab rc $?"; tail -2 /tmp/o/step_ab.err
python3 -c "
import json
for l in open('/tmp/o/step_ab.jsonl'):
    d = json.loads(l); print(d['M'], d['N'], d['K'], d['dense'], d['node'], d['node/dense'], d['node_ran'])"
tar -czf $OUT/run2.tgz -C /tmp o
timeout $((585 - ($(date +%s) - t0))) python3 bench/gemv_time.py --brief --attr GEMV_TILES=0,1 \
  --spec "8192,28672:9/12/16;28672,8192:16;4096,14336:16;5120,13824:16;4096,11008:16" --out /tmp/o/tiles_ab.jsonl 2>&1 | tail -12
el "tiles A/B rc ${PIPESTATUS[0]}"
tar -czf $OUT/run2.tgz -C /tmp o
