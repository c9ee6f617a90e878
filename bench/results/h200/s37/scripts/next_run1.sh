#!/bin/bash
# Prepared in s37 for the next session (not run): main (SHA=), full build with the node, carry [".whl"]. The full GPU
# suite at main's head (last full suite: s37 run 1 at 8b59b18; since then zeroed_counters' cached pointer and the
# launcher's one memset, each run with test_cuda_gemv + test_cuda_ext in runs 4-5), then gemv_time's default spec with
# --roof (as make gpu-check runs it: M 1 / 4 / 8 / 16 and 28672x8192, the bare read beside each shape). ~8 minutes
# with a cold start; results in $OUT/next1.tgz.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
tar -czf $OUT/next1.tgz -C /tmp o
timeout 200 python3 bench/gemv_time.py --brief --roof --out /tmp/o/gemv_time.jsonl 2>&1 | tail -19
echo "gemv_time rc ${PIPESTATUS[0]}; done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/next1.tgz -C /tmp o
