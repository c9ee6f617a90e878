#!/bin/bash
# run 7: branch wip-gemv-even (8c5d424): tests + A/B; then the landed file (no switch): tests + gemv_time default
t0=$(date +%s)
f() { python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print({k:v for k,v in r.items() if k not in ('r','weights','calls','path','device') and not k.startswith('pct')})"; }
export NF4LORA_GIT_SHA=8c5d424
NODE=0 source bench/device_build.sh || exit 1
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > $OUT/test_branch.txt 2>&1; tail -2 $OUT/test_branch.txt
echo "branch tests at $(( $(date +%s) - t0 )) s"
timeout 90 python3 bench/gemv_time.py --env NF4LORA_GEMV_EVEN=2,0,1 --spec "14336,4096:1/2/4;11008,4096:1/4;2048,8192:1/4;3072,8192:1;4096,14336:1;8192,28672:1" --out $OUT/even_ab.jsonl 2>&1 | f
echo "A/B at $(( $(date +%s) - t0 )) s"
cp .s24/landed_qlora_gemv.cu csrc/qlora_gemv.cu
export NF4LORA_GIT_SHA=landed
NODE=0 source bench/device_build.sh || exit 1
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > $OUT/test_landed.txt 2>&1; tail -2 $OUT/test_landed.txt
echo "landed tests at $(( $(date +%s) - t0 )) s"
timeout 60 python3 bench/gemv_time.py --out $OUT/gemv_time.jsonl 2>&1 | f
echo "all at $(( $(date +%s) - t0 )) s"
