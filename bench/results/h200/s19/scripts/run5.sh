#!/usr/bin/env bash
# Nineteenth session, run 5: the dx fold without its kernel (branch wip-tf32-fold): tests; dx A/B against main; forward A/B again.
export NF4LORA_GIT_SHA=$(cat .s19/sha)
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
(cd .s19/main && NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/mbuild.log 2>&1; echo $? > /tmp/mbuild.rc) &
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install"
wait; el "main build rc=$(cat /tmp/mbuild.rc)"
timeout 220 python3 -m pytest -q -x -n 14 tests/test_cuda_dx.py tests/test_cuda_mma.py tests/test_cuda_ext.py tests/test_qlora_ops.py tests/test_qlora_bwd.py > $OUT/tests.txt 2>&1; el "tests rc=$?"
tail -2 $OUT/tests.txt; grep -E "^FAILED|^ERROR|Error|assert" $OUT/tests.txt | head -20
timeout 120 python3 .s19/dxab.py > $OUT/dxab.jsonl 2>/tmp/a.err; el "dxab rc=$?"; tail -3 /tmp/a.err; cut -c1-330 $OUT/dxab.jsonl
el done
