#!/bin/bash
# run 7 (main): TMA ring tiles 1 vs 2 at M 9-16 on shapes where tiles 2 splits K (N <= 4224) and controls
export NF4LORA_GIT_SHA=$1
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
timeout 200 python3 .s25/tiles_ab.py --env GEMV_TILES_AB=2,1 --rounds 14 --spec "4096,4096:9/12/16;4096,1024:9/16;4096,2048:16;2048,2048:16;2048,4096:16;3072,4096:16;6144,4096:16;8192,4096:16;8192,1024:16;11008,4096:16;14336,4096:9/16;5120,5120:16;4096,6144:16" --out /tmp/o/tiles_ab2.jsonl 2>&1 | python3 -c "
import sys,json
for l in sys.stdin:
    try: r=json.loads(l)
    except Exception: print(l,end=''); continue
    print(r.get('K'),r.get('N'),r.get('M'),r.get('sm_MHz'),r.get('us[GEMV_TILES_AB=2]'),r.get('ratio[GEMV_TILES_AB=1/2]'),r.get('same_bits'))"
echo "done at $(( $(date +%s) - t0 )) s"
cp /tmp/o/tiles_ab2.jsonl $OUT/
