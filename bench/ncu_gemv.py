"""A few forwards of the CUDA small-M kernel for Nsight Compute (see bench/NOTES.md); --clock-control none:
the device's rules say to leave the clocks alone (ncu's default locks them to base for the profile):
    ncu --clock-control none --kernel-name regex:qlora_gemv --launch-skip 2 --launch-count 1 --section SpeedOfLight \
        --section WarpStateStats --section SchedulerStats --section Occupancy python bench/ncu_gemv.py [M K N [r]]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from nf4lora import ops  # noqa: E402
from nf4lora.benchmark import Case  # noqa: E402

M, K, N = (int(v) for v in sys.argv[1:4]) if len(sys.argv) > 3 else (1, 8192, 28672)
r = int(sys.argv[4]) if len(sys.argv) > 4 else 16
c = Case(M, K, N, r, "cuda")
with torch.no_grad():
    for _ in range(4):
        ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale)
torch.cuda.synchronize()
print("path", ops.last_path)
