#!/bin/bash
# s38 run 7 (main SHA=, NODE=0): main with the u kernel's ranks-per-block rule (run 6's values at every point it
# measured): test_cuda_gemv and test_cuda_ext (the mma / dx files ran in runs 4-5 with the same kernels); gemv_time at r = 64 on two shapes (run 6's rule:
# 4096x14336 M 16 34.89 us, 8192x28672 M 16 96.6).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 100 python3 -m pytest -q -n 12 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5; tar -czf $OUT/run7.tgz -C /tmp o
timeout 60 python3 bench/gemv_time.py --brief --r 64 --rounds 8 --spec "4096,14336:16;8192,28672:16" --out /tmp/o/r64.jsonl 2>&1 | tail -2
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run7.tgz -C /tmp o
