"""Split-K counters: the launcher's memset per call (zeroed_counters -> (0, 0)) against the per-stream
zeroed buffer, interleaved in one process. GPU time per forward from a CUDA graph of 20 forwards
(events around replays), and eager host wall per call."""
import json, os, statistics, time
import torch
from nf4lora import _cuda_ext, ops, qlora_linear, quantize_nf4

torch.manual_seed(0)
real = _cuda_ext.zeroed_counters
modes = {"memset": lambda *a: (0, 0), "zeroed": real}
for (M, N, K) in ((1, 4096, 14336), (1, 28672, 8192), (1, 1024, 4096), (4, 1024, 4096), (64, 4096, 4096),
                  (128, 4096, 4096), (128, 14336, 4096), (128, 4096, 14336)):
    q = quantize_nf4(torch.randn(N, K, device="cuda") * K ** -0.5, 64)
    A = (torch.randn(16, K, device="cuda") * K ** -0.5).bfloat16()
    B = (torch.randn(N, 16, device="cuda") * 0.01).bfloat16()
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    plan = _cuda_ext.plan_forward(x, q, 16)
    graphs, outs = {}, {}
    with torch.no_grad():
        for name, fn in modes.items():
            _cuda_ext.zeroed_counters = fn
            outs[name] = qlora_linear(x, q, A, B, 0.5)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    qlora_linear(x, q, A, B, 0.5)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for _ in range(20):
                    qlora_linear(x, q, A, B, 0.5)
            graphs[name] = g
        same = torch.equal(outs["memset"], outs["zeroed"])
        res = {f"{k}_{w}": [] for k in modes for w in ("gpu", "wall")}
        for rd in range(6):
            for name in (modes if rd % 2 == 0 else list(modes)[::-1]):
                _cuda_ext.zeroed_counters = modes[name]
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                e0.record()
                for _ in range(10):
                    graphs[name].replay()
                e1.record()
                torch.cuda.synchronize()
                res[f"{name}_gpu"].append(e0.elapsed_time(e1) * 1e3 / 200)
                t = time.perf_counter()
                for _ in range(200):
                    qlora_linear(x, q, A, B, 0.5)
                torch.cuda.synchronize()
                res[f"{name}_wall"].append((time.perf_counter() - t) / 200 * 1e6)
    _cuda_ext.zeroed_counters = real
    med = {k: round(statistics.median(v), 2) for k, v in res.items()}
    print(json.dumps({"M": M, "N": N, "K": K, "counters": plan.counters, "large": plan.large, "bit_equal": same,
                      **med, "gpu zeroed/memset": round(med["zeroed_gpu"] / med["memset_gpu"], 3),
                      "wall zeroed/memset": round(med["zeroed_wall"] / med["memset_wall"], 3)}), flush=True)
