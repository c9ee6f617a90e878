"""A/B of the dx's LoRA term, folded (default) vs in the epilogue (ws_epilogue), interleaved (events per call after an
L2 flush, alternating order, medians): the dx alone and one whole forward+backward through ops.qlora_linear
(x, A, B requiring grad), at the grid's largest points."""
import functools, json, sys
import torch
sys.path.insert(0, "bench")
from diag_fwd import interleaved_us
from nf4lora import _cuda_ext, ops
from nf4lora.benchmark import Case

def interleaved(fns):
    return interleaved_us(fns, rounds=6, calls=3)


def step_fn(c, dx_impl):
    x = c.x.clone().requires_grad_(); A = c.A.clone().requires_grad_(); B = c.B.clone().requires_grad_()
    def run():
        _cuda_ext.qlora_dx = dx_impl
        try:
            ops.qlora_linear(x, c.q, A, B, c.scale).backward(c.g)
        finally:
            _cuda_ext.qlora_dx = orig
        x.grad = A.grad = B.grad = None
    return run

for (N, K) in ((28672, 8192), (4096, 14336), (14336, 4096)):
    for M in (4096, 16384):
        for r in (16, 64):
            c = Case(M, K, N, r, "cuda")
            gB = c.g.float() @ c.B.float()
            row = {"M": M, "N": N, "K": K, "r": r}
            row.update({"dx_" + k: v for k, v in interleaved({
                "fold": lambda: orig(c.g, c.q, gB, c.A, c.scale, True),
                "epi": lambda: epi(c.g, c.q, gB, c.A, c.scale, True)}).items()})
            row.update({"step_" + k: v for k, v in interleaved({"fold": step_fn(c, orig), "epi": step_fn(c, epi)}).items()})
            row["dx_ratio"] = round(row["dx_fold"] / row["dx_epi"], 3)
            row["step_ratio"] = round(row["step_fold"] / row["step_epi"], 3)
            print(json.dumps(row), flush=True)
            del c, gB
            torch.cuda.empty_cache()
