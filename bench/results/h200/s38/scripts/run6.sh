#!/bin/bash
# s38 run 6 (branch wip-u-rlog SHA=, NODE=0): the u kernel's ranks per block by rule on the non-register pipelines
# (NF4LORA_U_RLOG=-1: K <= 4096 4 ranks, K <= 8192 2, else 1) against main's one (0), r = 64 and 16; test_cuda_gemv.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5; tar -czf $OUT/run6.tgz -C /tmp o
for r in 64 16; do
  timeout 100 python3 bench/gemv_time.py --brief --r $r --rounds 8 --env NF4LORA_U_RLOG=-1,0 \
    --spec "4096,4096:9/16;4096,14336:16;4096,11008:16;8192,28672:16;14336,4096:16" --out /tmp/o/rule_r$r.jsonl 2>&1 | tail -6
  echo "rule r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run6.tgz -C /tmp o
done
