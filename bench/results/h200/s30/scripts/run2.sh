#!/bin/bash
# s30 run 2: wip-rows-vote (archived into .s30/vote): NF4LORA_ROWS_VOTE=0,1 in one process on the
# walk run's shapes; gemv tests (incl. memcheck) with VOTE=1.
t0=$(date +%s); mkdir -p /tmp/o
show() { python3 - "$1" <<'P'
import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],{k.split('=')[-1]:v for k,v in d.items() if k.startswith(('us','ratio','same'))})
    else: print(d)
P
}
cd .s30/vote && export NF4LORA_GIT_SHA=$(cat ../vote.sha) NODE=0 && source bench/device_build.sh > /tmp/o/build_vote.txt || { cat /tmp/o/build_vote.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/gemv_time.py --rounds 10 --env NF4LORA_ROWS_VOTE=0,1 --spec "4096,4096:1/4;4096,14336:1/4/8;14336,4096:1/4;8192,28672:1/2/4;28672,8192:1/4;2048,8192:1/4;11008,4096:1/4;4096,11008:1/4;8192,8192:1/4" --out /tmp/o/vote.jsonl > /tmp/o/vote.log 2>&1; echo "vote rc $?"; show /tmp/o/vote.jsonl
NF4LORA_ROWS_VOTE=1 timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/gemv_vote.txt 2>&1; echo "gemv tests (vote) rc $?"; tail -1 /tmp/o/gemv_vote.txt
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
