#!/bin/bash
# s34 run 3: branch wip-passes (SHA=) built NODE=0 — the register GEMV walking a K slice longer than 4096 in passes
# (no split-K where the rows alone fill the SMs; K % 256 == 0). GEMV / extension tests, then the A/B of the plans:
# NF4LORA_ROWS_PASSES=0 (ceil(K / 4096) slices, as main) against 1 (fewest slices), interleaved CUDA graphs.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -8
timeout 240 python3 bench/gemv_time.py --brief --env NF4LORA_ROWS_PASSES=0,1 \
  --spec "4096,14336:1;14336,4096:1/4;8192,28672:1/4;28672,8192:1/4;11008,4096:1;14336,2048:1;14336,1024:1" \
  --out /tmp/o/passes.jsonl 2>&1 | tail -14; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
