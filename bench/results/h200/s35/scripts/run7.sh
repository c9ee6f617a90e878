#!/bin/bash
# s35 run 7: branch wip-nou (SHA=) built NODE=0 — a knockout (wrong LoRA terms): the forward without its u kernel, the
# register GEMV launched as the previous GEMV's programmatic dependent, its tables and first tiles' code loads issued
# before it waits for the prior grid, x loaded after the wait (NF4LORA_NO_U=1). The ceiling of folding u into the
# register GEMV (one launch a forward, the next GEMV's prologue overlapping this one's tail). gemv_time --env
# NF4LORA_NO_U=0,1 at M 1 / 4 on the issue shapes (one process, interleaved CUDA graphs of back-to-back forwards).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/gemv_time.py --brief --env NF4LORA_NO_U=0,1 \
  --spec "4096,4096:1;4096,14336:1/4;14336,4096:1/4;8192,28672:1;28672,8192:1" \
  --out /tmp/o/nou.jsonl 2>&1 | tail -8; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run7.tgz -C /tmp o
