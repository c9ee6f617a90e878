#!/bin/bash
# s37 run 5: main (SHA=), NODE=0. (1) test_cuda_gemv + test_cuda_ext: the launcher's one memset for the workspace's
# split-K and fused-u counters (test_split_k_counters_are_left_at_zero's reference takes that path at M = 1);
# (2) gemv_time --roof at M 1 / 16: a bare read of each weight's codes in the same harness, the size-limited roof.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o5
source bench/device_build.sh > /tmp/o5/build.txt || { cat /tmp/o5/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 70 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o5/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o5/tests.txt; grep -E "^FAILED" /tmp/o5/tests.txt | head -5
tar -czf $OUT/run5.tgz -C /tmp o5
timeout 110 python3 bench/gemv_time.py --brief --roof --rounds 8 --out /tmp/o5/roof.jsonl \
  --spec "4096,4096:1/16;4096,14336:1/16;14336,4096:1/16;8192,28672:1/16" 2>&1 | tail -9
echo "gemv_time rc ${PIPESTATUS[0]}; done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run5.tgz -C /tmp o5
