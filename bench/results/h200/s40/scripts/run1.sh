#!/bin/bash
# s40 run 1 (branch wip-ustride SHA=, full build with the node, carry [".whl"]): main 9325f0a's mends (not run in
# s39) plus u's staged rows r + 4 floats apart, verified by the full GPU suite; then the register GEMV's staging at
# M > 1 (NF4LORA_ROWS_STAGE 0 = main, 1 = u, 2 = u and B rows) with the suite's GEMV tests under 2, and lora_dot's
# B loads (NF4LORA_B_LOAD 0 = __ldg, 1 = plain, 2 = .cg), gemv_time at r = 64 and 16.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
echo "suite at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run1.tgz -C /tmp o
SPEC="4096,4096:2/4/8;4096,14336:2/4/8;14336,4096:2/4;8192,28672:2/4"
BSPEC="4096,14336:1/8;14336,4096:1/8/16;8192,28672:1/16"
ab() {  # VAR values r spec name timeout
  timeout $6 python3 bench/gemv_time.py --brief --r $3 --env $1=$2 --spec "$4" --out /tmp/o/$5_r$3.jsonl 2>&1 | tail -12
  echo "$5 r$3 at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run1.tgz -C /tmp o
}
ab NF4LORA_ROWS_STAGE 0,1,2 64 "$SPEC" stage 75
ab NF4LORA_B_LOAD 0,1,2 64 "$BSPEC" bload 60
NF4LORA_ROWS_STAGE=2 timeout 100 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/gemv_stage2.txt 2>&1
echo "gemv tests stage2 rc $?: $(tail -1 /tmp/o/gemv_stage2.txt)"; tar -czf $OUT/run1.tgz -C /tmp o
ab NF4LORA_ROWS_STAGE 0,1,2 16 "$SPEC" stage 75
ab NF4LORA_B_LOAD 0,1,2 16 "$BSPEC" bload 60
