#!/bin/bash
# run 3 (branch): stream x merged at the big-smem points
export NF4LORA_GIT_SHA=$1
NODE=0 source bench/device_build.sh || exit 1
f() { python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path','device')})"; }
SP="8192,24576:4;8192,28672:4;28672,8192:4;14336,4096:4/8"
for m in 0 1; do
  echo "== NF4LORA_GEMV_MERGED=$m"
  NF4LORA_GEMV_MERGED=$m timeout 100 python3 bench/gemv_time.py --env NF4LORA_GEMV_STREAM=1,0 --spec "$SP" --out $OUT/stream_ab_merged$m.jsonl 2>&1 | f
done
echo "== merged A/B with streaming forced"
NF4LORA_GEMV_STREAM=1 timeout 100 python3 bench/gemv_time.py --env NF4LORA_GEMV_MERGED=1,0 --spec "$SP;8192,28672:1/2/3" --out $OUT/merged_ab_stream1.jsonl 2>&1 | f
