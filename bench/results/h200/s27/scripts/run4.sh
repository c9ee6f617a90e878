#!/bin/bash
# s27 run 4 (rs dx the auto dx kernel): full build, full GPU suite, dx_ab (ws vs rs, and auto)
export NF4LORA_GIT_SHA=${SHA:?pass SHA=<commit>: the device copy's git HEAD is not the tree's}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
timeout 270 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests.txt 2>&1; echo "suite rc $?"; tail -4 /tmp/o/tests.txt
grep -E "FAILED|Error" /tmp/o/tests.txt | head -20
echo "suite at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
timeout $((560 - ($(date +%s) - t0))) python3 bench/dx_ab.py --variants ws,rs,auto --rounds 6 --out /tmp/o/dx_ab.jsonl > /tmp/o/dx_ab.log 2>&1; echo "dx_ab rc $?"; python3 -c "
import json
for l in open('/tmp/o/dx_ab.jsonl'):
    d=json.loads(l); print(d['M'],d['K'],d['N'],d['sm_MHz'],d['us[ws]'],d['us[rs]'],d['ratio[rs/ws]'],d['ratio[auto/ws]'])"
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run4.tgz -C /tmp o
