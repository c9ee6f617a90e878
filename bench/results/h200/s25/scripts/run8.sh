#!/bin/bash
# run 8 (main, the auto tile width): full GPU suite, gemv_time on the shapes the rule changes and controls
export NF4LORA_GIT_SHA=$1
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 260 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; tail -4 /tmp/o/tests.txt
echo "suite at $(( $(date +%s) - t0 )) s"
timeout 90 python3 bench/gemv_time.py --spec "4096,4096:9/16;4096,1024:16;2048,4096:16;4096,14336:16;14336,4096:16" --out /tmp/o/gemv_time.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path','device')})"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run8.tgz -C /tmp o
