#!/bin/bash
# s29 run 2: branch wip-gemv-diag (NODE=0): tail knockouts 0,3,5,6,7 and the candidate fixes 0,9,10,11 (same bits), gemv tests under 11
t0=$(date +%s); mkdir -p /tmp/o
export NF4LORA_GIT_SHA=${SHA:?} NODE=0
source bench/device_build.sh > /tmp/o/build_br.txt || { cat /tmp/o/build_br.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
SPEC="4096,4096:1/4;4096,14336:1/4/8;14336,4096:1/4;8192,28672:1/4;28672,8192:1/4"
show() { python3 - "$1" <<'P'
import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d.get('sm_MHz'),{k.replace('NF4LORA_ROWS_DIAG=',''):v for k,v in d.items() if k.startswith(('us','ratio','same'))})
    else: print(d)
P
}
timeout 120 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_DIAG=0,9,10,11 --spec "$SPEC" --out /tmp/o/fix.jsonl > /tmp/o/fix.log 2>&1; echo "fix rc $?"; show /tmp/o/fix.jsonl
tar -czf $OUT/run2.tgz -C /tmp o
NF4LORA_ROWS_DIAG=11 timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py -k "not memcheck" > /tmp/o/tests11.txt 2>&1; echo "gemv tests (11) rc $?"; tail -2 /tmp/o/tests11.txt; grep -E "FAILED" /tmp/o/tests11.txt | head
timeout 120 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_DIAG=0,3,5,6,7 --spec "$SPEC" --out /tmp/o/ko.jsonl > /tmp/o/ko.log 2>&1; echo "ko rc $?"; show /tmp/o/ko.jsonl
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
