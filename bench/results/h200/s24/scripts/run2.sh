#!/bin/bash
# run 2 (branch wip-gemv-scales): merged scales A/B, stream threshold A/B, test_cuda_gemv
export NF4LORA_GIT_SHA=$1
t0=$(date +%s)
NODE=0 source bench/device_build.sh || exit 1
timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > $OUT/test_gemv.txt 2>&1; tail -3 $OUT/test_gemv.txt
echo "tests at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/gemv_time.py --env NF4LORA_GEMV_MERGED=1,0 --out $OUT/merged_ab.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path')})"
echo "merged at $(( $(date +%s) - t0 )) s"
timeout 100 python3 bench/gemv_time.py --env NF4LORA_GEMV_STREAM=1,0 --spec "8192,24576:4;8192,25600:4;8192,26624:4;8192,28672:4" --out $OUT/stream_ab.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path')})"
echo "all done at $(( $(date +%s) - t0 )) s"
