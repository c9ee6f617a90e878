#!/bin/bash
# s31 run 2: main (SHA=), full build; the full GPU suite (first run of f7cd6f7's host code and of the 320x261
# exact-identity tests); Nsight Compute source counters of the register GEMV at M = 1 after 3021a4a; gemv_time.
# carry [".whl"] (bitsandbytes wheel for the parity tests).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
for s in "1 14336 4096" "1 8192 28672"; do
  set -- $s; bench/ncu_kernel.sh qlora_gemv_rows ncu_m${1}_${2}x${3} /tmp/o python3 bench/ncu_gemv.py $1 $2 $3
  echo "at $(( $(date +%s) - t0 )) s"
done
tar -czf $OUT/run2.tgz -C /tmp o
timeout 90 python3 bench/gemv_time.py --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv_time rc $?"
cut -c1-220 /tmp/o/gemv_time.jsonl
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
