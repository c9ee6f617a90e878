#!/usr/bin/env bash
# Eighteenth session, run 4: dx fold vs epilogue interleaved; layer grid r 16/64 (nf4lora, dense_bf16, bnb_peft); full GPU suite.
export NF4LORA_GIT_SHA=$(cat .s18/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > /dev/null 2>&1 && export PYTHONPATH=/tmp/site
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
timeout 120 python3 .s18/dxtime3.py de8d4ce > $OUT/dxtime3.jsonl 2>/tmp/d.err; el "dxtime3 rc=$?"; tail -3 /tmp/d.err
python3 -c "
import json
for l in open('$OUT/dxtime3.jsonl'):
    d=json.loads(l); print(d['M'],d['N'],d['K'],d['r'],'nolora',d['nolora'],'fold',d['fold'],'epi',d['epi'],'fold/epi',d['fold_vs_epi'],'cost fold/epi',d['lora_cost_fold'],d['lora_cost_epi'])"
for r in 16 64; do timeout 150 python3 bench/bench_qlora.py --out $OUT/grid --shapes 4,2,1,0,3 --ranks $r --providers nf4lora,dense_bf16,bnb_peft --tag s18r$r > /tmp/g$r.log 2>&1; el "grid r$r rc=$?"; tail -3 /tmp/g$r.log; done
timeout 250 python3 -m pytest -q -n 14 tests/ > $OUT/tests-full.txt 2>&1; el "full suite rc=$?"
tail -2 $OUT/tests-full.txt; grep -E "^FAILED|^ERROR" $OUT/tests-full.txt | head -20
el done
