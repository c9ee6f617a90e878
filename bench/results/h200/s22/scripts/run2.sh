set -u
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/site:/tmp/st
g++ --version | head -1
for m in first second both cuda; do echo "== $m"; timeout 60 python3 .s22/diag_seg.py $m 2>&1 | tail -4; echo "rc $?"; done
echo "== cuda-gdb second"
timeout 120 cuda-gdb -q -batch -ex run -ex bt --args python3 .s22/diag_seg.py second 2>&1 | grep -v "^\[New Thread\|^\[Thread\|Detaching\|libthread_db" | tail -40
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_node.py -k "not refusal" 2>&1 | tail -5 | tee $OUT/tests-node.txt
t0=$(date +%s)
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/ --deselect tests/test_cuda_node.py::test_node_reports_a_launchers_refusal > $OUT/suite-node.txt 2>&1; echo "suite node rc $? $(( $(date +%s) - t0 )) s"; tail -6 $OUT/suite-node.txt
cd /tmp
NF4LORA_GIT_SHA=$(cat $R/.s22/sha) timeout 150 python3 $R/bench/bench_qlora.py --out $OUT/grid --shapes 4,2,1,0,3 --ranks 16 --ms 1,16,128,1024 --modes fwd,fwdbwd --providers nf4lora,dense_bf16,bnb_peft,naive --tag s22-node > $OUT/grid.log 2>&1 || echo "grid failed"; tail -3 $OUT/grid.log
NF4LORA_GIT_SHA=$(cat $R/.s22/sha) timeout 100 python3 $R/bench/bench_qlora.py --out $OUT/grid64 --shapes 4,2,1,0,3 --ranks 64 --ms 128,1024 --modes fwdbwd --providers nf4lora,dense_bf16,bnb_peft --tag s22-node-r64 > $OUT/grid64.log 2>&1 || echo "grid64 failed"; tail -3 $OUT/grid64.log
