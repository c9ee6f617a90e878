#!/bin/bash
# s33 run 3: main (SHA=) issue 6's full e2e, first half: the fused ops' host cost per call at one decode token
# (model_ops_time --host; the no-grad calls now skip the autograd Functions), then bench_e2e with every default
# (micro-batch 1 and 4 with / without checkpointing, 256-token eager decode, 200-step loss curve) for nf4lora_fused
# and bnb_peft, profiles at micro-batch 4. carry [".whl"]. Run 4 adds lora16 and nf4lora to the same results.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/e2e
source bench/device_build.sh > /tmp/e2e/build.txt || { cat /tmp/e2e/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 60 python3 bench/model_ops_time.py --host --out /tmp/e2e/model_ops_host.jsonl; echo "host rc $?"
PYTHONUNBUFFERED=1 timeout $((585 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out /tmp/e2e \
  --stacks ${STACKS:-nf4lora_fused,bnb_peft} --profile $E2E_ARGS > /tmp/e2e/e2e.log 2>&1; echo "e2e rc $?"
grep -E "tok/s|skipping|Error|loss curve" /tmp/e2e/e2e.log; echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/e2e.tgz -C /tmp e2e
