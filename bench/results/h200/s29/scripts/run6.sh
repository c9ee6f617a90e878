#!/bin/bash
# s29 run 6: branch wip-tail-ab (full build): finish_rows (0) against the old end (1) at r = 16 and 64; full GPU suite (default: finish_rows)
t0=$(date +%s); mkdir -p /tmp/o
export NF4LORA_GIT_SHA=${SHA:?}
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
show() { python3 - "$1" <<'P'
import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d['r'],{k.replace('NF4LORA_ROWS_TAIL=',''):v for k,v in d.items() if k.startswith(('us','ratio','same'))})
    else: print(d)
P
}
SPEC="4096,4096:1/4;4096,14336:1/2/4/8;14336,4096:1/2/4;8192,28672:1/2/4;28672,8192:1/4;8192,8192:1/4"
timeout 60 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_TAIL=1,0 --spec "$SPEC" --out /tmp/o/tail16.jsonl > /tmp/o/tail16.log 2>&1; echo "ab16 rc $?"; show /tmp/o/tail16.jsonl
timeout 40 python3 bench/gemv_time.py --r 64 --rounds 8 --env NF4LORA_ROWS_TAIL=1,0 --spec "4096,4096:1;4096,14336:1/4;14336,4096:1;8192,28672:1/4" --out /tmp/o/tail64.jsonl > /tmp/o/tail64.log 2>&1; echo "ab64 rc $?"; show /tmp/o/tail64.jsonl
tar -czf $OUT/run6.tgz -C /tmp o
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -2 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -10
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
