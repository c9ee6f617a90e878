"""Whole fwd+bwd step (the grid's nf4lora fwdbwd) with the dx from main's build (alt: token-tile-fastest order)
against this branch's (grouped order), interleaved in one process; dense_bf16's step beside them."""
import json, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, ".s19")
from diag_fwd import interleaved_us
from alt import load_alt
from nf4lora import _cuda_ext as br
from nf4lora.benchmark import Case, provider_fn, forced_backend
mn = load_alt(".s19/main", "mainx")
new_dx = br.qlora_dx
for (N, K) in ((4096, 14336), (14336, 4096), (28672, 8192)):
    for M in (4096, 16384):
        c = Case(M, K, N, 16, "cuda")
        x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
        def stepper(name, dx):
            fn = provider_fn(name, c)
            def step():
                if dx is not None:
                    br.qlora_dx = dx
                with forced_backend(getattr(fn, "backend", None)):
                    y = fn(x, A, B)
                    return torch.autograd.grad(y, (x, A, B), c.g)
            return step
        row = {"M": M, "N": N, "K": K, "r": 16, **interleaved_us({"main_dx": stepper("nf4lora", mn.qlora_dx),
                                                                  "new_dx": stepper("nf4lora", new_dx),
                                                                  "dense": stepper("dense_bf16", None)}, rounds=4, calls=3)}
        br.qlora_dx = new_dx
        row["new/main"] = round(row["new_dx"] / row["main_dx"], 3)
        row["new/dense"] = round(row["new_dx"] / row["dense"], 3)
        print(json.dumps(row), flush=True)
        del c, x, A, B
