#!/bin/bash
# s35 run 6: branch wip-timeline2 (SHA=; s32's archive/timeline plus a raw dump) built NODE=0 — the register GEMV's
# per-warp timeline at M = 1 / 4 with every warp's records kept (TIMELINE_RAW), for the spread of the warps' loop ends
# within each block (what balancing the warps of a block could give) and across blocks.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
TIMELINE_RAW=/tmp/o timeout 150 python3 bench/gemv_timeline.py --reps 3 \
  --spec "4096,14336:1/4;14336,4096:1;8192,28672:1/4" --out /tmp/o/timeline.jsonl 2>&1 | cut -c1-300 | tail -6
echo "timeline rc ${PIPESTATUS[0]} at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
