#!/bin/bash
# s36 run 2: wip-fuse-u (SHA=) with the u blocks first in the fused grid's linear order (a row block waits only for
# blocks started before it), built NODE=0: the GEMV / extension tests (the green-context test among them), then
# gemv_time --env NF4LORA_FUSE_U=0,1 at M 1 / 2 on the issue shapes; then the s35 order (u blocks last: c87911f's
# qlora_gemv.cu, carried untracked as u_last_gemv.cu) rebuilt, and the green-context test alone on it, which should
# fail (hang, killed after 60 s). Results in $OUT/run2.tgz.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 200 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "^FAILED|^SKIPPED.*green|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run2.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --brief --env NF4LORA_FUSE_U=0,1 \
  --spec "4096,4096:1/2;4096,14336:1/2;14336,4096:1/2;8192,28672:1/2;28672,8192:1" \
  --out /tmp/o/fuseu.jsonl 2>&1 | tail -9; echo "gemv_time rc ${PIPESTATUS[0]}"
echo "at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
cp u_last_gemv.cu csrc/qlora_gemv.cu
source bench/device_build.sh > /tmp/o/build_u_last.txt || { tail -5 /tmp/o/build_u_last.txt; exit 1; }
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda_gemv.py -k whole_wave > /tmp/o/tests_u_last.txt 2>&1
echo "u-last green test rc $? (1 expected)"; grep -E "passed|failed|hung" /tmp/o/tests_u_last.txt | head -3
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv > /tmp/o/smi_after.txt 2>&1
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
