#!/usr/bin/env bash
# Nineteenth session, run 1: main's test_cuda_dx (22e9147); wip-fold-packed tests; packed vs main A/B in one process.
export NF4LORA_GIT_SHA=$(cat .s19/sha)
R=$PWD
t0=$(date +%s)
el() { echo "$1 $(( $(date +%s) - t0 )) s"; }
(cd .s19/fp && NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/fpbuild.log 2>&1; echo $? > /tmp/fpbuild.rc) &
python3 -m pip install --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { tail -40 /tmp/install.log; exit 1; }
el "install main"
wait; el "fp build rc=$(cat /tmp/fpbuild.rc)"; tail -5 /tmp/fpbuild.log; ls .s19/fp/python/nf4lora/
timeout 100 python3 -m pytest -q -x -n 14 tests/test_cuda_dx.py > $OUT/tests-main-dx.txt 2>&1; el "main dx tests rc=$?"
tail -2 $OUT/tests-main-dx.txt; grep -E "^FAILED|^ERROR" $OUT/tests-main-dx.txt | head
cd .s19/fp
PYTHONPATH=$PWD/python python3 -c "import nf4lora, nf4lora._cuda_ext as e; print(nf4lora.__file__, e._C.__file__)"
PYTHONPATH=$PWD/python timeout 170 python3 -m pytest -q -x -n 14 tests/test_cuda_mma.py tests/test_cuda_dx.py tests/test_cuda_ext.py > $OUT/tests-fp.txt 2>&1; el "fp tests rc=$?"
tail -2 $OUT/tests-fp.txt; grep -E "^FAILED|^ERROR|Error|assert" $OUT/tests-fp.txt | head -20
cd $R
timeout 120 python3 .s19/fpab.py fwd > $OUT/fpab-fwd.jsonl 2>/tmp/a.err; el "fpab fwd rc=$?"; tail -3 /tmp/a.err; cat $OUT/fpab-fwd.jsonl | cut -c1-300
timeout 120 python3 .s19/fpab.py dx > $OUT/fpab-dx.jsonl 2>/tmp/a.err; el "fpab dx rc=$?"; tail -3 /tmp/a.err; cat $OUT/fpab-dx.jsonl | cut -c1-300
el done
