#!/bin/bash
# s40 run 3 (branch stage-rule SHA=, full build with the node, carry [".whl"]): the landing candidate. u's staged rows
# r + 4 floats apart; stage_lora where r >= 32 and M·r >= 192 (both pipelines, u and B rows), u alone from the fused
# u blocks where r > 32 (M = 1, as main). The full GPU suite, then gemv_time --roof at r = 16 (main's rule: nothing
# staged there; compare s39 / run 1) and at r = 32 and 64 over M 1-16 (compare runs 1-2's A/Bs).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
echo "suite at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run3.tgz -C /tmp o
for r in 16 64 32; do
  timeout 70 python3 bench/gemv_time.py --brief --roof --r $r --out /tmp/o/gemv_r$r.jsonl 2>&1 | tail -22
  echo "gemv r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run3.tgz -C /tmp o
done
