"""s38 run 3 diagnostic: what r = 64 costs the forward at M = 1 / 16 / 128 (run 2's grid: M = 128 fwd +37-41 us at
r = 64 against r = 16 on all four shapes, M = 16 up to +22 us). Per shape, M and r: the forward's kernels by the
torch profiler (CUDA time per call, each kernel), the eager wall per call (synchronized blocks of calls) and the
GPU time per call from a CUDA graph of the same calls. One JSON line per (shape, M, r)."""
import json
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "bench")
from gemv_time import capture, time_interleaved  # noqa: E402

from nf4lora import ops, quantize_nf4  # noqa: E402

torch.manual_seed(0)
shapes = [(4096, 4096), (14336, 4096), (8192, 28672)]
for K, N in shapes:
    q = quantize_nf4(torch.randn(N, K, device="cuda") * K**-0.5, 64, double_quant=True)
    for M in (1, 16, 128):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        for r in (16, 64):
            A = (torch.randn(r, K, device="cuda") * K**-0.5).bfloat16()
            B = (torch.randn(N, r, device="cuda") * r**-0.5).bfloat16()
            f = lambda: ops.qlora_linear(x, q, A, B, 2.0)  # noqa: E731
            with torch.no_grad():
                for _ in range(20):
                    f()
                torch.cuda.synchronize()
                walls = []
                for _ in range(5):
                    t = time.perf_counter()
                    for _ in range(50):
                        f()
                    torch.cuda.synchronize()
                    walls.append((time.perf_counter() - t) / 50 * 1e6)
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(20):
                        f()
                    torch.cuda.synchronize()
                kern = {}
                for e in prof.key_averages():
                    if e.device_type.name == "CUDA" and e.count:
                        kern[e.key[:60]] = [e.count // 20, round(e.device_time_total / 20, 2)]
                g, _ = capture(lambda: [f() for _ in range(20)])
                gpu = time_interleaved({0: g}, 8)[0] * 1e3 / 20
            print(json.dumps({"K": K, "N": N, "M": M, "r": r, "path": ops.last_path.get("qlora_linear"),
                              "wall_us": round(statistics.median(walls), 1), "graph_us": round(gpu, 2),
                              "kernels_us_per_call": kern}), flush=True)
