"""wip-fold-packed (alt) vs main, in one process: forward fold (main) / fold (packed) / epilogue, and the dx
fold (main) / fold (packed) / no LoRA; interleaved event timing; max |diff| between the two builds' outputs."""
import json, sys
import torch
sys.path.insert(0, "bench"); sys.path.insert(0, ".s19")
from diag_fwd import interleaved_us
from alt import load_alt
from nf4lora import _cuda_ext as main
from nf4lora.benchmark import Case
fp = load_alt(".s19/fp", "fp")
what = sys.argv[1]
for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192)):
    for M in (1024, 4096):
        for r in (16, 32, 64):
            c = Case(M, K, N, r, "cuda")
            if what == "fwd":
                f = lambda m, fold: (lambda: m.qlora_forward_large(c.x, None, c.q, c.A, c.B, c.scale, None, fold_lora=fold))
                fns = {"main": f(main, True), "packed": f(fp, True), "epi": f(main, False)}
            else:
                gB = c.g.float() @ c.B.float()
                f = lambda m, lora: (lambda: m.qlora_dx(c.g, c.q, gB, c.A, c.scale, lora))
                fns = {"main": f(main, True), "packed": f(fp, True), "nolora": f(main, False)}
            a, b = fns["main"](), fns["packed"]()
            a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
            diff = ((a.float() - b.float()).abs().max() / a.float().abs().max()).item()
            row = {"what": what, "M": M, "N": N, "K": K, "r": r, "maxdiff_rel": float(f"{diff:.2e}"),
                   **interleaved_us(fns, rounds=6, calls=4)}
            row["packed/main"] = round(row["packed"] / row["main"], 3)
            print(json.dumps(row), flush=True)
