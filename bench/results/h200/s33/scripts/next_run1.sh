#!/bin/bash
# Prepared in s33 for the next session (not run): main (SHA=) — full build and the full GPU suite (first at 4937210's
# no-grad path of the fused ops and its test), model_ops_time with the kernels' GPU time per op (9338f68) and --host.
# carry [".whl"]. ~6 minutes with a cold start.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
timeout 90 python3 bench/model_ops_time.py --out /tmp/o/model_ops.jsonl 2>&1 | tail -4; echo "model_ops rc $?"
timeout 60 python3 bench/model_ops_time.py --host --out /tmp/o/model_ops_host.jsonl 2>&1 | tail -4; echo "host rc $?"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
