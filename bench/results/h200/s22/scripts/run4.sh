set -u
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/site:/tmp/st
timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_node.py > $OUT/tests-node.txt 2>&1; echo "node tests rc $?"; tail -3 $OUT/tests-node.txt; grep FAILED $OUT/tests-node.txt | head
timeout 45 python3 bench/step_ab.py --dropout 0.1 --rounds 4 --shapes 128x4096x4096,128x14336x4096,1024x4096x4096 > $OUT/step_ab_dropout.jsonl 2> $OUT/step_ab.err || echo "step_ab failed rc $?"
cat $OUT/step_ab_dropout.jsonl
t0=$(date +%s)
timeout 200 python3 -m pytest -q -n 14 -p no:cacheprovider tests/ > $OUT/suite.txt 2>&1; echo "suite rc $? $(( $(date +%s) - t0 )) s"; tail -2 $OUT/suite.txt; grep FAILED $OUT/suite.txt | head
