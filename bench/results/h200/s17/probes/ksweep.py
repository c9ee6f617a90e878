"""Per-tile overhead of the warp-specialized forward: kernel time vs K at fixed tiles (M 4096, N 14336)."""
import json, sys
import torch
import torch.nn.functional as F
sys.path.insert(0, "bench"); sys.path.insert(0, "python")
from diag_fwd import kernel_us
from nf4lora import ops
from nf4lora.benchmark import Case
M, N = 4096, 14336
for K in (1024, 2048, 4096, 8192, 16384):
    for r in (16, 64):
        c = Case(M, K, N, r, "cuda")
        with torch.no_grad():
            ks = kernel_us(lambda c=c: ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale), iters=10)
            dense = kernel_us(lambda c=c: F.linear(c.x, c.w), iters=10) if r == 16 else {}
        print(json.dumps({"M": M, "K": K, "N": N, "r": r, "sum": round(sum(ks.values()), 1),
                          "dense": round(sum(dense.values()), 1),
                          "kernels": {k[:50]: round(v, 1) for k, v in ks.items()}}), flush=True)
