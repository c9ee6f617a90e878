#!/bin/bash
# s31 run 3: branch wip-prologue (a git archive in .s31/pro; carry [".s31"]): the small-M GEMVs' decode tables staged
# after the first code / x / scale loads are issued, one memory wait for all tables; NF4LORA_PRO=1 the order before.
# NODE=0 build; test_cuda_gemv + test_qlora_fwd with the new order (default); gemv_time A/B (1 = before, 0 = new);
# Nsight Compute of the new register GEMV at M = 1 on 14336x4096.
t0=$(date +%s); mkdir -p /tmp/o
cd .s31/pro && export NF4LORA_GIT_SHA=$(cat ../pro.sha) NODE=0 && source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_qlora_fwd.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
NF4LORA_PRO=1 timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests_old.txt 2>&1; echo "tests (PRO=1) rc $?"; tail -1 /tmp/o/tests_old.txt
tar -czf $OUT/run3.tgz -C /tmp o
timeout 240 python3 bench/gemv_time.py --rounds 10 --env NF4LORA_PRO=1,0 --out /tmp/o/pro.jsonl > /tmp/o/pro.log 2>&1; echo "gemv_time rc $?"
python3 -c "
import json
for l in open('/tmp/o/pro.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d.get('sm_MHz'),{k:v for k,v in d.items() if k.startswith(('us','ratio','same','pct'))})
    else: print(d)
"
echo "at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
bench/ncu_kernel.sh qlora_gemv_rows ncu_m1_14336x4096 /tmp/o python3 bench/ncu_gemv.py 1 14336 4096
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
