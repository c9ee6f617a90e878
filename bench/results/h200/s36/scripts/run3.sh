#!/bin/bash
# s36 run 3: wip-fuse-u (SHA=) with the fused u at M = 1 only (device code = run 2's): full build, full GPU suite, gemv_time
# (default spec), bench_qlora forward at M = 1 (r 16) against naive / dense / bitsandbytes.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 300 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -2 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -10
echo "suite done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
timeout 120 python3 bench/gemv_time.py --out /tmp/o/gemv_time.jsonl > /tmp/o/gemv_time.log 2>&1; echo "gemv_time rc $?"
python3 - <<'P'
import json
for l in open('/tmp/o/gemv_time.jsonl'):
    d=json.loads(l)
    print(d if 'K' not in d else (d['K'],d['N'],d['M'],d['sm_MHz'],d['us'],d['pct_copy']))
P
tar -czf $OUT/run3.tgz -C /tmp o
timeout 150 python3 bench/bench_qlora.py --out /tmp/o/bench --modes fwd --ms 1 --ranks 16 --tag s36fwd > /tmp/o/bench.log 2>&1; echo "bench rc $?"; tail -5 /tmp/o/bench.log
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run3.tgz -C /tmp o
