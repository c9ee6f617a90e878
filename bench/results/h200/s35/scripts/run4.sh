#!/bin/bash
# s35 run 4: branch wip-epi2 (SHA=) built NODE=0 — the small-M epilogues' outputs batched (every output's B-row / u-row
# / bias loads before the first store: a store may alias the next output's loads for the compiler, so each output's
# round trips ran in order). NF4LORA_EPI_BATCH=1: the TMA ring at M 9-16 with 32-row blocks (2 outputs a thread) and
# the register pipeline at M 5-8 (2 outputs a loop trip in finish_outputs). test_cuda_gemv with it on, then gemv_time
# --env NF4LORA_EPI_BATCH=0,1 (one process, interleaved CUDA graphs).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_EPI_BATCH=1 timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run4.tgz -C /tmp o
timeout 200 python3 bench/gemv_time.py --brief --env NF4LORA_EPI_BATCH=0,1 \
  --spec "4096,4096:16;4096,14336:1/5/8/12/16;14336,4096:8/16;8192,28672:8/16;28672,8192:8/16" \
  --out /tmp/o/epi2.jsonl 2>&1 | tail -12; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
