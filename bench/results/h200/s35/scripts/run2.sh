#!/bin/bash
# s35 run 2: branch wip-rows16w8 (SHA=) built NODE=0 — the register GEMV at M 9-16 (NT = 2: two n-tiles of x,
# 8-warp blocks of up to 255 registers, 3 tiles of 2 KiB of codes ahead per warp), run only where pipeline "rows" is
# asked for (auto unchanged). GEMV / extension tests (rows now at every M <= 16), then in one process per A/B:
# (a) --attr GEMV_PIPELINE=tma,rows at M 9 / 12 / 16 on the issue shapes; (b) the rows kernel's tiles ahead,
# NF4LORA_ROWS_KD16 = 3 (default), 2, 4, at M = 16.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 150 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py > /tmp/o/tests.txt 2>&1
echo "tests rc $?"; tail -1 /tmp/o/tests.txt; grep -E "FAILED|Error" /tmp/o/tests.txt | head -8
tar -czf $OUT/run2.tgz -C /tmp o
echo "tests done at $(( $(date +%s) - t0 )) s"
timeout 150 python3 bench/gemv_time.py --brief --attr GEMV_PIPELINE=tma,rows \
  --spec "4096,4096:9/16;4096,14336:9/12/16;14336,4096:9/16;8192,28672:9/16;28672,8192:16" \
  --out /tmp/o/rows16.jsonl 2>&1 | tail -12; echo "gemv_time a rc ${PIPESTATUS[0]}"
tar -czf $OUT/run2.tgz -C /tmp o
timeout 120 python3 -c "
import runpy, sys
from nf4lora import _cuda_ext
_cuda_ext.GEMV_PIPELINE = 'rows'
sys.argv = ['gemv_time.py', '--brief', '--env', 'NF4LORA_ROWS_KD16=3,2,4', '--out', '/tmp/o/kd16.jsonl',
            '--spec', '4096,14336:16;14336,4096:16;8192,28672:16']
runpy.run_path('bench/gemv_time.py', run_name='__main__')
" 2>&1 | tail -5; echo "gemv_time b rc ${PIPESTATUS[0]}"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run2.tgz -C /tmp o
