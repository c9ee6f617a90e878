set -e
R=$(pwd)
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
mkdir -p $OUT/ab
cd /tmp
for i in 1 2 3; do
  for t in new main; do
    TREE=$t PYTHONPATH=/tmp/st_$t timeout 150 python3 $R/.s21/ab.py 2>&1 | grep '^{' | tee -a $OUT/ab/ab.jsonl
  done
done
cd $R
t0=$(date +%s)
PYTHONPATH=/tmp/st_new timeout 260 python3 -m pytest -q -x -n 14 -p no:cacheprovider tests/ 2>&1 | tail -15 | tee $OUT/tests.txt
echo "tests $(( $(date +%s) - t0 )) s"
