#!/bin/bash
# s33 run 2: main (SHA=) e2e at micro-batch 4 (with / without checkpointing), stacks nf4lora, nf4lora_fused (the model's
# RMSNorms, SwiGLU products and rotary embeddings by nf4lora.fuse_model_ops) and bnb_peft in one call, each step
# profiled (--profile). carry [".whl"].
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/e2e
source bench/device_build.sh > /tmp/e2e/build.txt || { cat /tmp/e2e/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
PYTHONUNBUFFERED=1 timeout $((570 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out /tmp/e2e --stacks ${STACKS:-nf4lora,nf4lora_fused,bnb_peft} \
  --batches 4 --loss-steps 0 --decode-tokens 8 --profile $E2E_ARGS > /tmp/e2e/e2e.log 2>&1; echo "e2e rc $?"
grep -E "tok/s|skipping|Error" /tmp/e2e/e2e.log; echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/e2e.tgz -C /tmp e2e
