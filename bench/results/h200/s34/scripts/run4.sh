#!/bin/bash
# s34 run 4: branch wip-passes (SHA=) built NODE=0 — the register GEMV walking a K slice longer than 4096 in passes
# (no split-K where the rows alone fill the SMs; K % 256 == 0). GEMV / extension tests, then the A/B of the plans:
# NF4LORA_ROWS_PASSES=0 (ceil(K / 4096) slices, as main) against 1 (fewest slices), interleaved CUDA graphs.
# Run 4: + NF4LORA_ROWS_PASSES=2 (passes without the L1 prefetch of the next pass's x), M 2-3; no tests (run 3: 113 passed).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
: # (tests: run 3)

timeout 240 python3 bench/gemv_time.py --brief --env NF4LORA_ROWS_PASSES=0,1,2 \
  --spec "14336,4096:1/2/4;8192,28672:1/2/3/4;28672,8192:1/2/4;14336,2048:1/2" \
  --out /tmp/o/passes.jsonl 2>&1 | tail -16; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
