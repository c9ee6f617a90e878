#!/bin/bash
# s28 run 1: build, full GPU suite (verifies 7393130 + the u kernel's rank loop in mode 0), the u-kernel A/B
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 120 python3 bench/gemv_time.py --env NF4LORA_UDIAG=0,1,2 --spec "4096,4096:1/4/8/16;4096,14336:1/4/8/16;14336,4096:1/4/16;8192,28672:1/4/16;28672,8192:1" --out /tmp/o/udiag.jsonl > /tmp/o/udiag.log 2>&1; echo "udiag rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/udiag.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],{k:v for k,v in d.items() if k.startswith(('us','ratio','pct','same'))})
    else: print(d)
P
tar -czf $OUT/run1.tgz -C /tmp o
echo "ab at $(( $(date +%s) - t0 )) s"
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -4 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -20
echo "suite at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run1.tgz -C /tmp o
