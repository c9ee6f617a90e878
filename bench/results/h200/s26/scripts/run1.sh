#!/bin/bash
# s26 run 1: the three experiment branches: parallel builds, then each branch's GPU test and A/B.
cd "$(dirname "$0")"
R=$PWD
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1
BR="wip-rs-proto wip-dx-2p wip-gemv-persist"
t0=$(date +%s)
for b in $BR; do
  mkdir -p $OUT/$b
  (cd $b && NF4LORA_CUDA_ARCHS=90a NF4LORA_SKIP_NODE_BUILD=1 python3 setup.py -q build_ext --inplace > $OUT/$b/build.log 2>&1; echo "$b build rc $?") &
done
wait
echo "builds: $(( $(date +%s) - t0 )) s"
run_branch() {
  local b=$1; shift
  rm -rf /tmp/st_$b && mkdir -p /tmp/st_$b && cp -r $R/$b/python/nf4lora /tmp/st_$b/nf4lora
  rm -rf /tmp/st_$b/nf4lora/triton_kernels && cp -r $R/$b/triton_kernels /tmp/st_$b/nf4lora/triton_kernels
  (cd $R/$b && export PYTHONPATH=/tmp/st_$b && "$@")
}
t=$(date +%s)
run_branch wip-gemv-persist timeout 90 python3 -m pytest -q --maxfail=10 -n 8 -p no:cacheprovider tests/test_cuda_gemv.py -k persistent > $OUT/wip-gemv-persist/test.log 2>&1; echo "gemv test rc $? $(( $(date +%s) - t )) s"; tail -5 $OUT/wip-gemv-persist/test.log
(cd $OUT && tar czf s26run1.tgz */)
t=$(date +%s)
run_branch wip-gemv-persist timeout 80 python3 bench/gemv_time.py --env NF4LORA_GEMV_PERSIST=0,1 --spec "4096,14336:9/16;8192,28672:16;5120,5120:16;4096,6144:16;14336,4096:16" --out $OUT/wip-gemv-persist/ab.jsonl > $OUT/wip-gemv-persist/ab.log 2>&1; echo "gemv ab rc $? $(( $(date +%s) - t )) s"; tail -14 $OUT/wip-gemv-persist/ab.log
(cd $OUT && tar czf s26run1.tgz */)
t=$(date +%s)
run_branch wip-dx-2p timeout 100 python3 -m pytest -q --maxfail=10 -n 8 -p no:cacheprovider tests/test_cuda_dx.py -k two_producer > $OUT/wip-dx-2p/test.log 2>&1; echo "dx test rc $? $(( $(date +%s) - t )) s"; tail -5 $OUT/wip-dx-2p/test.log
(cd $OUT && tar czf s26run1.tgz */)
t=$(date +%s)
run_branch wip-dx-2p timeout 90 python3 bench/dx_2p_ab.py --rounds 8 --out $OUT/wip-dx-2p/ab.jsonl > $OUT/wip-dx-2p/ab.log 2>&1; echo "dx ab rc $? $(( $(date +%s) - t )) s"; tail -8 $OUT/wip-dx-2p/ab.log
(cd $OUT && tar czf s26run1.tgz */)
t=$(date +%s)
run_branch wip-rs-proto timeout 170 python3 -m pytest -q --maxfail=10 -n 8 -p no:cacheprovider tests/test_cuda_mma.py > $OUT/wip-rs-proto/test.log 2>&1; echo "rs test rc $? $(( $(date +%s) - t )) s"; tail -5 $OUT/wip-rs-proto/test.log
(cd $OUT && tar czf s26run1.tgz */)
t=$(date +%s)
run_branch wip-rs-proto timeout 100 python3 bench/rs_ab.py --rounds 8 --out $OUT/wip-rs-proto/ab.jsonl > $OUT/wip-rs-proto/ab.log 2>&1; echo "rs ab rc $? $(( $(date +%s) - t )) s"; cat $OUT/wip-rs-proto/ab.log | tail -12
(cd $OUT && tar czf s26run1.tgz */)
