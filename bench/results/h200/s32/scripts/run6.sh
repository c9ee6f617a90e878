#!/bin/bash
# s32 run 6: branch wip-u-pdl (SHA=) built NODE=0: NF4LORA_UPDL=1 launches the u kernel as the previous grid's
# programmatic dependent (it waits for that grid before reading anything, then lets its GEMV start) and the GEMVs let
# the next launch start at their entry. test_cuda_gemv with it on; chained layers (scripts/chain.py: same bits as
# with a sync after every call); gemv_time A/B (default spec, r = 16).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_UPDL=1 timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
timeout 100 python3 bench/results/h200/s32/scripts/chain.py > /tmp/o/chain.txt 2>&1; echo "chain rc $?"; tail -7 /tmp/o/chain.txt
timeout 200 python3 bench/gemv_time.py --env NF4LORA_UPDL=0,1 --out /tmp/o/updl.jsonl > /tmp/o/updl.log 2>&1; echo "gemv_time rc $?"
python3 -c "
import json
for l in open('/tmp/o/updl.jsonl'):
    r=json.loads(l)
    if 'M' in r: print(r['K'],r['N'],r['M'],r['us[NF4LORA_UPDL=0]'],r['us[NF4LORA_UPDL=1]'],r['ratio[NF4LORA_UPDL=1/0]'],r['same_bits'],r['sm_MHz'])
"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
