#!/bin/bash
# Prepared in s29 for the next session's first device call (not run yet). Before it, on the CPU machine:
#   echo .s30/ >> .git/info/exclude; mkdir -p .s30 && for b in wip-rows-fold wip-gemv-layout; do rm -rf .s30/$b;
#     mkdir -p .s30/$b; git archive $b | tar -x -C .s30/$b; done
#   git rev-parse --short wip-rows-fold > .s30/fold.sha; git rev-parse --short wip-gemv-layout > .s30/layout.sha
#   then run `bash bench/results/h200/s29/scripts/next_run1.sh` with carry [".s30"] (no bitsandbytes needed).
# 1. wip-rows-fold: NF4LORA_ROWS_WALK=0,1 (1 = every warp walks: the pair table's base folded into LDS again),
#    on full-slice shapes and on shapes with idle warps (2048x8192: 8 of 16; 14336x4096: 2 of 16); gemv tests with it on.
# 2. wip-gemv-layout: NF4LORA_ROWS_DIAG=0,12,13,14 (contiguous code loads / no lookups / both; wrong results).
t0=$(date +%s); mkdir -p /tmp/o
show() { python3 - "$1" <<'P'
import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],{k.split('=')[-1]:v for k,v in d.items() if k.startswith(('us','ratio','same','pct'))})
    else: print(d)
P
}
( cd .s30/wip-rows-fold && export NF4LORA_GIT_SHA=$(cat ../fold.sha 2>/dev/null || echo wip-rows-fold) NODE=0 && source bench/device_build.sh > /tmp/o/build_fold.txt || { cat /tmp/o/build_fold.txt; exit 1; }
  echo "fold built at $(( $(date +%s) - t0 )) s"
  timeout 90 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_WALK=0,1 --spec "4096,4096:1/4;4096,14336:1/4/8;14336,4096:1/4;8192,28672:1/4;28672,8192:1/4;2048,8192:1/4;11008,4096:1" --out /tmp/o/walk.jsonl > /tmp/o/walk.log 2>&1; echo "walk rc $?"; show /tmp/o/walk.jsonl
  NF4LORA_ROWS_WALK=1 timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/gemv_walk.txt 2>&1; echo "gemv tests (walk) rc $?"; tail -1 /tmp/o/gemv_walk.txt )
tar -czf $OUT/next_run1.tgz -C /tmp o
( cd .s30/wip-gemv-layout && export PYTHONPATH= NF4LORA_GIT_SHA=$(cat ../layout.sha 2>/dev/null || echo wip-gemv-layout) NODE=0 && source bench/device_build.sh > /tmp/o/build_layout.txt || { cat /tmp/o/build_layout.txt; exit 1; }
  echo "layout built at $(( $(date +%s) - t0 )) s"
  timeout 90 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_DIAG=0,12,13,14 --spec "4096,4096:1;4096,14336:1/4;14336,4096:1/4;8192,28672:1/4" --out /tmp/o/layout.jsonl > /tmp/o/layout.log 2>&1; echo "layout rc $?"; show /tmp/o/layout.jsonl )
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next_run1.tgz -C /tmp o
