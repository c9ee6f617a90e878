#!/bin/bash
# s26 run 8 (main + rs_ab --block-m): wgmma_rs vs wgmma_ws at M 128-1024 with the plan's block_m
export NF4LORA_GIT_SHA=66db20c; t0=$(date +%s)
NODE=0 source bench/device_build.sh >/dev/null || exit 1
echo "built at $(( $(date +%s) - t0 )) s"
timeout 100 python3 bench/rs_ab.py --block-m 0 --rounds 8 --shapes "128,4096,14336;256,4096,14336;512,4096,14336;128,8192,28672;512,8192,28672;256,14336,4096;512,4096,4096;1024,4096,4096" --out $OUT/rs_ab_midm.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: d=json.loads(l)
    except Exception: print(l.strip()); continue
    print(d['M'],d['K'],d['N'],d['sm_MHz'],d['us[wgmma_ws]'],d['us[wgmma_rs]'],d['ratio[rs/ws]'],d['same_bits'])"
echo "done at $(( $(date +%s) - t0 )) s"
