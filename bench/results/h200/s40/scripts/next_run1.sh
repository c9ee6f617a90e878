#!/bin/bash
# Next session's first run (main SHA=, full build with the node, carry [".whl"]): the full GPU suite at main's head,
# the first with lora_u_small_kernel / qlora_gemv_rows_co_kernel as the default at r >= 64, M·r <= SMs (s40 run 5
# ran test_cuda_gemv with it forced, not the suite) and the first run of test_u_beside_the_register_gemv_at_rank_64;
# then gemv_time --roof at r 16 / 64 and NF4LORA_FUSE_U=1,0 at r = 64, M 1-2 (the rule against the u kernel).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
echo "suite at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/next1.tgz -C /tmp o
for r in 16 64; do
  timeout 70 python3 bench/gemv_time.py --brief --roof --r $r --out /tmp/o/gemv_r$r.jsonl 2>&1 | tail -20
  echo "gemv r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/next1.tgz -C /tmp o
done
timeout 60 python3 bench/gemv_time.py --brief --r 64 --env NF4LORA_FUSE_U=1,0 \
  --spec "4096,4096:1/2;4096,14336:1/2;14336,4096:1/2;8192,28672:1/2;28672,8192:1" --out /tmp/o/co_r64.jsonl 2>&1 | tail -10
tar -czf $OUT/next1.tgz -C /tmp o
