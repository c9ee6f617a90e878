#!/bin/bash
# s39 run 4 (branch wip-epi SHA=, NODE=0): the LoRA term staged in shared memory (stage_lora). NF4LORA_GEMV_EPI: 0
# main's per-output global loads, 1 u and the block's B rows staged, 2 u only. test_cuda_gemv with EPI=1 (all), the
# new large-rank test with EPI=2; gemv_time EPI=0,1,2 at r = 64 and 16 (same_bits expected: lora_dot's order).
# The fused-u work rule is built in (run 2's rule 1).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
NODE=0 source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_GEMV_EPI=1 timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1; echo "tests rc $?"; tail -1 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -5
NF4LORA_GEMV_EPI=2 timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_gemv.py -k "staged_or_not or matches_reference" > /tmp/o/tests2.txt 2>&1; echo "tests2 rc $?"; tail -1 /tmp/o/tests2.txt
tar -czf $OUT/run4.tgz -C /tmp o
for r in 64 16; do
  timeout 120 python3 bench/gemv_time.py --brief --r $r --env NF4LORA_GEMV_EPI=0,1,2 \
    --spec "4096,4096:1/8/16;4096,14336:1/4/8/16;14336,4096:1/4/8/16;8192,28672:1/4/8/16" --out /tmp/o/epi_r$r.jsonl 2>&1 | tail -15
  echo "epi r$r at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run4.tgz -C /tmp o
done
