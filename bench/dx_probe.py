"""Layout probe of the CUDA dx kernel (diagnostic, GPU only): dx = I·W on a 128 × 256 NF4 weight,
saved with the expected W for each descriptor setting (NF4LORA_DX_DESC_SWAP=0/1) to <out>/probe.pt,
so a wrong shared-memory descriptor can be read off the permutation offline."""
import os
import sys

import torch

from nf4lora import _cuda_ext, dequantize_nf4, quantize_nf4

out = sys.argv[1]
torch.manual_seed(0)
N, K = 128, 256
q = quantize_nf4(torch.randn(N, K, device="cuda"), 64)
A = torch.randn(16, K, device="cuda", dtype=torch.bfloat16)
g = torch.eye(N, device="cuda", dtype=torch.bfloat16)
gB = torch.zeros(N, 16, device="cuda")
res = {"want": dequantize_nf4(q, torch.float32).to(torch.bfloat16).cpu()}
for swap in ("0", "1"):
    os.environ["NF4LORA_DX_DESC_SWAP"] = swap
    dx = _cuda_ext.qlora_dx(g, q, gB, A, 0.0, False)
    torch.cuda.synchronize()
    res["swap" + swap] = dx.cpu()
    print("swap", swap, "exact:", torch.equal(dx.cpu(), res["want"]))
torch.save(res, os.path.join(out, "probe.pt"))
