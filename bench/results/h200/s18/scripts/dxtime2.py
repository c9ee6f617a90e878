"""dx op: per-kernel GPU time (L2 flushed, mean of 20) and do_bench of _cuda_ext.qlora_dx: no LoRA, LoRA folded (ws), LoRA in the epilogue (ws_epilogue)."""
import json, sys
import torch
sys.path.insert(0, "bench")
from diag_fwd import kernel_us
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case, _do_bench
tag = sys.argv[1]
for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192)):
    for M in (1024, 4096):
        for r in (16, 64):
            c = Case(M, K, N, r, "cuda")
            gB = c.g.float() @ c.B.float()
            row = {"tag": tag, "M": M, "N": N, "K": K, "r": r}
            for name, lora, var in (("nolora", False, "auto"), ("fold", True, "auto"), ("epi", True, "ws_epilogue")):
                fn = lambda lora=lora, var=var: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, lora, 0, var)
                row[name] = round(sum(kernel_us(fn, iters=20).values()), 1)
                row[name + "_bench"] = round(_do_bench(fn) * 1e3, 1)
            print(json.dumps(row), flush=True)
