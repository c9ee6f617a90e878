#!/bin/bash
# s34 run 5: branch wip-passes (SHA=) as it would land — the passes only where the ceil(K / 4096)-slice plan's
# blocks pass 168 KiB of shared memory (no env switch, no x prefetch: run 4's variant 2 code). Full build, the full
# GPU suite, then gemv_time on the default spec (M 1 / 4 / 8 / 16 on the issue shapes).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
timeout 150 python3 bench/gemv_time.py --brief --out /tmp/o/gemv_time.jsonl 2>&1 | tail -20; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
