#!/bin/bash
# s29 run 3: branch wip-rows-cluster (full build): cluster residency; the cluster / partials A/B; gemv tests both ways; full suite
t0=$(date +%s); mkdir -p /tmp/o
export NF4LORA_GIT_SHA=${SHA:?}
nvcc -o /tmp/clusters .s29/clusters.cu && /tmp/clusters | tee /tmp/o/clusters.txt
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
SPEC="14336,4096:1/2/4;8192,28672:1/2/4;28672,8192:1/4;11008,4096:1/4;8192,8192:1/4;4096,14336:1"
timeout 120 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_CLUSTER=0,1 --spec "$SPEC" --out /tmp/o/cluster_ab.jsonl > /tmp/o/cluster_ab.log 2>&1; echo "ab rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/cluster_ab.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],d.get('sm_MHz'),{k.replace('NF4LORA_ROWS_CLUSTER=',''):v for k,v in d.items() if k.startswith(('us','ratio','same','pct'))})
    else: print(d)
P
tar -czf $OUT/run3.tgz -C /tmp o
NF4LORA_ROWS_CLUSTER=0 timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py -k "not memcheck" > /tmp/o/gemv_partials.txt 2>&1; echo "gemv tests (partials) rc $?"; tail -1 /tmp/o/gemv_partials.txt; grep FAILED /tmp/o/gemv_partials.txt | head -5
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -2 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -10
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
