set -u
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a NF4LORA_SKIP_NODE_BUILD=1 python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/st
timeout 70 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_cuda_gemv.py > $OUT/tests.txt 2>&1; echo "tests rc $?"; tail -2 $OUT/tests.txt; grep -E "FAILED|ERROR" $OUT/tests.txt | head
HINTS=0 SPEC="8192,28672:1/4;8192,24576:4" timeout 40 python3 .s23/gemvab.py > $OUT/gemv-default.jsonl 2> $OUT/gemv.err || { echo "gemvab rc $?"; tail -3 $OUT/gemv.err; }
cat $OUT/gemv-default.jsonl
