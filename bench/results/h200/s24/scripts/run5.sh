#!/bin/bash
# run 5 (main a9308ae): full suite + e2e lora16
export NF4LORA_GIT_SHA=$1
t0=$(date +%s)
source bench/device_build.sh || exit 1
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > $OUT/tests.txt 2>&1
tail -4 $OUT/tests.txt
echo "suite done at $(( $(date +%s) - t0 )) s"
mkdir -p $OUT/e2e
PYTHONUNBUFFERED=1 timeout $((560 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out $OUT/e2e --stacks lora16 --loss-steps 0 --profile > $OUT/e2e/e2e.log 2>&1; echo "e2e rc $? $(( $(date +%s) - t0 )) s"
tail -5 $OUT/e2e/e2e.log
