#!/bin/bash
# s29 run 1: main 51f9695 full build + full GPU suite (verifies ac744ba); branch wip-gemv-diag (NODE=0) register-GEMV knockouts
t0=$(date +%s); mkdir -p /tmp/o
( cp -r .whl .s29/main_tree/ && cd .s29/main_tree && export NF4LORA_GIT_SHA=51f9695 && source bench/device_build.sh > /tmp/o/build_main.txt || { cat /tmp/o/build_main.txt; exit 1; }
  echo "main built at $(( $(date +%s) - t0 )) s"
  timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests_main.txt 2>&1; echo "main suite rc $?"; tail -2 /tmp/o/tests_main.txt
  grep -E "FAILED|Error" /tmp/o/tests_main.txt | head -10 )
echo "main done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run1.tgz -C /tmp o
( export PYTHONPATH= NF4LORA_GIT_SHA=d9ce26f NODE=0 && source bench/device_build.sh > /tmp/o/build_br.txt || { cat /tmp/o/build_br.txt; exit 1; }
  echo "branch built at $(( $(date +%s) - t0 )) s"
  timeout 150 python3 bench/gemv_time.py --rounds 8 --env NF4LORA_ROWS_DIAG=0,1,2,3,4 --spec "4096,4096:1/4;4096,14336:1/4;14336,4096:1/4;8192,28672:1/4;28672,8192:1" --out /tmp/o/diag.jsonl > /tmp/o/diag.log 2>&1; echo "diag rc $?"; tail -3 /tmp/o/diag.log
  python3 - <<'P'
import json
for l in open('/tmp/o/diag.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'],d['N'],d['M'],{k:v for k,v in d.items() if k.startswith(('us','ratio','pct','same'))})
    else: print(d)
P
)
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run1.tgz -C /tmp o
