#!/bin/bash
# s35 run 5: branch wip-persist2 (SHA=) built NODE=0 — s26's persistent TMA ring (branch archive/gemv-persist: 0.94-0.96x
# at 4096x14336 M 9 / 16, 1.055x at 8192x28672 M = 16) ported to today's kernel as kPersist (the default kernels'
# SASS unchanged), on by default only where the column blocks take between one and two waves (NF4LORA_GEMV_PERSIST
# 0 never / 1 that rule / 2 wherever more than one wave). test_cuda_gemv (the rule on, plus the same-bits test over
# the three modes), then gemv_time --env NF4LORA_GEMV_PERSIST=0,1,2 at M 9 / 16.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run5.tgz -C /tmp o
timeout 200 python3 bench/gemv_time.py --brief --env NF4LORA_GEMV_PERSIST=0,1,2 \
  --spec "4096,14336:9/12/16;4096,11008:16;5120,13824:16;8192,28672:16;4096,4096:16;14336,4096:16" \
  --out /tmp/o/persist.jsonl 2>&1 | tail -10; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
