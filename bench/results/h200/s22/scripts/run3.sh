set -u
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/site:/tmp/st
so=$(ls /tmp/st/nf4lora/_node*.so)
echo "CXX=${CXX:-unset}"; ldd $so | grep -i "stdc\|torch\|c10" ; echo "ostream symbols defined in _node: $(nm -C --defined-only $so | grep -c 'basic_ostream')"; nm -C --defined-only $so | grep -i "ios_base::Init" | head -3
for m in second both; do echo "== $m"; timeout 60 python3 .s22/diag_seg.py $m 2>&1 | tail -3; done
t0=$(date +%s)
timeout 240 python3 -m pytest -q -n 14 -p no:cacheprovider tests/ > $OUT/suite.txt 2>&1; echo "suite rc $? $(( $(date +%s) - t0 )) s"; tail -3 $OUT/suite.txt; grep FAILED $OUT/suite.txt | head
timeout 150 python3 bench/step_ab.py --shapes 1x4096x4096,16x4096x4096,128x4096x4096,128x14336x4096,128x4096x14336,128x8192x8192,128x28672x8192,1024x4096x4096,1024x14336x4096,1024x28672x8192 > $OUT/step_ab.jsonl 2> $OUT/step_ab.err || echo "step_ab failed rc $?"
cat $OUT/step_ab.jsonl; grep -v Warning $OUT/step_ab.err | grep -v run_backward | tail -3
timeout 60 python3 bench/step_ab.py --rank 64 --shapes 128x4096x4096,128x14336x4096,1024x4096x4096 >> $OUT/step_ab.jsonl 2>> $OUT/step_ab.err || echo "step_ab r64 failed"
tail -3 $OUT/step_ab.jsonl
