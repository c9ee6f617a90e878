"""Forward A/B: the large-M forward's LoRA term folded into the ws kernel's reduction (default) vs in the epilogue
(fold_lora=False), interleaved (events per call after an L2 flush, alternating order, medians). r = 16 is not folded
(mma_fold_cols(16) = 0): both columns run the same code there (the noise floor)."""
import json, sys
import torch
sys.path.insert(0, "bench")
from diag_fwd import interleaved_us
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case

def interleaved(fns):
    return interleaved_us(fns, rounds=6, calls=4)


for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192)):
    for M in (1024, 4096):
        for r in (16, 32, 64):
            c = Case(M, K, N, r, "cuda")
            f = lambda fold: (lambda: _cuda_ext.qlora_forward_large(c.x, None, c.q, c.A, c.B, c.scale, None, fold_lora=fold))
            row = {"M": M, "N": N, "K": K, "r": r, "fold_cols": _cuda_ext._C.mma_fold_cols(r),
                   **interleaved({"fold": f(True), "epi": f(False)})}
            row["ratio"] = round(row["fold"] / row["epi"], 3)
            print(json.dumps(row), flush=True)
