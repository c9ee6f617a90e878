#!/bin/bash
# s33 run 4: main (SHA=) issue 6's full e2e, second half: lora16 and nf4lora (every default, profiles) merged into
# run 3's results (bench/results/h200/s33/e2e/, copied to /tmp/e2e first).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); rm -rf /tmp/e2e; cp -r bench/results/h200/s33/e2e /tmp/e2e
source bench/device_build.sh > /tmp/e2e/build4.txt || { cat /tmp/e2e/build4.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
PYTHONUNBUFFERED=1 timeout $((585 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out /tmp/e2e \
  --stacks ${STACKS:-lora16,nf4lora} --profile $E2E_ARGS > /tmp/e2e/e2e4.log 2>&1; echo "e2e rc $?"
grep -E "tok/s|skipping|Error|loss curve" /tmp/e2e/e2e4.log; echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/e2e.tgz -C /tmp e2e
