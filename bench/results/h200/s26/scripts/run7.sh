#!/bin/bash
# s26 run 7 (main 66db20c, wgmma_rs auto): e2e nf4lora + bnb_peft at micro-batch 4 (with/without checkpointing)
export NF4LORA_GIT_SHA=66db20c; t0=$(date +%s)
source bench/device_build.sh >/dev/null || exit 1; mkdir -p /tmp/e2e
echo "built at $(( $(date +%s) - t0 )) s"
PYTHONUNBUFFERED=1 timeout $((400 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out /tmp/e2e --stacks nf4lora,bnb_peft --batches 4 --loss-steps 0 --decode-tokens 8 > /tmp/e2e/e2e.log 2>&1; echo "e2e rc $?"
grep "tok/s" /tmp/e2e/e2e.log; echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/e2e.tgz -C /tmp e2e
