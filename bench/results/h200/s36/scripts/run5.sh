#!/bin/bash
# s36 run 5: branch wip-fuse-end2 (SHA=), NODE=0: run 4's variant 1 made the code — the row blocks' end count without
# the fence (their acquire of the u count orders it), an acquiring atom (the reset after every block's count), the u
# blocks' fence kept. The GEMV / extension tests, then gemv_time --env NF4LORA_FUSE_U=0,1 at M = 1.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "^FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run5.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --brief --env NF4LORA_FUSE_U=0,1 \
  --spec "4096,4096:1;4096,14336:1;14336,4096:1;8192,28672:1;28672,8192:1" --out /tmp/o/fuseu.jsonl 2>&1 | tail -5
echo "gemv_time rc ${PIPESTATUS[0]}; done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
