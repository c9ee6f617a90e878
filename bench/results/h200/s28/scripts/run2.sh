#!/bin/bash
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_UDIAG=2 timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_gpu.py tests/test_qlora_fwd.py > /tmp/o/tests2.txt 2>&1; echo "tests(UDIAG=2) rc $?"; tail -2 /tmp/o/tests2.txt; grep FAILED /tmp/o/tests2.txt | head
timeout 200 python3 bench/gemv_time.py --env NF4LORA_UDIAG=0,2,1 --spec "4096,4096:1/2/4/8;4096,14336:1/2/4/8;14336,4096:1/4/8;8192,28672:1/4/8;28672,8192:1/4;4096,1024:1;4096,6144:1/4;11008,4096:1" --out /tmp/o/udiag2.jsonl > /tmp/o/udiag2.log 2>&1; echo "udiag rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/udiag2.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d['sm_MHz'],[d[k] for k in d if k.startswith('us[')],'pct',[d[k] for k in d if k.startswith('pct')][:2],[d[k] for k in d if k.startswith('ratio')])
    else: print(d)
P
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
