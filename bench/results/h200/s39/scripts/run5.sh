#!/bin/bash
# s39 run 5 (branch wip-epi SHA=, full build with the node, carry [".whl"]): the landing candidate. stage_lora only
# where r > 32 (TMA ring: u and B rows; register GEMV: u from its own u blocks), the fused u's work rule. The full
# GPU suite, then gemv_time NF4LORA_GEMV_EPI=0 (staging off) against 1 (the rule) at r = 64 and 16.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
tar -czf $OUT/run5.tgz -C /tmp o
for r in 64 16; do
  timeout 60 python3 bench/gemv_time.py --brief --r $r --env NF4LORA_GEMV_EPI=0,1 \
    --spec "4096,4096:1/16;4096,14336:1/8/16;14336,4096:1/8/16;8192,28672:1/8/16" --out /tmp/o/stage_r$r.jsonl 2>&1 | tail -12
  echo "stage r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run5.tgz -C /tmp o
done
