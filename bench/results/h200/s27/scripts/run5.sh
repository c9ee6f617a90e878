#!/bin/bash
# s27 run 5 (rs dx the auto dx kernel): e2e nf4lora + bnb_peft at micro-batch 4 (with/without checkpointing), profile
export NF4LORA_GIT_SHA=${SHA:?pass SHA=<commit>: the device copy's git HEAD is not the tree's}; t0=$(date +%s)
source bench/device_build.sh >/dev/null || exit 1; mkdir -p /tmp/e2e
echo "built at $(( $(date +%s) - t0 )) s"
PYTHONUNBUFFERED=1 timeout $((580 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out /tmp/e2e --stacks nf4lora,bnb_peft --batches 4 --loss-steps 0 --decode-tokens 8 $E2E_ARGS > /tmp/e2e/e2e.log 2>&1; echo "e2e rc $?"
grep "tok/s" /tmp/e2e/e2e.log; echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/e2e.tgz -C /tmp e2e
