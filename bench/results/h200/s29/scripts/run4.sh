#!/bin/bash
# s29 run 4: branch wip-tail-ab (NODE=0): finish_rows (0) against the old end (1); gemv tests both ways
t0=$(date +%s); mkdir -p /tmp/o
export NF4LORA_GIT_SHA=${SHA:?} NODE=0
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
SPEC="4096,4096:1/2/4/8;4096,14336:1/2/4/8;14336,4096:1/2/4;8192,28672:1/2/4;28672,8192:1/2/4;11008,4096:1/4;8192,8192:1/4"
timeout 120 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_TAIL=1,0 --spec "$SPEC" --out /tmp/o/tail_ab.jsonl > /tmp/o/tail_ab.log 2>&1; echo "ab rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/tail_ab.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d.get('sm_MHz'),{k.replace('NF4LORA_ROWS_TAIL=',''):v for k,v in d.items() if k.startswith(('us','ratio','same','pct'))})
    else: print(d)
P
tar -czf $OUT/run4.tgz -C /tmp o
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/gemv_new.txt 2>&1; echo "gemv tests (new) rc $?"; tail -1 /tmp/o/gemv_new.txt; grep FAILED /tmp/o/gemv_new.txt | head -5
NF4LORA_ROWS_TAIL=1 timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py -k "not memcheck" > /tmp/o/gemv_old.txt 2>&1; echo "gemv tests (old) rc $?"; tail -1 /tmp/o/gemv_old.txt
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
