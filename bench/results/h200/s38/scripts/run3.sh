#!/bin/bash
# s38 run 3 (SHA=, NODE=0 build): rank_prof.py (the forward's kernels at r = 16 / 64, M 1 / 16 / 128) and gemv_time
# at r = 64 on the issue shapes (M 1 / 16).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 200 python3 bench/results/h200/s38/scripts/rank_prof.py > /tmp/o/rank_prof.jsonl 2> /tmp/o/rank_prof.err
echo "rank_prof rc $? at $(( $(date +%s) - t0 )) s"; tail -3 /tmp/o/rank_prof.err; cat /tmp/o/rank_prof.jsonl
tar -czf $OUT/run3.tgz -C /tmp o
timeout 200 python3 bench/gemv_time.py --brief --r 64 --spec "4096,14336:1/16;14336,4096:1/16;8192,28672:1/16" \
  --out /tmp/o/gemv_r64.jsonl 2>&1 | tail -7
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run3.tgz -C /tmp o
