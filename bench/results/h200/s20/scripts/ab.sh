set -e
R=$(pwd)
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
NF4LORA_CUDA_ARCHS=90a python3 setup.py -q build_ext --inplace > /tmp/build.log 2>&1 || { tail -30 /tmp/build.log; exit 1; }
SO=$(ls python/nf4lora/_C*.so)
for t in new main; do
  rm -rf /tmp/st_$t && mkdir -p /tmp/st_$t
  src=.; [ $t = main ] && src=.s20/mainsrc
  cp -r $src/python/nf4lora /tmp/st_$t/nf4lora && rm -rf /tmp/st_$t/nf4lora/triton_kernels && cp -r $src/triton_kernels /tmp/st_$t/nf4lora/triton_kernels
  cp $SO /tmp/st_$t/nf4lora/
done
cd /tmp
for i in 1 2 3; do
  for t in new main; do
    TREE=$t PYTHONPATH=/tmp/st_$t timeout 120 python3 $R/.s20/ab.py 2>&1 | grep '^{' | tee -a $OUT/ab.jsonl
  done
done
