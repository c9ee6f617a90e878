#!/bin/bash
# s37 run 3: branch wip-graph-counters (SHA=), NODE=0. The per-call host cost of the capture query, in isolation:
# _C.capture_id(stream), torch.cuda.is_current_stream_capturing(), the old 2-tuple dict lookup and the new
# zeroed_counters; then eager M = 1 forwards on 4096x4096 (new vs the old keying), 9 interleaved rounds.
export NF4LORA_GIT_SHA=${SHA:?pass SHA=} NODE=0
t0=$(date +%s); mkdir -p /tmp/o3
source bench/device_build.sh > /tmp/o3/build.txt || { cat /tmp/o3/build.txt; exit 1; }
echo "built at $(( $(date +%s) - t0 )) s"
python3 - <<'P' 2>&1 | tee /tmp/o3/host_cost.txt
import timeit, torch, nf4lora._cuda_ext as ce
from nf4lora import quantize_nf4, qlora_linear
C = ce._C; s = torch.cuda.current_stream().cuda_stream; dev = torch.device("cuda")
ce.zeroed_counters(dev, s, 64)
def old(device, stream, n):
    key = (ce.device_index(device), stream)
    buf = ce._ZEROED_COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = ce._ZEROED_COUNTERS[key] = torch.zeros(max(n, 4096), device=device, dtype=torch.int32)
    return buf.data_ptr(), buf.numel()
old(dev, s, 64); new = ce.zeroed_counters
for name, f in (("capture_id", lambda: C.capture_id(s)), ("is_current_stream_capturing", torch.cuda.is_current_stream_capturing),
                ("old zeroed_counters", lambda: old(dev, s, 64)), ("new zeroed_counters", lambda: new(dev, s, 64))):
    print(name, "us/call", round(min(timeit.repeat(f, number=20000, repeat=5)) / 20000 * 1e6, 3))
q = quantize_nf4(torch.randn(4096, 4096, device="cuda"), 64, double_quant=True)
A = torch.randn(16, 4096, device="cuda", dtype=torch.bfloat16); B = torch.randn(4096, 16, device="cuda", dtype=torch.bfloat16)
x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
import time
res = {"new": [], "old": []}
with torch.no_grad():
    for _ in range(9):
        for name, fn in (("new", new), ("old", old)):
            ce.zeroed_counters = fn
            for _ in range(200): qlora_linear(x, q, A, B, 0.5)
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(3000): qlora_linear(x, q, A, B, 0.5)
            torch.cuda.synchronize(); res[name].append((time.perf_counter() - t) / 3000 * 1e6)
print({k: [round(v, 2) for v in vs] for k, vs in res.items()})
print("median us/call", {k: round(sorted(vs)[4], 2) for k, vs in res.items()})
P
echo "done at $(( $(date +%s) - t0 )) s"; tar -czf $OUT/run3.tgz -C /tmp o3
