import sys, time
sys.path.insert(0, "/work/main/.s21")
import stubs
import torch
from nf4lora import QLoRALinear, ops
M = 128
layer = QLoRALinear(64, 64, r=16, bias=False, compute_dtype=torch.bfloat16)
x = torch.randn(M, 64, dtype=torch.bfloat16)
q, A, B, s = layer.weight, layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling
fs = {"layer": lambda: layer(x), "op": lambda: ops.qlora_linear(x, q, A, B, s), "weight_prop": lambda: layer.weight}
with torch.no_grad():
    for f in fs.values():
        for _ in range(500): f()
    res = {k: [] for k in fs}
    for rd in range(10):
        for k, f in fs.items():
            t = time.perf_counter()
            for _ in range(2000): f()
            res[k].append((time.perf_counter() - t) / 2000 * 1e6)
print({k: round(min(v), 2) for k, v in res.items()})
