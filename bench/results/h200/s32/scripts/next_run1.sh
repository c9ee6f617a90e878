#!/bin/bash
# Prepared in s32 for the next session (not run): main (SHA=) — full build and the full GPU suite (first at 46f0aa6's
# overlapped u launch, 55615d7's launch.cuh and b4fbd6c's chained-forward test), then gemv_time (brief).
# carry [".whl"] (bitsandbytes wheel for the parity tests). ~6.5 minutes with a cold start.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
timeout 90 python3 bench/gemv_time.py --brief --out /tmp/o/gemv_time.jsonl 2>&1 | tee /tmp/o/gemv_time.log | tail -20
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
