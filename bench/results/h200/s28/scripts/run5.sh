#!/bin/bash
# s28 run 5: main deab578 full build + full GPU suite; branch wip-rows16xa (NODE=0) gemv tests + rows/tma A/B
t0=$(date +%s); mkdir -p /tmp/o
( cp -r .whl .s28/main_tree/ && cd .s28/main_tree && export NF4LORA_GIT_SHA=deab578 && source bench/device_build.sh > /tmp/o/build_main.txt || { cat /tmp/o/build_main.txt; exit 1; }
  echo "main built at $(( $(date +%s) - t0 )) s"
  timeout 280 python3 -m pytest -q -n 14 -p no:cacheprovider -rs tests/ > /tmp/o/tests_main.txt 2>&1; echo "main suite rc $?"; tail -2 /tmp/o/tests_main.txt
  grep -E "FAILED|Error" /tmp/o/tests_main.txt | head -10 )
echo "main done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
( export PYTHONPATH= NF4LORA_GIT_SHA=be3c6c0 NODE=0 && source bench/device_build.sh > /tmp/o/build_br.txt || { cat /tmp/o/build_br.txt; exit 1; }
  echo "branch built at $(( $(date +%s) - t0 )) s"
  timeout 100 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py -k "not memcheck" > /tmp/o/tests_br.txt 2>&1; echo "branch gemv tests rc $?"; tail -2 /tmp/o/tests_br.txt
  grep -E "FAILED|Error|assert" /tmp/o/tests_br.txt | head -10
  timeout 90 python3 .s28/rows16_ab.py > /tmp/o/rows16_ab.jsonl 2> /tmp/o/rows16_ab.err; echo "ab rc $?"; cat /tmp/o/rows16_ab.jsonl; tail -2 /tmp/o/rows16_ab.err )
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/run5.tgz -C /tmp o
