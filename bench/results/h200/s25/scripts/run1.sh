set -x
export NF4LORA_GIT_SHA=$(cat .s25/sha_lut)
NODE=0 source bench/device_build.sh || exit 1
timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_cuda_mma.py tests/test_cuda_dx.py -k "pair_table or identity" 2>&1 | tail -15
timeout 200 python3 bench/ws_lut_ab.py --rounds 10 --out $OUT/wslut_ab.jsonl
cd .s25/tma
export NF4LORA_GIT_SHA=$(cat ../sha_tma)
export PYTHONPATH=
NODE=0 source bench/device_build.sh || exit 1
timeout 150 python3 bench/gemv_time.py --env NF4LORA_GEMV_XDIAG=0,1,2,3 --spec "4096,14336:16;14336,4096:16/8;8192,28672:16" --out $OUT/tmadiag.jsonl
