#!/bin/bash
# s36 run 4: branch wip-fuse-end (SHA=), NODE=0: where the fused grid's remaining time goes at M = 1
# (NF4LORA_FUSE_VARIANT, read at launch into GemvParams: 0 as landed; 1 no __threadfence before the end count
# (correct: the count's reads precede it in the thread); 2 row blocks skip the end count, so the counters never
# reset and the wait passes (timing only); 3 the u kernel instead; 4 the u blocks count without computing u
# (timing only)). The fused tests with variant 1, then gemv_time --env NF4LORA_FUSE_VARIANT=3,0,1,2,4.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
NF4LORA_FUSE_VARIANT=1 timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_gemv.py > /tmp/o/tests_v1.txt 2>&1
echo "tests (variant 1) rc $?"; tail -1 /tmp/o/tests_v1.txt; grep -E "^FAILED|Error" /tmp/o/tests_v1.txt | head -8
tar -czf $OUT/run4.tgz -C /tmp o
timeout 150 python3 bench/gemv_time.py --brief --env NF4LORA_FUSE_VARIANT=3,0,1,2,4 \
  --spec "4096,4096:1;4096,14336:1;14336,4096:1;8192,28672:1" --out /tmp/o/variants.jsonl 2>&1 | tail -5
echo "gemv_time rc ${PIPESTATUS[0]}; done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
