#!/bin/bash
# s33 run 5: main (SHA=) built NODE=0; decode_ab.py (plain vs fused eager decode alternated, cProfile of each).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout $((170 - ($(date +%s) - t0))) python3 bench/results/h200/s33/scripts/decode_ab.py /tmp/o 2>&1 | grep -v Warning | tail -12
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
