"""Where a backward's time goes (GPU only, sm_90): the CUDA dx kernel alone against cuBLAS, and
the kernels of one forward+backward through the layer.

    python bench/diag_bwd.py [--out DIR] [--shapes 0,1] [--ms 128,4096]

1. ``dx``: dx = g·W + s·(g·B)·A by the CUDA kernel alone (do_bench median, L2 flushed) for
   block_m 128 and 256 and the plan's choice, with its plan (tokens per block, reduction split)
   and TFLOP/s, next to cuBLAS g·W on the bf16 W (``cublas_us``: the dense backward's dx GEMM).
2. ``step``: GPU time of each kernel of one forward+backward through qlora_linear (x, A, B
   requiring grad) on the default backend, and their sum.
Prints one JSON line per measurement (also to DIR/diag_bwd.jsonl when --out is given).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))

from diag_fwd import emit, kernel_us  # noqa: E402

from nf4lora import _cuda_ext, ops  # noqa: E402
from bench_qlora import SHAPES  # noqa: E402
from nf4lora.benchmark import Case, _do_bench  # noqa: E402


def dx_alone(c: Case, sink):
    gB = c.g.float() @ c.B.float()
    flops = 2 * c.M * c.N * c.K
    row = {"what": "dx", "M": c.M, "K": c.K, "N": c.N, "r": c.r,
           "cublas_us": round(_do_bench(lambda: c.g @ c.w) * 1e3, 2)}
    for block_m in (0, 128, 256):
        plan = _cuda_ext._C.plan_qlora_dx(c.M, c.N, c.K, block_m)
        us = _do_bench(lambda b=block_m: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, True, b)) * 1e3
        row[f"bm{block_m}"] = {"plan": plan[:3], "us": round(us, 2), "TFLOPs": round(flops / us / 1e6, 1),
                               "x_cublas": round(us / row["cublas_us"], 3)}
    emit(row, sink)


def step(c: Case, sink):
    x = c.x.clone().requires_grad_()
    A, B = c.A.clone().requires_grad_(), c.B.clone().requires_grad_()

    def run():
        y = ops.qlora_linear(x, c.q, A, B, c.scale)
        y.backward(c.g)

    ops.last_path.clear()
    run()
    ks = kernel_us(run)
    emit({"what": "step", "M": c.M, "K": c.K, "N": c.N, "r": c.r, "path": dict(ops.last_path),
          "kernels_us": ks, "kernel_sum_us": round(sum(ks.values()), 2)}, sink)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    p.add_argument("--shapes", default=",".join(str(i) for i in range(len(SHAPES))))
    p.add_argument("--ms", default="128,1024,4096")
    args = p.parse_args()
    sink = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        sink = open(os.path.join(args.out, "diag_bwd.jsonl"), "a")
    for i in (int(s) for s in args.shapes.split(",")):
        K, N = SHAPES[i]
        for M in (int(m) for m in args.ms.split(",")):
            c = Case(M, K, N, 16, "cuda")
            dx_alone(c, sink)
            step(c, sink)
            del c
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
