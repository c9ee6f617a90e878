#!/bin/bash
# s34 run 6: branch wip-rows58 (SHA=) built NODE=0 — auto takes the register pipeline at M 5-8 where rows_plan walks
# K in passes (big N: 8192x28672, 28672x8192), the plan's slices chosen by wave use. GEMV / extension tests, then
# gemv_time --attr GEMV_PIPELINE=tma,auto (the TMA ring as before against the new auto) at M 5-8.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 90 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run6.tgz -C /tmp o
timeout 100 python3 bench/gemv_time.py --brief --attr GEMV_PIPELINE=tma,auto --spec "8192,28672:5/6/8;28672,8192:5/8" \
  --out /tmp/o/rows58.jsonl 2>&1 | tail -7; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
