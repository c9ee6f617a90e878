"""u = x̃·Aᵀ of the large-M forward: our u kernel (lora_u) against cuBLAS (float32 output), and the
forward's kernels with the default (cuBLAS) u. Per-kernel GPU time, L2 flushed."""
import json, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, "python")
from diag_fwd import kernel_us
from nf4lora import ops, _cuda_ext
from nf4lora.benchmark import Case
print(json.dumps({"U_BY": _cuda_ext.U_BY}))
for K, N in ((4096, 14336), (14336, 4096), (8192, 28672)):
    for M in (128, 1024, 4096, 16384):
        for r in (16, 64):
            c = Case(M, K, N, r, "cuda")
            with torch.no_grad():
                fwd = kernel_us(lambda c=c: ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale), iters=10)
                ours = kernel_us(lambda c=c: _cuda_ext.lora_u(c.x, c.A), iters=10)
                cub = kernel_us(lambda c=c: torch.mm(c.x, c.A.t(), out_dtype=torch.float32), iters=10)
            print(json.dumps({"K": K, "N": N, "M": M, "r": r, "u_kernel": round(sum(ours.values()), 1),
                              "cublas": round(sum(cub.values()), 1), "cublas_kernels": len(cub),
                              "fwd_sum": round(sum(fwd.values()), 1),
                              "fwd": {k[:50]: round(v, 1) for k, v in fwd.items()}}), flush=True)
