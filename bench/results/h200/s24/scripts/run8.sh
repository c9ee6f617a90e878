NODE=0 source bench/device_build.sh >/dev/null && timeout 130 python3 -m pytest -q -n 14 -p no:cacheprovider tests/test_gpu.py tests/test_qlora_fwd.py tests/test_cuda_gemv.py 2>&1 | tail -3
