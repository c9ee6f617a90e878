"""Where a backward's time goes (GPU only, sm_90): the CUDA dx kernel alone against cuBLAS, and
the kernels of one forward+backward through the layer.

    python bench/diag_bwd.py [--out DIR] [--shapes 0,1] [--ms 128,4096]

1. ``dx``: dx = g·W + s·(g·B)·A by the CUDA kernel alone (do_bench median, L2 flushed), the SS
   and the warp-specialized kernel (``ss_bm*``, ``ws_bm*``), each for block_m 128 and 256 and the
   plan's choice, with its plan (tokens per block, reduction split, tiles, ws) and TFLOP/s, next
   to cuBLAS g·W on the bf16 W (``cublas_us``: the dense backward's dx GEMM).
2. ``step``: GPU time of each kernel of one forward+backward through qlora_linear (x, A, B
   requiring grad) on the default backend, and their sum, next to the sum for dense_bf16's step
   (where the wall-clock benchmark is host-bound, the GPU-time ratio is the kernels' own).
3. ``--host``: at M = 128 on 4096×4096 (where the benchmark is host-bound), wall time per
   forward+backward of back-to-back calls (CPU side, then with the final sync) for nf4lora and for
   dense_bf16, and a cProfile of nf4lora's.
Prints one JSON line per measurement (also to DIR/diag_bwd.jsonl when --out is given).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.dirname(__file__))

from diag_fwd import cprofile, emit, host_us, kernel_us  # noqa: E402

from nf4lora import _cuda_ext, ops  # noqa: E402
from bench_qlora import SHAPES  # noqa: E402
from nf4lora.benchmark import Case, _do_bench, provider_fn  # noqa: E402


def dx_alone(c: Case, sink):
    gB = c.g.float() @ c.B.float()
    flops = 2 * c.M * c.N * c.K
    row = {"what": "dx", "M": c.M, "K": c.K, "N": c.N, "r": c.r,
           "cublas_us": round(_do_bench(lambda: c.g @ c.w) * 1e3, 2)}
    for variant in ("ss", "ws"):
        for block_m in (0, 128, 256):
            plan = _cuda_ext._C.plan_qlora_dx(c.M, c.N, c.K, block_m, _cuda_ext.DX_VARIANTS[variant])
            us = _do_bench(lambda b=block_m, v=variant: _cuda_ext.qlora_dx(c.g, c.q, gB, c.A, c.scale, True, b, v))
            us *= 1e3
            row[f"{variant}_bm{block_m}"] = {"plan": plan, "us": round(us, 2), "TFLOPs": round(flops / us / 1e6, 1),
                                             "x_cublas": round(us / row["cublas_us"], 3)}
    emit(row, sink)


def fwd_bwd(c: Case, provider=None):
    """One forward+backward (x, A, B requiring grad) through nf4lora's op, or through a benchmark
    provider's function."""
    x = c.x.clone().requires_grad_()
    A, B = c.A.clone().requires_grad_(), c.B.clone().requires_grad_()
    fn = provider_fn(provider, c) if provider else (lambda x, A, B: ops.qlora_linear(x, c.q, A, B, c.scale))

    def run():
        fn(x, A, B).backward(c.g)

    return run


def step(c: Case, sink):
    run = fwd_bwd(c)
    ops.last_path.clear()
    run()
    ks = kernel_us(run)
    dense = kernel_us(fwd_bwd(c, "dense_bf16"))  # the same step's GPU time for 16-bit LoRA
    emit({"what": "step", "M": c.M, "K": c.K, "N": c.N, "r": c.r, "path": dict(ops.last_path),
          "kernels_us": ks, "kernel_sum_us": round(sum(ks.values()), 2),
          "dense_bf16_kernel_sum_us": round(sum(dense.values()), 2)}, sink)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out")
    p.add_argument("--shapes", default=",".join(str(i) for i in range(len(SHAPES))))
    p.add_argument("--ms", default="128,1024,4096")
    p.add_argument("--host", action="store_true", help="only the host-overhead measurement (3.)")
    args = p.parse_args()
    sink = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        sink = open(os.path.join(args.out, "diag_bwd.jsonl"), "a")
    if args.host:
        c = Case(128, 4096, 4096, 16, "cuda")
        row = {"what": "host", "M": 128, "K": 4096, "N": 4096, "r": 16}
        for prov in ("nf4lora", "dense_bf16"):
            run = fwd_bwd(c, None if prov == "nf4lora" else prov)
            row[prov] = {"host_us": [round(v, 2) for v in host_us(run, 500)], "bench_us": round(_do_bench(run) * 1e3, 2)}
        text = cprofile(fwd_bwd(c), n=500, top=30)
        print(text, flush=True)
        row["profile"] = text[-8000:]
        emit(row, sink)
        return
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
