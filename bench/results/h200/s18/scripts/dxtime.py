"""dx op timing: per-kernel GPU time (L2 flushed) and do_bench wall of _cuda_ext.qlora_dx, LoRA on/off, r 16/64."""
import json, sys
import torch
sys.path.insert(0, "bench")
from diag_fwd import kernel_us
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case, _do_bench
tag = sys.argv[1]
for (N, K) in ((14336, 4096), (4096, 14336), (28672, 8192)):
    for M in (1024, 4096):
        q = None
        for r in (16, 64):
            c = Case(M, K, N, r, "cuda")
            gB = c.g.float() @ c.B.float()
            row = {"tag": tag, "M": M, "N": N, "K": K, "r": r, "nested": c.q.nested_absmax is not None}
            for lora in (False, True):
                fn = lambda lora=lora: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, lora)
                ks = kernel_us(fn, iters=10)
                row[f"lora{int(lora)}_kern"] = round(sum(ks.values()), 1)
                row[f"lora{int(lora)}_names"] = list(ks)[:3]
                row[f"lora{int(lora)}_bench"] = round(_do_bench(fn) * 1e3, 1)
            print(json.dumps(row), flush=True)
