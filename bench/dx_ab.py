"""The dx kernels (qlora_dx's variants, default ws = shipped, rs = the decode in the consumers' registers) in one
process, from CUDA graphs replayed alternately.

    python bench/dx_ab.py [--shapes "M,K,N;..."] [--variants ws,rs] [--r 16] [--block-m 0] [--rounds 10] [--out FILE]

Per shape: _cuda_ext.qlora_dx (bf16, rank r, NF4 blocksize 64 with double quant, the LoRA term added; block_m 0 =
the plan's) over distinct weights (>= 256 MB of NF4 per pass, so no call finds W in L2), one CUDA graph per variant;
median time per call, TFLOP/s of g·W, each variant's time over the first's, the largest difference from the
first's output relative to its largest magnitude (the kernels sum in different orders: not the same bits) and the
SM clock while busy. One JSON line per shape.
"""

import argparse
import json
import math
import os
import sys

import torch

from nf4lora import _cuda_ext, quantize_nf4

sys.path.insert(0, os.path.dirname(__file__))
from gemv_time import capture, clock_while_busy, time_interleaved  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="4096,4096,14336;4096,14336,4096;4096,8192,28672;8192,4096,14336;"
                                       "8192,4096,1024;1024,4096,14336;256,4096,4096")
    p.add_argument("--variants", default="ws,rs")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--block-m", type=int, default=0, help="tokens per block (0: the plan's choice)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out")
    args = p.parse_args(argv)
    sink = open(args.out, "w") if args.out else None
    dev, r, variants = "cuda", args.r, args.variants.split(",")
    torch.manual_seed(0)
    for part in args.shapes.split(";"):
        M, K, N = (int(v) for v in part.split(","))
        n_w = max(2, min(8, math.ceil(256e6 / (N * K // 2))))
        qs = [quantize_nf4(torch.randn(N, K, device=dev) * K**-0.5, 64, double_quant=True) for _ in range(n_w)]
        A = (torch.randn(r, K, device=dev) * K**-0.5).bfloat16()
        B = (torch.randn(N, r, device=dev) * r**-0.5).bfloat16()
        g = torch.randn(M, N, device=dev, dtype=torch.bfloat16)
        gB = g.float() @ B.float()
        graphs, outs = {}, {}
        with torch.no_grad():
            for v in variants:
                graphs[v], outs[v] = capture(
                    lambda v=v: [_cuda_ext.qlora_dx(g, qs[i], gB, A, 2.0, True, args.block_m, v) for i in range(n_w)])
        ms = time_interleaved(graphs, args.rounds)
        base = variants[0]
        row = {"op": "dx", "M": M, "K": K, "N": N, "r": r, "block_m": args.block_m, "weights": n_w,
               "git_sha": os.environ.get("NF4LORA_GIT_SHA", "")}
        row["sm_MHz"] = clock_while_busy(graphs[base], ms[base] * 1e-3)
        for v in variants:
            us = ms[v] * 1e3 / n_w
            row[f"us[{v}]"] = round(us, 1)
            row[f"tflops[{v}]"] = round(2 * M * N * K / (us * 1e-6) / 1e12, 1)
            if v != base:
                row[f"ratio[{v}/{base}]"] = round(ms[v] / ms[base], 3)
                row[f"maxdiff[{v}]"] = max(float((a.float() - b.float()).abs().max() / b.float().abs().max())
                                           for a, b in zip(outs[v], outs[base]))
        line = json.dumps(row)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")


if __name__ == "__main__":
    main()
