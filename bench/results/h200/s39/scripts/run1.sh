#!/bin/bash
# s39 run 1: main (SHA=), full build with the node, carry [".whl"]. s38's next_run1.sh (the full GPU suite at main's
# head, gemv_time --roof default spec, gemv_time --r 64 on the issue shapes at M 1 / 16), then the fused u against the
# separate u kernel at M = 1, r = 64 (NF4LORA_FUSE_U=1,0). Results in $OUT/next1.tgz.
t0=$(date +%s)
bash bench/results/h200/s38/scripts/next_run1.sh || exit 1
export NF4LORA_GIT_SHA=$SHA PYTHONPATH=/tmp/site:/tmp/st
timeout 70 python3 bench/gemv_time.py --brief --r 64 --env NF4LORA_FUSE_U=1,0 \
  --spec "4096,4096:1;4096,14336:1;14336,4096:1;8192,28672:1" --out /tmp/o/fuse_u_r64.jsonl 2>&1 | tail -10
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/next1.tgz -C /tmp o
