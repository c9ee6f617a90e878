set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/site:/tmp/st
export NF4LORA_GIT_SHA=$(cat .s23/sha)
timeout 150 python3 .s23/gemvab.py > $OUT/gemvab.jsonl 2> $OUT/gemvab.err || { echo "gemvab rc $?"; tail -20 $OUT/gemvab.err; }
python3 -c "
import json
for l in open('$OUT/gemvab.jsonl'):
    d=json.loads(l)
    if 'K' in d: print(d['K'], d['N'], d['M'], d['bitwise_same'], d['hint0_us'], d['hint3_us'], d['hint3/hint0'], d['hint3_pct_copy'])
    else: print(d)"
t0=$(date +%s)
NF4LORA_GEMV_HINT=3 timeout 250 python3 -m pytest -q -rs -n 14 -p no:cacheprovider tests/ > $OUT/suite-hint3.txt 2>&1; echo "suite (hint 3) rc $? $(( $(date +%s) - t0 )) s"; tail -2 $OUT/suite-hint3.txt; grep -E "FAILED|ERROR" $OUT/suite-hint3.txt | head
