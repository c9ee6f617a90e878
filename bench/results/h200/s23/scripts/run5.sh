set -u
python3 -m pip uninstall -y nf4lora >/dev/null 2>&1 || true
t0=$(date +%s)
NF4LORA_CUDA_ARCHS=90a NF4LORA_SKIP_NODE_BUILD=1 python3 setup.py -q build_ext --inplace > $OUT/build.log 2>&1 || { tail -40 $OUT/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
rm -rf /tmp/st && mkdir -p /tmp/st && cp -r python/nf4lora /tmp/st/nf4lora && rm -rf /tmp/st/nf4lora/triton_kernels && cp -r triton_kernels /tmp/st/nf4lora/triton_kernels
export PYTHONPATH=/tmp/st
SPEC="8192,8192:4;8192,14336:4;8192,20480:4;8192,24576:4;8192,28672:4/3;4096,28672:4/3" timeout 100 python3 .s23/gemvab.py > $OUT/gemvab.jsonl 2> $OUT/gemvab.err || { echo "gemvab rc $?"; tail -5 $OUT/gemvab.err; }
python3 -c "
import json
for l in open('$OUT/gemvab.jsonl'):
    d=json.loads(l)
    print(d.get('copy_TBps') or (d['K'], d['N'], d['M'], d['bitwise_same'], d['hint0_us'], d['hint3_us'], d['hint3/hint0']))"
