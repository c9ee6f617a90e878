#!/bin/bash
# s32 run 8 (run 7's machine was taken back mid-call; too little device time left for the full suite): main (SHA=)
# 46f0aa6 built NODE=0; the CUDA GEMV, extension and op tests; the chained-layer check; gemv_time on a subset.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_gemv.py tests/test_cuda_ext.py tests/test_qlora_ops.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
tar -czf $OUT/run8.tgz -C /tmp o
timeout 60 python3 bench/results/h200/s32/scripts/chain.py > /tmp/o/chain.txt 2>&1; echo "chain rc $?"; tail -1 /tmp/o/chain.txt
timeout 60 python3 bench/gemv_time.py --rounds 8 --spec "4096,14336:1/16;14336,4096:1;8192,28672:1/16" --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv_time rc $?"
cut -c1-220 /tmp/o/gemv_time.jsonl
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run8.tgz -C /tmp o
