"""One dx launch of a variant after a warm-up (bf16, r 16) for Nsight Compute: argv M K N variant."""
import sys, torch
from nf4lora import _cuda_ext
from nf4lora.benchmark import Case
M, K, N = (int(a) for a in sys.argv[1:4])
c = Case(M, K, N, 16, "cuda")
gB = c.g.float() @ c.B.float()
for _ in range(2):
    _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, True, 0, sys.argv[4])
torch.cuda.synchronize()
