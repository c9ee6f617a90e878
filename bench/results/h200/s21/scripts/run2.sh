set -e
R=$(pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > /dev/null 2>&1 || { echo "bnb install failed"; exit 1; }
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
SO=$(ls python/nf4lora/_C*.so)
for t in new main; do
  rm -rf /tmp/st_$t && mkdir -p /tmp/st_$t
  src=.; [ $t = main ] && src=.s21/mainsrc
  cp -r $src/python/nf4lora /tmp/st_$t/nf4lora && rm -rf /tmp/st_$t/nf4lora/triton_kernels && cp -r $src/triton_kernels /tmp/st_$t/nf4lora/triton_kernels
  cp $SO /tmp/st_$t/nf4lora/
done
mkdir -p $OUT/layerab $OUT/grid
cd /tmp
t0=$(date +%s)
for i in 1 2 3; do
  for t in new main; do
    TREE=$t PYTHONPATH=/tmp/st_$t timeout 100 python3 $R/.s21/layerab.py 2>&1 | grep '^{' | tee -a $OUT/layerab/layerab.jsonl
  done
done
echo "layerab $(( $(date +%s) - t0 )) s"
cd $R
t0=$(date +%s)
NF4LORA_GIT_SHA=$SHA PYTHONPATH=/tmp/site:/tmp/st_new timeout 200 python3 bench/bench_qlora.py --out $OUT/grid --shapes 4,2,1,0,3 --ranks 16 --ms 1,16,128,1024 --modes fwd,fwdbwd --providers nf4lora,dense_bf16,bnb_peft,naive --tag s21-$SHA > $OUT/grid/log.txt 2>&1 || { tail -20 $OUT/grid/log.txt; }
echo "grid $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
PYTHONPATH=/tmp/site:/tmp/st_new timeout 250 python3 -m pytest -q -x -n 14 -p no:cacheprovider tests/ 2>&1 | tail -6 | tee $OUT/tests.txt
echo "tests $(( $(date +%s) - t0 )) s"
