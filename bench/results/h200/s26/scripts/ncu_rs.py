"""One forward launch per variant (bf16, r 16) for Nsight Compute: argv M K N variant."""
import sys, torch
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case
M, K, N = (int(a) for a in sys.argv[1:4])
c = Case(M, K, N, 16, "cuda")
for _ in range(2):
    _cuda_ext.qlora_forward_large(c.x, c.x, c.q, c.A, c.B, c.scale, None, sys.argv[4])
torch.cuda.synchronize()
