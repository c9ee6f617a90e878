"""Interleaved fwd+bwd step walls of the eager path's variants against dense_bf16, in one process.

At M <= 1024 a QLoRA layer's step is host time on the H200's machine, and the host's speed moves
±10-30% between calls and processes (bench/results/h200/s20, s21): only ratios measured in one
process, with the variants interleaved, say anything. Variants: dense_bf16 (the benchmark's
provider's math: F.linear on a bf16 W plus the unfused LoRA matmuls), nf4lora with the C++ autograd node (ops.EAGER_NODE, where it applies), nf4lora with the
Python autograd.Function. With --dropout p, both nf4lora variants take x̃ = dropout(x, p) drawn in the
step (as QLoRALinear does in training) and dense_bf16 applies dropout of the same p to its LoRA
branch. Prints one JSON line per shape: medians of `rounds` blocks of `steps`
steps (µs) and their ratios to dense. The two nf4lora variants' gradients are compared before
timing (grads_equal: bit-equal or not), and node_ran says whether the C++ node took the call.

    python bench/step_ab.py [--shapes 128x4096x4096,...] [--rounds 6] [--steps 100] [--dropout 0.1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from nf4lora import ops
from nf4lora.benchmark import Case, _lora


def _step(f, x, A, B, g):
    return lambda: torch.autograd.grad(f(x, A, B), (x, A, B), g)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="16x4096x4096,128x4096x4096,128x14336x4096,1024x4096x4096",
                   help="MxNxK, comma-separated")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout p (0: x̃ is x)")
    args = p.parse_args()
    for shape in args.shapes.split(","):
        M, N, K = (int(v) for v in shape.split("x"))
        c = Case(M, K, N, args.rank, "cuda")
        x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))
        p_drop = args.dropout

        def dense(x, A, B):  # the benchmark's dense_bf16 provider, with its LoRA branch on x̃
            xl = F.dropout(x, p_drop) if p_drop else x
            return F.linear(x, c.w) + _lora(xl, A, B, c.scale)

        def with_node(on):
            def run(x, A, B):
                old, ops.EAGER_NODE = ops.EAGER_NODE, on
                try:
                    xl = F.dropout(x, p_drop) if p_drop else None
                    return ops.qlora_linear(x, c.q, A, B, c.scale, x_lora=xl)
                finally:
                    ops.EAGER_NODE = old
            return run

        variants = {"dense": _step(dense, x, A, B, c.g), "node": _step(with_node(True), x, A, B, c.g),
                    "python": _step(with_node(False), x, A, B, c.g)}
        grads = {}
        for k in ("node", "python"):
            torch.manual_seed(0)  # the same dropout mask for both
            grads[k] = variants[k]()
        same = all(torch.equal(a, b) for a, b in zip(grads["node"], grads["python"]))
        node_ran = "QLoRANode" in (with_node(True)(x, A, B).grad_fn.name())
        for f in variants.values():
            for _ in range(20):
                f()
        torch.cuda.synchronize()
        res = {k: [] for k in variants}
        for rd in range(args.rounds):
            for k, f in (list(variants.items()) if rd % 2 == 0 else list(variants.items())[::-1]):
                t = time.perf_counter()
                for _ in range(args.steps):
                    f()
                torch.cuda.synchronize()
                res[k].append((time.perf_counter() - t) / args.steps * 1e6)
        med = {k: round(statistics.median(v), 1) for k, v in res.items()}
        print(json.dumps({"M": M, "N": N, "K": K, "r": args.rank, "dropout": p_drop, "node_ran": node_ran,
                          "grads_equal": same, **med,
                          "node/dense": round(med["node"] / med["dense"], 3),
                          "python/dense": round(med["python"] / med["dense"], 3),
                          "node/python": round(med["node"] / med["python"], 3)}), flush=True)


if __name__ == "__main__":
    main()
