"""dx op, interleaved: each call timed alone by CUDA events after an L2 flush; variants in alternating order over
rounds; median and quartiles per variant (robust to the clock drift seen in runs 1-3)."""
import json, sys
import torch
sys.path.insert(0, "bench")
from diag_fwd import interleaved_us
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case
tag = sys.argv[1]

def interleaved(fns):
    return interleaved_us(fns, rounds=8, calls=5, iqr=True)

for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192)):
    for M in (1024, 4096):
        for r in (16, 64):
            c = Case(M, K, N, r, "cuda")
            gB = c.g.float() @ c.B.float()
            fns = {"nolora": lambda: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, False),
                   "fold": lambda: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, True),
                   "epi": lambda: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, True, 0, "ws_epilogue")}
            row = {"tag": tag, "M": M, "N": N, "K": K, "r": r, **interleaved(fns)}
            row["fold_vs_epi"] = round(row["fold"] / row["epi"], 3)
            row["lora_cost_fold"] = round(row["fold"] / row["nolora"] - 1, 3)
            row["lora_cost_epi"] = round(row["epi"] / row["nolora"] - 1, 3)
            print(json.dumps(row), flush=True)
