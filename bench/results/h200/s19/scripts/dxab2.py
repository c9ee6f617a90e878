"""dx at M 4096 / 16384, r = 16: main (alt: token-tile-fastest order, fold kernel) against this branch (grouped order,
fold without its kernel), interleaved; the branch's time per token relative to M = 4096 shows the scaling."""
import json, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, ".s19")
from diag_fwd import interleaved_us
from alt import load_alt
from nf4lora import _cuda_ext as br
from nf4lora.benchmark import Case
mn = load_alt(".s19/main", "mainx")
for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192), (8192, 8192)):
    for M in (4096, 16384):
        c = Case(M, K, N, 16, "cuda")
        gB = c.g.float() @ c.B.float()
        fns = {"main": lambda: mn.qlora_dx(c.g, c.q, gB, c.A, c.scale, True),
               "new": lambda: br.qlora_dx(c.g, c.q, gB, c.A, c.scale, True)}
        a, b = fns["main"]().double(), fns["new"]().double()
        row = {"M": M, "N": N, "K": K, "r": 16, "equal": bool(torch.equal(a, b)), **interleaved_us(fns, rounds=4, calls=3)}
        row["new/main"] = round(row["new"] / row["main"], 3)
        row["cublas_gW_us"] = interleaved_us({"mm": lambda: c.g @ c.w}, rounds=2, calls=3)["mm"]
        print(json.dumps(row), flush=True)
        del c, gB, a, b
