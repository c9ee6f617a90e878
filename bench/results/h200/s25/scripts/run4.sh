#!/bin/bash
# run 4 (main 3b08e9e, warm machine right after run 2, whose e2e files did not come back: too many files under $OUT):
# e2e nf4lora + bnb_peft, micro-batches 1 and 4, profile at micro-batch 4, 32 decode tokens, results tarred.
export NF4LORA_GIT_SHA=3b08e9e; source bench/device_build.sh >/dev/null || exit 1; mkdir -p /tmp/e2e
PYTHONUNBUFFERED=1 timeout 400 python3 bench/bench_e2e.py --out /tmp/e2e --stacks nf4lora,bnb_peft --loss-steps 0 --decode-tokens 32 --profile > /tmp/e2e/e2e.log 2>&1
tar -czf $OUT/e2e.tgz -C /tmp e2e
