#!/bin/bash
# s40 run 2 (branch wip-ustride SHA=, NODE=0): the staging rule's edges. r = 64: the register GEMV's staging of u and
# B rows (NF4LORA_ROWS_STAGE 0 / 2) at M 3, 5, 6 (run 1: M = 2 lost, M 4 and 8 gained). r = 16 and 32 with that
# staging on: NF4LORA_STAGE_MIN_RANK 32 (main's rule: r > 32 stages) against 8 (both pipelines stage) at M 4 / 8 / 16.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
ab() {  # VAR values r spec name timeout
  timeout $6 python3 bench/gemv_time.py --brief --r $3 --env $1=$2 --spec "$4" --out /tmp/o/$5_r$3.jsonl 2>&1 | tail -14
  echo "$5 r$3 at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run2.tgz -C /tmp o
}
ab NF4LORA_ROWS_STAGE 0,2 64 "4096,4096:3/5/6;4096,14336:3/5/6;14336,4096:3;8192,28672:3" edge 80
export NF4LORA_ROWS_STAGE=2
MSPEC="4096,4096:4/8/16;4096,14336:4/8/16;14336,4096:4/8/16;8192,28672:4/8/16"
ab NF4LORA_STAGE_MIN_RANK 32,8 16 "$MSPEC" minrank 90
ab NF4LORA_STAGE_MIN_RANK 32,8 32 "$MSPEC" minrank 90
