"""s38: GPU time of u = x·Aᵀ (float32) by the u kernel (_cuda_ext.lora_u, csrc's lora_u_part_kernel) against cuBLAS
(torch.mm with out_dtype=float32), each as 20 calls in a CUDA graph over distinct x and A, replayed interleaved.
One JSON line per (M, K, r): us per call, kernel / cublas, and the u kernel's error against float64."""
import json
import sys

import torch

sys.path.insert(0, "bench")
from gemv_time import capture, time_interleaved  # noqa: E402

from nf4lora import _cuda_ext  # noqa: E402

torch.manual_seed(0)
L = 20
for K in (4096, 14336):
    for r in (16, 64):
        for M in (17, 64, 128, 256, 512, 1024, 2048):
            xs = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(L)]
            As = [(torch.randn(r, K, device="cuda") * K**-0.5).bfloat16() for _ in range(L)]
            gk, uk = capture(lambda: [_cuda_ext.lora_u(xs[i], As[i]) for i in range(L)])
            gc, _ = capture(lambda: [torch.mm(xs[i], As[i].t(), out_dtype=torch.float32) for i in range(L)])
            ms = time_interleaved({"kernel": gk, "cublas": gc}, 10)
            ref = xs[-1].double() @ As[-1].double().t()
            err = ((uk[-1].double() - ref).norm() / ref.norm()).item()
            row = {"M": M, "K": K, "r": r, "kernel_us": round(ms["kernel"] * 1e3 / L, 2),
                   "cublas_us": round(ms["cublas"] * 1e3 / L, 2), "rel_err": float(f"{err:.2e}")}
            row["kernel/cublas"] = round(row["kernel_us"] / row["cublas_us"], 3)
            print(json.dumps(row), flush=True)
            del gk, gc, uk
