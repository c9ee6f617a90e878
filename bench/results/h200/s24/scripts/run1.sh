#!/bin/bash
# run 1: main verified (full suite) + gemv_time default
export NF4LORA_GIT_SHA=$1
t0=$(date +%s)
source bench/device_build.sh || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $OUT/info.txt
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > $OUT/tests.txt 2>&1
tail -15 $OUT/tests.txt
echo "suite done at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/gemv_time.py --out $OUT/gemv_time.jsonl 2>&1 | tail -30
echo "all done at $(( $(date +%s) - t0 )) s"
