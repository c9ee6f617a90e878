set -e
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > /dev/null 2>&1 || { echo "bnb install failed"; exit 1; }
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
SO=$(ls python/nf4lora/_C*.so)
rm -rf /tmp/st_new && mkdir -p /tmp/st_new
cp -r python/nf4lora /tmp/st_new/nf4lora && rm -rf /tmp/st_new/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st_new/nf4lora/triton_kernels
cp $SO /tmp/st_new/nf4lora/
cd /tmp
PYTHONPATH=/tmp/st_new timeout 150 python3 $R/.s21/ctrab.py 2>&1 | tee $OUT/ctrab.jsonl | tail -12
cd $R
t0=$(date +%s)
PYTHONPATH=/tmp/site:/tmp/st_new timeout 280 python3 -m pytest -q -x -n 14 -p no:cacheprovider tests/ 2>&1 | tail -8 | tee $OUT/tests.txt
echo "tests $(( $(date +%s) - t0 )) s"
