#!/usr/bin/env bash
# Nineteenth session, run 6 (wip-tf32-fold 4bd77fa): dx A/B against main (pairs of MMAs); full GPU suite; layer grid r 16/64, every provider.
export NF4LORA_GIT_SHA=$(cat .s19/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > /dev/null 2>&1 && export PYTHONPATH=/tmp/site
(cd .s19/main && NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/mbuild.log 2>&1; echo $? > /tmp/mbuild.rc) &
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
wait; el "main build rc=$(cat /tmp/mbuild.rc)"
timeout 90 python3 .s19/dxab.py > $OUT/dxab.jsonl 2>/tmp/a.err; el "dxab rc=$?"; tail -3 /tmp/a.err
python3 -c "
import json
for l in open('$OUT/dxab.jsonl'):
    d=json.loads(l); print(d['M'],d['N'],d['K'],d['r'],'main',d['main'],'new',d['new'],'epi',d['epi'],'nolora',d['nolora'],'new/main',d['new/main'],'maxrel',d['new_vs_main_maxrel'])"
timeout 240 python3 -m pytest -q -n 14 tests/ > $OUT/tests-full.txt 2>&1; el "full suite rc=$?"
tail -2 $OUT/tests-full.txt; grep -E "^FAILED|^ERROR" $OUT/tests-full.txt | head -20
for r in 16 64; do timeout 110 python3 bench/bench_qlora.py --out $OUT/grid --shapes 4,2,1,0,3 --ranks $r --providers nf4lora,dense_bf16,bnb_peft,naive --tag s19r$r > /tmp/g$r.log 2>&1; el "grid r$r rc=$?"; tail -2 /tmp/g$r.log; done
el done
