#!/bin/bash
# s35 run 8: branch wip-fuse-u (SHA=) built NODE=0 — u = x̃·Aᵀ computed by extra blocks of the register GEMV's own grid
# (kFusedU: one launch a forward, launched as the previous kernel's programmatic dependent; the row blocks stage their
# tables and first tiles' loads before the wait for it, then load x; their LoRA term waits on the u blocks' count)
# where the row blocks and the u blocks fit one wave; NF4LORA_FUSE_U=0 keeps the u kernel. GEMV / extension tests
# (the fused path by default), then gemv_time --env NF4LORA_FUSE_U=0,1 (run 7's knockout: 0.843-0.966x).
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 120 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "^FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run8.tgz -C /tmp o
# (SPEC: next_run1.sh's shapes; the default is what run 8 ran)
timeout 120 python3 bench/gemv_time.py --brief --env NF4LORA_FUSE_U=0,1 \
  --spec "${SPEC:-4096,4096:1;4096,14336:1/4/8;14336,4096:1/4;8192,28672:1/4;28672,8192:1}" \
  --out /tmp/o/fuseu.jsonl 2>&1 | tail -9; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run8.tgz -C /tmp o
