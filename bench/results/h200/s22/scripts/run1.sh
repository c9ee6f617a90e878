set -u
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || echo "bnb install failed"
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
python3 -c "import torch; print(torch.__version__)"
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
for t in node py; do
  rm -rf /tmp/st_$t && mkdir -p /tmp/st_$t
  cp -r python/nf4lora /tmp/st_$t/nf4lora && rm -rf /tmp/st_$t/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st_$t/nf4lora/triton_kernels
done
rm -f /tmp/st_py/nf4lora/_node*.so
for t in node py; do PYTHONPATH=/tmp/st_$t python3 -c "from nf4lora import _cuda_ext as e; print('$t', e._C is not None, e._NODE, e._NODE_ERROR)"; done
cd $R
PYTHONPATH=/tmp/site:/tmp/st_node timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_node.py 2>&1 | tail -25 | tee $OUT/tests-node.txt
PYTHONPATH=/tmp/st_node timeout 150 python3 bench/step_ab.py --shapes 1x4096x4096,16x4096x4096,128x4096x4096,128x14336x4096,128x4096x14336,128x28672x8192,1024x4096x4096,1024x14336x4096 > $OUT/step_ab.jsonl 2> $OUT/step_ab.err || echo "step_ab failed rc $?"
cat $OUT/step_ab.jsonl; tail -5 $OUT/step_ab.err
PYTHONPATH=/tmp/st_node timeout 60 python3 bench/step_ab.py --rank 64 --shapes 128x4096x4096,128x14336x4096,1024x4096x4096 >> $OUT/step_ab.jsonl 2>> $OUT/step_ab.err || echo "step_ab r64 failed"
tail -3 $OUT/step_ab.jsonl
t0=$(date +%s)
PYTHONPATH=/tmp/site:/tmp/st_node timeout 230 python3 -m pytest -q -n 14 -p no:cacheprovider tests/ > $OUT/suite-node.txt 2>&1; echo "suite node rc $? $(( $(date +%s) - t0 )) s"; tail -15 $OUT/suite-node.txt
t0=$(date +%s)
PYTHONPATH=/tmp/site:/tmp/st_py timeout 200 python3 -m pytest -q -n 14 -p no:cacheprovider tests/ > $OUT/suite-py.txt 2>&1; echo "suite py rc $? $(( $(date +%s) - t0 )) s"; tail -8 $OUT/suite-py.txt
