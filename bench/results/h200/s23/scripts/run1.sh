set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/site:/tmp/st
export NF4LORA_GIT_SHA=$(cat .s23/sha)
t0=$(date +%s)
timeout 250 python3 -m pytest -q -rs -n 14 -p no:cacheprovider tests/ > $OUT/suite.txt 2>&1; echo "suite rc $? $(( $(date +%s) - t0 )) s"; tail -3 $OUT/suite.txt; grep -E "FAILED|ERROR" $OUT/suite.txt | head
t0=$(date +%s)
mkdir -p $OUT/e2e
PYTHONUNBUFFERED=1 timeout 230 python3 bench/bench_e2e.py --out $OUT/e2e --loss-steps 0 --profile > $OUT/e2e/e2e.log 2>&1; echo "e2e rc $? $(( $(date +%s) - t0 )) s"
grep -v Warn $OUT/e2e/e2e.log | grep "tok/s" 
