"""Forward A/B in one process: main's fold (alt: r % 8 == 0 and r >= 32 folded through the fold kernel, r = 16 in
the epilogue), this branch's tf32 fold, this branch's epilogue (fold_lora=False); interleaved event timing; the
relative difference of the branch's folded y to main's and of both to float64."""
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
            f = lambda m, fold: (lambda: m.qlora_forward_large(c.x, None, c.q, c.A, c.B, c.scale, None, fold_lora=fold))
            fns = {"main": f(mn, True), "tf32": f(br, True), "epi": f(br, False)}
            a, b, e = fns["main"]()[0].double(), fns["tf32"]()[0].double(), fns["epi"]()[0].double()
            row = {"M": M, "N": N, "K": K, "r": r, **interleaved_us(fns, rounds=6, calls=4)}
            if M == 1024 and N * K <= 14336 * 4096:
                ref = c.x.double() @ dequantize_nf4(c.q, torch.float32).double().t() + c.scale * (c.x.double() @ c.A.double().t()) @ c.B.double().t()
                nrm = lambda t: round(((t - ref).norm() / ref.norm()).item(), 6)
                row.update(err_main=nrm(a), err_tf32=nrm(b), err_epi=nrm(e))
            row["tf32/main"] = round(row["tf32"] / row["main"], 3)
            row["tf32/epi"] = round(row["tf32"] / row["epi"], 3)
            print(json.dumps(row), flush=True)
