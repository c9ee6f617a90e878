#!/bin/bash
# s40 run 5 (branch wip-cou SHA=, NODE=0): u by 128-thread blocks of 32 registers (lora_u_small_kernel, one rank and
# row each) beside register GEMV blocks capped at 120 registers (qlora_gemv_rows_co_kernel, __maxnreg__), so that u
# runs beside the GEMV rather than before it on 64 of its SMs (NF4LORA_FUSE_U=3, M <= 4 where M·r <= SMs). The GEMV
# tests with it, then gemv_time FUSE_U 1 (main) / 3 / 0 (the u kernel) at r 64 and 16.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_FUSE_U=3 timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests_co.txt 2>&1
echo "tests co rc $?: $(tail -1 /tmp/o/tests_co.txt)"; grep -E "^FAILED" /tmp/o/tests_co.txt | head -5
tar -czf $OUT/run5.tgz -C /tmp o
SPEC="4096,4096:1/2;4096,14336:1/2;14336,4096:1/2;8192,28672:1/2;28672,8192:1;8192,2048:1"
for r in 64 16; do
  timeout 75 python3 bench/gemv_time.py --brief --r $r --env NF4LORA_FUSE_U=1,3,0 --spec "$SPEC" --out /tmp/o/co_r$r.jsonl 2>&1 | tail -11
  echo "co r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run5.tgz -C /tmp o
done
tar -czf $OUT/run5.tgz -C /tmp o
