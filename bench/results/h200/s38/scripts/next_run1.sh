#!/bin/bash
# Prepared in s38 for the next session (not run): main (SHA=), full build with the node, carry [".whl"]. The full GPU
# suite at main's head (s38 ran it at 73cab04, run 4: 1208 passed, 1 failed — the plan test, fixed and run in run 5;
# since then the GEMV launcher's u ranks-per-block rule, run 6 with its experiment switch set, test_cuda_gemv 111
# passed), then gemv_time's default spec with --roof at r = 16 and the issue shapes at r = 64 (~9 min with a cold start).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
tar -czf $OUT/next1.tgz -C /tmp o
timeout 150 python3 bench/gemv_time.py --brief --roof --out /tmp/o/gemv_time.jsonl 2>&1 | tail -19
timeout 80 python3 bench/gemv_time.py --brief --r 64 --spec "4096,14336:1/16;14336,4096:1/16;8192,28672:1/16" \
  --out /tmp/o/gemv_r64.jsonl 2>&1 | tail -6
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/next1.tgz -C /tmp o
