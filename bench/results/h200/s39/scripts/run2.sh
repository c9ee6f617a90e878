#!/bin/bash
# s39 run 2 (branch wip-epi SHA=, NODE=0): the small-M epilogues' LoRA term. NF4LORA_GEMV_EPI: 0 main's lora_dot
# (per output, 4 steps of 8 ranks in flight), 1 lora_dots (a thread's outputs share one B row; 64 ranks of B in
# flight), 2 lora_dots + the block's B rows prefetched to L2 at its start, 3 no LoRA term (knockout: the ceiling).
# NF4LORA_FUSE_U at M = 1: 2 fused as main, 1 fused only where a u block's rank-k is <= 1/4 of a row block's W
# elements, 0 never. test_cuda_gemv with EPI=2 first (same bits as 0 wherever a test compares paths).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_GEMV_EPI=2 timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5; tar -czf $OUT/run2.tgz -C /tmp o
for r in 64 16; do
  timeout 130 python3 bench/gemv_time.py --brief --r $r --env NF4LORA_GEMV_EPI=0,1,2,3 \
    --spec "4096,4096:1/8/16;4096,14336:1/8/16;14336,4096:1/8/16;8192,28672:1/8/16" --out /tmp/o/epi_r$r.jsonl 2>&1 | tail -13
  echo "epi r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run2.tgz -C /tmp o
done
for r in 64 16; do
  timeout 50 python3 bench/gemv_time.py --brief --r $r --env NF4LORA_FUSE_U=2,1,0 \
    --spec "4096,4096:1;4096,14336:1;14336,4096:1;8192,28672:1;2048,4096:1;8192,2048:1" --out /tmp/o/fuse_r$r.jsonl 2>&1 | tail -7
  echo "fuse r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run2.tgz -C /tmp o
done
