set -e
R=$(pwd)
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
(cd .s21/mainsrc && NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/build_main.log 2>&1) || { tail -30 /tmp/build_main.log; exit 1; }
echo "builds $(( $(date +%s) - t0 )) s"
for t in new main; do
  rm -rf /tmp/st_$t && mkdir -p /tmp/st_$t
  src=.; [ $t = main ] && src=.s21/mainsrc
  cp -r $src/python/nf4lora /tmp/st_$t/nf4lora && rm -rf /tmp/st_$t/nf4lora/triton_kernels && cp -r $src/triton_kernels /tmp/st_$t/nf4lora/triton_kernels
done
mkdir -p $OUT/ab
cd /tmp
for i in 1 2; do
  for t in new main; do
    TREE=$t PYTHONPATH=/tmp/st_$t timeout 150 python3 $R/.s21/ab.py > /tmp/ab_$t.log 2>&1 || echo "ab $t failed"; grep '^{' /tmp/ab_$t.log >> $OUT/ab/ab.jsonl || true; grep -v '^{' /tmp/ab_$t.log | tail -3 || true
  done
done
cd $R
t0=$(date +%s)

