#!/bin/bash
# s28 run 3: main after the u-kernel placement and plan_qlora_dx(r): CUDA tests + gemv_time (default path)
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 250 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/test_cuda_gemv.py tests/test_cuda_dx.py tests/test_cuda_ext.py tests/test_gpu.py tests/test_qlora_fwd.py tests/test_cuda_node.py tests/test_qlora_ops.py > /tmp/o/tests3.txt 2>&1; echo "tests rc $?"; tail -2 /tmp/o/tests3.txt; grep -E "FAILED|Error" /tmp/o/tests3.txt | head
tar -czf $OUT/run3.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv_time rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/gemv_time.jsonl'):
    d=json.loads(l)
    print(d if 'K' not in d else (d['K'],d['N'],d['M'],d['sm_MHz'],d['us'],d['pct_copy']))
P
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
