#!/bin/bash
# run 6 (wip-ws-lut + ring modes): same-bits tests, ws A/B modes 0,4,5,2,3; tiles A/B (fixed: plan per call)
export NF4LORA_GIT_SHA=$1
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_mma.py tests/test_cuda_dx.py -k "pair_table or identity" > /tmp/o/tests.txt 2>&1; tail -3 /tmp/o/tests.txt
echo "tests at $(( $(date +%s) - t0 )) s"
timeout 240 python3 bench/ws_lut_ab.py --rounds 10 --out /tmp/o/ring_ab.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print(r['op'],r['M'],r['K'],r['N'],r['sm_MHz'],{k:v for k,v in r.items() if k.startswith('ratio') or k.startswith('same') or k=='us[0]'})"
echo "ab at $(( $(date +%s) - t0 )) s"
timeout 120 python3 .s25/tiles_ab.py --env GEMV_TILES_AB=2,1 --spec "4096,14336:9/16;14336,4096:16;8192,28672:16;4096,4096:16" --out /tmp/o/tiles_ab.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path','device')})"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run6.tgz -C /tmp o
