set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/site:/tmp/st
t0=$(date +%s)
timeout 160 python3 -m pytest -q -rs -n 14 -p no:cacheprovider tests/test_cuda_gemv.py tests/test_cuda_ext.py tests/test_gpu.py tests/test_qlora_ops.py tests/test_cuda_node.py tests/test_dispatch.py tests/test_layer_model.py > $OUT/tests.txt 2>&1; echo "tests rc $? $(( $(date +%s) - t0 )) s"; tail -2 $OUT/tests.txt; grep -E "FAILED|ERROR" $OUT/tests.txt | head
HINTS=0 timeout 80 python3 .s23/gemvab.py > $OUT/gemv-default.jsonl 2> $OUT/gemv.err || { echo "gemvab rc $?"; tail -5 $OUT/gemv.err; }
python3 -c "
import json
for l in open('$OUT/gemv-default.jsonl'):
    d=json.loads(l)
    print(d.get('copy_TBps') or (d['K'], d['N'], d['M'], d['hint0_us'], d['hint0_pct_copy']))"
