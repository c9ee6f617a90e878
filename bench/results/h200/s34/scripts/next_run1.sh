#!/bin/bash
# Prepared in s34 for the next session (not run): main (SHA=) — full build and the full GPU suite (first at the
# landed wip-rows58: auto's register pipeline at M 5-8 where rows_plan walks K in passes; run 6 ran the GEMV /
# extension test files only), then gemv_time on the default spec (M 1 / 4 / 8 / 16). carry [".whl"]. ~6 minutes
# with a cold start.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
timeout 150 python3 bench/gemv_time.py --brief --out /tmp/o/gemv_time.jsonl 2>&1 | tail -20; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
