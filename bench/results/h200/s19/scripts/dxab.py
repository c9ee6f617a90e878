"""dx A/B in one process: main's fold (alt: fold kernel + 64-rank T/residual chunks), this branch's fold (gB and A by
TMA, split in registers), this branch's epilogue variant, no LoRA; interleaved event timing; max relative difference
of the branch's folded dx to main's and errors against float64 at the smaller shapes."""
import json, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, ".s19")
from diag_fwd import interleaved_us
from alt import load_alt
from nf4lora import _cuda_ext as br, dequantize_nf4
from nf4lora.benchmark import Case
mn = load_alt(".s19/main", "mainx")
for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192)):
    for M in (1024, 4096):
        for r in (16, 32, 64):
            c = Case(M, K, N, r, "cuda")
            gB = c.g.float() @ c.B.float()
            fns = {"main": lambda: mn.qlora_dx(c.g, c.q, gB, c.A, c.scale, True),
                   "new": lambda: br.qlora_dx(c.g, c.q, gB, c.A, c.scale, True),
                   "epi": lambda: br.qlora_dx(c.g, c.q, gB, c.A, c.scale, True, 0, "ws_epilogue"),
                   "nolora": lambda: br.qlora_dx(c.g, c.q, gB, c.A, c.scale, False)}
            a, b = fns["main"]().double(), fns["new"]().double()
            row = {"M": M, "N": N, "K": K, "r": r, "new_vs_main_maxrel": float(f"{((a - b).abs().max() / a.abs().max()).item():.2e}"),
                   **interleaved_us(fns, rounds=6, calls=4)}
            if M == 1024 and N * K <= 14336 * 4096:
                ref = c.g.double() @ dequantize_nf4(c.q, torch.float32).double() + c.scale * gB.double() @ c.A.double()
                nrm = lambda t: round(((t - ref).norm() / ref.norm()).item(), 6)
                row.update(err_main=nrm(a), err_new=nrm(b))
            row["new/main"] = round(row["new"] / row["main"], 3)
            row["new/epi"] = round(row["new"] / row["epi"], 3)
            row["lora_cost_new"] = round(row["new"] / row["nolora"] - 1, 3)
            print(json.dumps(row), flush=True)
