#!/bin/bash
# s31 run 4: branch wip-prologue (.s31/pro, carry [".s31"]): NF4LORA_PRO = 1 the prologue order of main, 0 the tables
# staged after the first code loads (run 3: slower at M 1-8), 2 the tables' loads first, their stores after the code
# loads. NODE=0 build; test_cuda_gemv under 2 and 0; gemv_time A/B of the three.
t0=$(date +%s); mkdir -p /tmp/o
cd .s31/pro && export NF4LORA_GIT_SHA=$(cat ../pro.sha) NODE=0 && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
for v in 2 0; do
NF4LORA_PRO=$v timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests_pro$v.txt 2>&1; echo "tests (PRO=$v) rc $?"; tail -1 /tmp/o/tests_pro$v.txt
done
tar -czf $OUT/run4.tgz -C /tmp o
timeout 330 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_PRO=1,0,2 --out /tmp/o/pro3.jsonl > /tmp/o/pro3.log 2>&1; echo "gemv_time rc $?"
python3 -c "
import json
for l in open('/tmp/o/pro3.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d.get('sm_MHz'),[d[k] for k in d if k.startswith('us[')],[d[k] for k in d if k.startswith('ratio')],d.get('same_bits'))
    else: print(d)
"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
