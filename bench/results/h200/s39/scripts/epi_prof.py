"""s39 run 3 diagnostic: where r = 64 costs the small-M forward (run 2: the LoRA-term knockout takes 0.67-0.88x the
time at M 8-16 with r = 64, 0.92-0.97x with r = 16, yet the term's loads and FMAs are a few hundred instructions a
thread). Per (shape, M, r, NF4LORA_GEMV_EPI): each kernel's CUDA time per call by the torch profiler over 20
back-to-back forwards, and the GPU time per call from a CUDA graph of them. One JSON line each."""
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "bench")
from gemv_time import capture, time_interleaved  # noqa: E402

from nf4lora import ops, quantize_nf4  # noqa: E402

torch.manual_seed(0)
for K, N, M in [(4096, 14336, 16), (4096, 14336, 8), (8192, 28672, 16)]:
    q = quantize_nf4(torch.randn(N, K, device="cuda") * K**-0.5, 64, double_quant=True)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    for r in (16, 64):
        A = (torch.randn(r, K, device="cuda") * K**-0.5).bfloat16()
        B = (torch.randn(N, r, device="cuda") * r**-0.5).bfloat16()
        f = lambda: ops.qlora_linear(x, q, A, B, 2.0)  # noqa: E731
        for epi in os.environ.get("EPIS", "0,3,4,5,6").split(","):
            os.environ["NF4LORA_GEMV_EPI"] = epi
            with torch.no_grad():
                for _ in range(10):
                    f()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(20):
                        f()
                    torch.cuda.synchronize()
                kern = {}
                for e in prof.key_averages():
                    if e.device_type.name == "CUDA" and e.count:
                        kern[e.key[:40]] = [e.count // 20, round(e.device_time_total / 20, 2)]
                g, _ = capture(lambda: [f() for _ in range(20)])
                gpu = time_interleaved({0: g}, 8)[0] * 1e3 / 20
            print(json.dumps({"K": K, "N": N, "M": M, "r": r, "epi": epi, "graph_us": round(gpu, 2),
                              "kernels_us_per_call": kern}), flush=True)
