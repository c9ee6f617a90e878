#!/bin/bash
# s38 run 5 (branch wip-u-rlog SHA=, NODE=0, carry [".whl"]): the fixed plan test and the u tests; gemv_time's A/B of
# the M = 16 u kernel's ranks per block (NF4LORA_U_RLOG: 2^v ranks a block; main: 0) at r = 64 and 16; the layer
# grid at M = 128 (fwd, fwdbwd; r 16 / 64) with run 4's u kernel.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 90 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_mma.py tests/test_cuda_dx.py -k "plan_splits or lora_u" > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
tar -czf $OUT/run5.tgz -C /tmp o
for r in 64 16; do
  timeout 130 python3 bench/gemv_time.py --brief --r $r --rounds 8 --env NF4LORA_U_RLOG=0,2,3,5 \
    --spec "4096,4096:16;4096,14336:16;14336,4096:8/16;8192,28672:16" --out /tmp/o/rlog_r$r.jsonl 2>&1 | tail -5
  echo "rlog r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run5.tgz -C /tmp o
done
timeout $((560 - ($(date +%s) - t0))) python3 bench/bench_qlora.py --out /tmp/o/grid --shapes 0,1,2,4 --ranks 16,64 --ms 128 \
  --modes fwd,fwdbwd --providers nf4lora,dense_bf16,bnb_peft --tag s38m128-$SHA > /tmp/o/grid.log 2>&1; echo "grid rc $?"
grep "| 128 |" /tmp/o/grid/summary.md | head -16
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run5.tgz -C /tmp o
