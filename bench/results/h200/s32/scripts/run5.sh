#!/bin/bash
# s32 run 5: branch wip-epi-early (SHA=) built NODE=0: NF4LORA_EARLY=1 loads the outputs' LoRA terms and biases before the
# epilogue's barrier (register GEMV) and split-K handshake. test_cuda_gemv with it on; gemv_time A/B (r = 16, r = 64).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_EARLY=1 timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
timeout 200 python3 bench/gemv_time.py --env NF4LORA_EARLY=0,1 --out /tmp/o/pf16.jsonl > /tmp/o/pf16.log 2>&1; echo "gemv_time r16 rc $?"
python3 -c "
import json,sys
for l in open('/tmp/o/pf16.jsonl'):
    r=json.loads(l)
    if 'M' in r: print(r['K'],r['N'],r['M'],r['us[NF4LORA_EARLY=0]'],r['us[NF4LORA_EARLY=1]'],r['ratio[NF4LORA_EARLY=1/0]'],r['same_bits'],r['sm_MHz'])
"
tar -czf $OUT/run5.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --r 64 --env NF4LORA_EARLY=0,1 --spec "4096,14336:1/4/16;8192,28672:1/4/16" --out /tmp/o/pf64.jsonl > /tmp/o/pf64.log 2>&1; echo "gemv_time r64 rc $?"
python3 -c "
import json,sys
for l in open('/tmp/o/pf64.jsonl'):
    r=json.loads(l)
    if 'M' in r: print(r['K'],r['N'],r['M'],r['us[NF4LORA_EARLY=0]'],r['us[NF4LORA_EARLY=1]'],r['ratio[NF4LORA_EARLY=1/0]'],r['same_bits'])
"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
