"""Where r = 64 costs: per-kernel GPU time of one forward (no grad) at r 16 / 32 / 64."""
import json, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, "python")
from diag_fwd import kernel_us
from nf4lora import ops
from nf4lora.benchmark import Case
for K, N in ((4096, 14336), (8192, 28672)):
    for M in (16, 4096):
        for r in (16, 32, 64):
            c = Case(M, K, N, r, "cuda")
            with torch.no_grad():
                ks = kernel_us(lambda c=c: ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale), iters=10)
            print(json.dumps({"K": K, "N": N, "M": M, "r": r, "sum": round(sum(ks.values()), 1),
                              "kernels": {k[:60]: round(v, 1) for k, v in ks.items()}}), flush=True)
