#!/bin/bash
# s30 run 5: branch wip-rows-late (archived into .s30/late; its default rows kernels are SASS-identical to
# main's landed ones): full build; NF4LORA_ROWS_EARLY=1,0 (1 = the scale bytes picked at the load, as before;
# 0 = picked where used) in one process; the full GPU suite with the default (late) kernels.
t0=$(date +%s); mkdir -p /tmp/o
show() { python3 - "$1" <<'P'
import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],{k.split('=')[-1]:v for k,v in d.items() if k.startswith(('us','ratio','same','pct'))})
    else: print(d)
P
}
cp -r .whl .s30/late/ 2>/dev/null; cd .s30/late && export NF4LORA_GIT_SHA=$(cat ../late.sha) && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 100 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_EARLY=1,0 --spec "4096,4096:1/4;4096,14336:1/4/8;14336,4096:1/4;8192,28672:1/4;28672,8192:1/4;2048,8192:1;11008,4096:1" --out /tmp/o/late.jsonl > /tmp/o/late.log 2>&1; echo "late rc $?"; show /tmp/o/late.jsonl
tar -czf $OUT/run5.tgz -C /tmp o
echo "a/b done at $(( $(date +%s) - t0 )) s"
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -10
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
