#!/bin/bash
# run 4 (main a9308ae): landed merged scales: test_cuda_gemv, gemv_time default, e2e nf4lora+bnb_peft
export NF4LORA_GIT_SHA=$1
t0=$(date +%s)
source bench/device_build.sh || exit 1
timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > $OUT/test_gemv.txt 2>&1; tail -3 $OUT/test_gemv.txt
echo "tests at $(( $(date +%s) - t0 )) s"
timeout 100 python3 bench/gemv_time.py --out $OUT/gemv_time.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path','device')})"
echo "gemv at $(( $(date +%s) - t0 )) s"
mkdir -p $OUT/e2e
PYTHONUNBUFFERED=1 timeout $((540 - ($(date +%s) - t0))) python3 bench/bench_e2e.py --out $OUT/e2e --stacks nf4lora,bnb_peft --loss-steps 0 --profile > $OUT/e2e/e2e.log 2>&1; echo "e2e rc $? $(( $(date +%s) - t0 )) s"
tail -5 $OUT/e2e/e2e.log
