# s32 run 6: chained small-M forwards (each layer's input the previous layer's output) with NF4LORA_UPDL=1 against
# the same chain with a device sync after every call: the same bits, or the PDL chain let a kernel read too early.
import os, torch
from nf4lora import ops, quantize_nf4
torch.manual_seed(0)
bad = 0
for M, K in ((1, 4096), (4, 4096), (8, 2048), (16, 4096), (3, 14336)):
    L = 12
    qs = [quantize_nf4(torch.randn(K, K, device="cuda") * K**-0.5, 64, double_quant=True) for _ in range(L)]
    As = [(torch.randn(16, K, device="cuda") * K**-0.5).bfloat16() for _ in range(L)]
    Bs = [(torch.randn(K, 16, device="cuda") * 0.25).bfloat16() for _ in range(L)]
    x0 = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    def chain(sync):
        h = x0
        with torch.no_grad():
            for i in range(L):
                h = ops.qlora_linear(h, qs[i], As[i], Bs[i], 2.0)
                h = h / h.float().norm(dim=-1, keepdim=True).clamp_min(1e-3).to(h.dtype) * K**0.5 if i % 3 == 2 else h
                if sync:
                    torch.cuda.synchronize()
        return h
    os.environ["NF4LORA_UPDL"] = "0"
    ref = chain(True)
    os.environ["NF4LORA_UPDL"] = "1"
    for rep in range(20):
        out = chain(False)
        if not torch.equal(out, ref):
            bad += 1
            print("MISMATCH", M, K, rep, (out.float() - ref.float()).abs().max().item())
            break
    print("chain", M, K, "ok" if torch.equal(out, ref) else "BAD", ops.last_path.get("qlora_linear"))
print("chain mismatches:", bad)
