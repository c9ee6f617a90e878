"""One dx ws and one forward ws launch (bf16, r 16) for Nsight Compute: argv M K N."""
import sys, torch
pass
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case
M, K, N = (int(a) for a in sys.argv[1:4])
c = Case(M, K, N, 16, "cuda")
gB = c.g.float() @ c.B.float()
for _ in range(2):
    _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, True, 0, "ws")
    _cuda_ext.qlora_forward_large(c.x, c.x, c.q, c.A, c.B, c.scale, None, "wgmma_ws")
torch.cuda.synchronize()
