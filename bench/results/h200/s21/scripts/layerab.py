"""QLoRALinear against a 16-bit LoRA layer (nn.Linear bf16 frozen + two LoRA Linears, PEFT's math),
interleaved in one process: fwd+bwd step (x, A, B need grad) and no-grad forward, host walls."""
import json, os, statistics, time
import torch
from torch import nn
import nf4lora
from nf4lora import QLoRALinear

TREE = os.environ.get("TREE", "?")
torch.manual_seed(0)


class Lora16(nn.Module):
    def __init__(self, base: nn.Linear, r=16, alpha=16):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, r, bias=False, dtype=base.weight.dtype, device=base.weight.device)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, dtype=base.weight.dtype, device=base.weight.device)
        self.s = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.s


for (M, N, K) in ((1, 4096, 4096), (16, 4096, 4096), (128, 4096, 4096), (128, 14336, 4096), (1024, 4096, 4096)):
    lin = nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16)
    ours = QLoRALinear.from_linear(lin, r=16, alpha=16)
    nn.init.normal_(ours.lora_B, std=0.01)
    dense = Lora16(lin)
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)

    def step(layer):
        params = [x] + [p for p in layer.parameters() if p.requires_grad]
        return lambda: torch.autograd.grad(layer(x), params, g)

    def fwd(layer):
        def run():
            with torch.no_grad():
                return layer(x)
        return run

    variants = {"dense": step(dense), "ours": step(ours), "fwd_dense": fwd(dense), "fwd_ours": fwd(ours)}
    for f in variants.values():
        for _ in range(20):
            f()
    torch.cuda.synchronize()
    res = {k: [] for k in variants}
    for rd in range(6):
        items = list(variants.items())
        if rd % 2:
            items = items[::-1]
        for k, f in items:
            t = time.perf_counter()
            for _ in range(100):
                f()
            torch.cuda.synchronize()
            res[k].append((time.perf_counter() - t) / 100 * 1e6)
    med = {k: round(statistics.median(v), 1) for k, v in res.items()}
    print(json.dumps({"tree": TREE, "M": M, "N": N, "K": K, **med, "step ours/dense": round(med["ours"] / med["dense"], 3),
                      "fwd ours/dense": round(med["fwd_ours"] / med["fwd_dense"], 3)}), flush=True)
