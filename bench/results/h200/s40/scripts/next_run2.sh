#!/bin/bash
# Next session's second run (main SHA= with s40/patches/cou-pairs.patch applied first: `git apply
# bench/results/h200/s40/patches/cou-pairs.patch`, committed on a branch; NODE=0): u beside the register GEMV at
# M 3-4 with r = 64 (M·r > SMs), a row pair per 128-thread block (lora_u_small_kernel<T, 2>, 32 registers, no spills
# at compile), switched by NF4LORA_CO_PAIRS=1. test_cuda_gemv with it on, then gemv_time CO_PAIRS 0 / 1 at M 3-4.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_CO_PAIRS=1 timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests_pairs.txt 2>&1
echo "tests pairs rc $?: $(tail -1 /tmp/o/tests_pairs.txt)"; tar -czf $OUT/next2.tgz -C /tmp o
timeout 60 python3 bench/gemv_time.py --brief --r 64 --env NF4LORA_CO_PAIRS=0,1 \
  --spec "4096,4096:3/4;4096,14336:3/4;14336,4096:3/4;8192,28672:3/4" --out /tmp/o/pairs_r64.jsonl 2>&1 | tail -9
tar -czf $OUT/next2.tgz -C /tmp o
