#!/bin/bash
# Prepared in s36 for the next session (not run): branch wip-graph-counters (SHA=), full build. Zeroed counters per
# CUDA graph capture (_C.capture_id). Steps: (1) the new tests (capture_id; two graphs captured on one stream
# replayed at once 200 times) and the full suite; (2) the graph test again with the old keying (the staged
# _cuda_ext.py patched to capture = 0): expected to fail or hang (killed after 120 s); (3) the host cost of the
# capture-id call: eager M = 1 forwards on 4096x4096, wall per call, new vs capture = 0 (interleaved, 5 rounds).
# ~7 minutes with a cold start; results in $OUT/next1.tgz.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=}
t0=$(date +%s); mkdir -p /tmp/o
source bench/device_build.sh > /tmp/o/build.txt || { cat /tmp/o/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
bash bench/device_suite.sh /tmp/o 300
grep -E "capture_id|replay_at_once" /tmp/o/tests.txt | head -4
tar -czf $OUT/next1.tgz -C /tmp o
cp /tmp/st/nf4lora/_cuda_ext.py /tmp/cuda_ext_new.py
sed -i 's/^    capture = _C.capture_id(stream)$/    capture = 0  # (s36 next_run1: the old keying)/' /tmp/st/nf4lora/_cuda_ext.py
grep -c "the old keying" /tmp/st/nf4lora/_cuda_ext.py
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_gemv.py -k replay_at_once > /tmp/o/tests_old_keying.txt 2>&1
echo "old keying rc $? (1 expected)"; tail -1 /tmp/o/tests_old_keying.txt
cp /tmp/cuda_ext_new.py /tmp/st/nf4lora/_cuda_ext.py  # (back to the new keying for the host-cost A/B)
python3 - <<'P' > /tmp/o/host_cost.txt 2>&1
import importlib, time, torch, nf4lora._cuda_ext as ce
from nf4lora import quantize_nf4, qlora_linear
q = quantize_nf4(torch.randn(4096, 4096, device="cuda"), 64, double_quant=True)
A = torch.randn(16, 4096, device="cuda", dtype=torch.bfloat16); B = torch.randn(4096, 16, device="cuda", dtype=torch.bfloat16)
x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
new = ce.zeroed_counters
def old(device, stream, n):
    key = (ce.device_index(device), stream, 0)
    buf = ce._ZEROED_COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = ce._ZEROED_COUNTERS[key] = torch.zeros(max(n, 4096), device=device, dtype=torch.int32)
    return buf.data_ptr(), buf.numel()
res = {"new": [], "old": []}
with torch.no_grad():
    for _ in range(5):
        for name, fn in (("new", new), ("old", old)):
            ce.zeroed_counters = fn
            for _ in range(200): qlora_linear(x, q, A, B, 0.5)
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(2000): qlora_linear(x, q, A, B, 0.5)
            torch.cuda.synchronize(); res[name].append((time.perf_counter() - t) / 2000 * 1e6)
print({k: [round(v, 2) for v in vs] for k, vs in res.items()})
print("median us/call", {k: round(sorted(vs)[2], 2) for k, vs in res.items()})
P
tail -2 /tmp/o/host_cost.txt
echo "done at $(( $(date +%s) - t0 )) s"
tar -czf $OUT/next1.tgz -C /tmp o
