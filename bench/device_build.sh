# For the GPU machine only (it uninstalls any nf4lora installed into python3): build nf4lora's
# extensions in place and stage the package for a device run (bench/NOTES.md's recipe), so that a
# run script starts with one line:
#     source bench/device_build.sh || exit 1
# Then PYTHONPATH holds the staged package (/tmp/st: python/nf4lora with triton_kernels/ inside, as
# pip installs it) and, where .whl/ was carried, the wheels installed into /tmp/site (bitsandbytes).
# The build log goes to $OUT/build.log (or /tmp/build.log). Settings: NF4LORA_CUDA_ARCHS (default
# 90a: the H200), NODE=0 to skip the C++ autograd node (a shorter build, for no-grad experiments).
_nf4lora_device_build() {
  local log="${OUT:-/tmp}/build.log" t0
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      > /dev/null 2>&1 || echo "device_build: the wheels in .whl/ did not install"
  fi
  python3 -m pip uninstall -y nf4lora > /dev/null 2>&1 || true  # an installed copy would shadow the staged one
  t0=$(date +%s)
  if ! NF4LORA_CUDA_ARCHS="${NF4LORA_CUDA_ARCHS:-90a}" NF4LORA_SKIP_NODE_BUILD=$([ "${NODE:-1}" = 0 ] && echo 1 || echo 0) \
      python3 setup.py -q build_ext --inplace > "$log" 2>&1; then
    tail -40 "$log"
    echo "device_build: the build failed (log: $log)"
    return 1
  fi
  echo "device_build: built in $(( $(date +%s) - t0 )) s"
  rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora
  rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
  export PYTHONPATH="/tmp/site:/tmp/st${PYTHONPATH:+:$PYTHONPATH}"
}
_nf4lora_device_build
