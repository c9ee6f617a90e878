#!/bin/bash
# s31 run 5: branch wip-prologue candidate (.s31/pro with the bitsandbytes wheel in .s31/pro/.whl; carry [".s31"]):
# TMA GEMV — the first stage's scales loaded before the tables, the tables in one memory wait; register GEMV — main's
# order, its two tables in one wait. NF4LORA_PRO=1 = main's prologues. Full build; gemv_time A/B (1, 0); full suite.
t0=$(date +%s); mkdir -p /tmp/o
cd .s31/pro && export NF4LORA_GIT_SHA=$(cat ../pro.sha) && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_PRO=1,0 --spec "4096,4096:1/16;4096,14336:1/4/16;14336,4096:1/4/16;8192,28672:1/4/16" --out /tmp/o/cand.jsonl > /tmp/o/cand.log 2>&1; echo "gemv_time rc $?"
python3 -c "
import json
for l in open('/tmp/o/cand.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d.get('sm_MHz'),[d[k] for k in d if k.startswith('us[')],[d[k] for k in d if k.startswith('ratio')],d.get('same_bits'))
    else: print(d)
"
echo "at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
timeout 270 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
