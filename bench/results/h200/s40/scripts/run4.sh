#!/bin/bash
# s40 run 4 (branch wip-spread-u SHA=, NODE=0): u computed by the register GEMV's own row blocks at M = 1 (kSpreadU,
# NF4LORA_FUSE_U=2): each block takes a group of 2^sl ranks at its start, the epilogue helps with untaken groups. The
# GEMV tests with every M = 1 register launch spread (timeouts: a hang ends the step), then gemv_time FUSE_U 1 (main's
# rule: u blocks in the grid or the u kernel) against 2 at M = 1, r 16 / 32 / 64.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_FUSE_U=2 timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests_spread.txt 2>&1
echo "tests spread rc $?: $(tail -1 /tmp/o/tests_spread.txt)"; grep -E "^FAILED|Error" /tmp/o/tests_spread.txt | head -5
tar -czf $OUT/run4.tgz -C /tmp o
SPEC="4096,4096:1;4096,14336:1;14336,4096:1;8192,28672:1;28672,8192:1;8192,2048:1"
for r in 64 16 32; do
  timeout 60 python3 bench/gemv_time.py --brief --r $r --env NF4LORA_FUSE_U=1,2 --spec "$SPEC" --out /tmp/o/spread_r$r.jsonl 2>&1 | tail -7
  echo "spread r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run4.tgz -C /tmp o
done
