#!/bin/bash
# Prepared in s38 for the next session (not run): main (SHA=), full build with the node, carry [".whl"]. s37's
# next_run1.sh (the full GPU suite, then gemv_time's default spec with --roof: s38 ran the suite at 73cab04, run 4,
# 1208 passed and 1 failed — the plan test, fixed and run in run 5; since then the GEMV launcher's u ranks-per-block
# rule, run 6 with its switch set: test_cuda_gemv 111 passed), then the issue shapes at r = 64 (~9 min cold).
bash bench/results/h200/s37/scripts/next_run1.sh || exit 1
export NF4LORA_GIT_SHA=$SHA PYTHONPATH=/tmp/site:/tmp/st  # (device_build.sh's staged package, as the script above had it)
timeout 80 python3 bench/gemv_time.py --brief --r 64 --spec "4096,14336:1/16;14336,4096:1/16;8192,28672:1/16" \
  --out /tmp/o/gemv_r64.jsonl 2>&1 | tail -6
tar -czf $OUT/next1.tgz -C /tmp o
