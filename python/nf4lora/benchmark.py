"""Benchmark harness (DESIGN.md §5): providers, timing, ceilings, roofs, summaries.

bench/bench_qlora.py declares the grid and writes results; the demo calls :func:`run_grid`
for one shape. Times are ``triton.testing.do_bench`` medians (it flushes L2 between runs).

Providers for one layer y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (bf16, x (M, K), W (N, K), r):
  naive       W dequantized by torch ops every call, F.linear, two LoRA matmuls
  dense_bf16  W kept in bf16 (16-bit LoRA): F.linear + two LoRA matmuls through cuBLAS
  bnb_peft    bitsandbytes matmul_4bit + LoRA matmuls (only where bitsandbytes imports)
  nf4lora     nf4lora's ops with the dispatcher's default backend choice per op
  nf4lora_<backend>  the same with NF4LORA_BACKEND=<backend> forced
Modes: fwd (no grad), fwdbwd (x, A, B need grad), mem (peak extra memory of one fwd+bwd).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F

from . import ops
from .nf4 import dequantize_nf4, quantize_nf4

DTYPE = torch.bfloat16
MODES = ("fwd", "fwdbwd", "mem")
# "nf4lora" is what a user gets (the dispatcher's choice per op); nf4lora_<backend> forces one.
DEFAULT_PROVIDERS = ["naive", "dense_bf16", "bnb_peft", "nf4lora"]


@contextlib.contextmanager
def env(name: str, value: Optional[str]):
    """Set environment variable ``name`` to ``value`` (None: leave it) inside the block."""
    old = os.environ.get(name)
    if value:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def forced_backend(backend: Optional[str]):
    """NF4LORA_BACKEND=backend inside the block; None or "": the dispatcher's own choice, and no
    environment work at all (the "nf4lora" provider's step runs this twice per call: host time that
    dense_bf16's step does not pay)."""
    return env("NF4LORA_BACKEND", backend) if backend else contextlib.nullcontext()


def _do_bench(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")  # milliseconds


def _copy_seconds(device, n: int) -> float:
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    return _do_bench(lambda: dst.copy_(src)) * 1e-3


def copy_bandwidth(device) -> float:
    """Bytes read + written per second by a 1 GiB float32 copy (freed before returning)."""
    n = 2**28
    return 2 * n * 4 / _copy_seconds(device, n)


def measure_ceilings(device) -> Dict[str, float]:
    """Copy bandwidth (bytes read + written per second) and the dense bf16 GEMM rate (8192³)."""
    copy_bw = copy_bandwidth(device)
    a = torch.randn(8192, 8192, device=device, dtype=DTYPE)
    b = torch.randn(8192, 8192, device=device, dtype=DTYPE)
    t = _do_bench(lambda: a @ b) * 1e-3
    return {"copy_bytes_per_s": copy_bw, "bf16_flops_per_s": 2 * 8192**3 / t}


def work(M: int, K: int, N: int, r: int, mode: str, nested: bool = True) -> Dict[str, float]:
    """The fewest bytes and the FLOPs of one call (NF4 W read once per pass, bf16 activations)."""
    w_bytes = N * K / 2 + N * K / 64 * (1 if nested else 4)
    lora_bytes = 2 * r * (K + N)
    if mode == "fwd":
        return {"bytes": w_bytes + lora_bytes + 2 * M * (K + N),
                "flops": 2 * M * N * K + 2 * M * r * (K + N)}
    # fwd+bwd: W read twice (y and dx); x read twice, y written, g read, dx written.
    return {"bytes": 2 * w_bytes + 2 * lora_bytes + 2 * M * (3 * K + 2 * N),
            "flops": 4 * M * N * K + 6 * M * r * (K + N)}


class Case:
    """Inputs of one (M, K, N, r) point, shared by every provider."""

    def __init__(self, M, K, N, r, device, q=None, w=None):
        gen = torch.Generator(device=device).manual_seed(M * 31 + K * 7 + N + r)
        self.M, self.K, self.N, self.r = M, K, N, r
        self.w = w if w is not None else (torch.randn(N, K, device=device, generator=gen) * K**-0.5).to(DTYPE)
        self.q = q if q is not None else quantize_nf4(self.w, 64, double_quant=True)
        self.x = torch.randn(M, K, device=device, dtype=DTYPE, generator=gen)
        self.A = (torch.randn(r, K, device=device, generator=gen) * K**-0.5).to(DTYPE)
        self.B = (torch.randn(N, r, device=device, generator=gen) * r**-0.5).to(DTYPE)
        self.g = torch.randn(M, N, device=device, dtype=DTYPE, generator=gen)
        self.scale = 2.0


def _lora(x, A, B, s):
    return s * F.linear(F.linear(x, A), B)


def provider_fn(name: str, c: Case) -> Optional[Callable]:
    """A function of (x, A, B) → y for provider ``name``, or None where it cannot run here."""
    if name == "naive":
        return lambda x, A, B: F.linear(x, dequantize_nf4(c.q, DTYPE)) + _lora(x, A, B, c.scale)
    if name == "dense_bf16":
        return lambda x, A, B: F.linear(x, c.w) + _lora(x, A, B, c.scale)
    if name == "bnb_peft":
        try:
            import bitsandbytes as bnb
            import bitsandbytes.functional as bnbf
        except ImportError:
            return None
        packed, state = bnbf.quantize_4bit(c.w, blocksize=64, quant_type="nf4", compress_statistics=True)
        return lambda x, A, B: bnb.matmul_4bit(x, packed.t(), quant_state=state) + _lora(x, A, B, c.scale)
    if name == "nf4lora_triton_gather":  # the Triton kernel with codebook loads instead of prmt
        run = provider_fn("nf4lora_triton", c)
        if run is None:
            return None

        def gather(x, A, B):
            with env("NF4LORA_TRITON_DECODE", "gather"):
                return run(x, A, B)
        gather.backend = run.backend
        return gather
    if name == "nf4lora" or name.startswith("nf4lora_"):
        backend = name[len("nf4lora_"):] or None
        try:  # a backend without a backward kernel still has forward rows (bench_one skips the rest)
            with forced_backend(backend):
                ops.select_backend("qlora_linear", c.x.device, (c.x, None, c.q, c.A, c.B, c.scale, None))
        except RuntimeError:
            return None

        def run(x, A, B):  # bench_one forces the backend around the backward as well
            with forced_backend(backend):
                return ops.qlora_linear(x, c.q, A, B, c.scale)
        run.backend = backend
        return run
    raise ValueError(f"unknown provider {name!r}")


def _path(name: str) -> Dict[str, str]:
    """Which backend actually ran each nf4lora op (a fallback shows here)."""
    if not name.startswith("nf4lora"):
        return {}
    return {"path": ", ".join(f"{op}={p}" for op, p in sorted(ops.last_path.items()))}


def bench_one(name: str, c: Case, mode: str) -> Optional[Dict[str, float]]:
    fn = provider_fn(name, c)
    if fn is None:
        return None
    ops.last_path.clear()
    if mode == "fwd":
        with torch.no_grad():
            ms = _do_bench(lambda: fn(c.x, c.A, c.B))
        return {"time_us": ms * 1e3, **_path(name)}
    x, A, B = (t.detach().requires_grad_() for t in (c.x, c.A, c.B))

    def step():
        with forced_backend(getattr(fn, "backend", None)):  # the backward runs after fn returns
            y = fn(x, A, B)
            return torch.autograd.grad(y, (x, A, B), c.g)

    try:
        step()
    except RuntimeError as exc:  # e.g. a forced backend that has no backward kernel
        if "NF4LORA_BACKEND" not in str(exc):
            raise
        return None

    if mode == "fwdbwd":
        return {"time_us": _do_bench(step) * 1e3, **_path(name)}
    torch.cuda.synchronize()
    step()  # warm caches (cuBLAS workspaces, kernels) outside the measurement
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    grads = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del grads
    return {"peak_extra_mb": peak / 2**20}


def run_grid(shapes: Iterable, Ms: Iterable[int], ranks: Iterable[int], modes: Iterable[str],
             providers: Optional[List[str]] = None, device="cuda", ceilings=None,
             log: Callable[[str], None] = print, sink: Optional[Callable[[Dict], None]] = None) -> List[Dict]:
    """Benchmark every (shape (K, N), M, r, mode, provider); rows carry time, rate and % of roof."""
    device = torch.device(device)
    providers = providers or DEFAULT_PROVIDERS
    ceilings = ceilings or measure_ceilings(device)
    rows = []
    for K, N in shapes:
        w = q = None
        for r in ranks:
            for M in Ms:
                c = Case(M, K, N, r, device, q=q, w=w)
                w, q = c.w, c.q
                for mode in modes:
                    for name in providers:
                        torch.cuda.empty_cache()
                        res = bench_one(name, c, mode)
                        if res is None:
                            continue
                        row = {"provider": name, "mode": mode, "M": M, "K": K, "N": N, "r": r, **res}
                        if "time_us" in res:
                            wk = work(M, K, N, r, mode)
                            t = res["time_us"] * 1e-6
                            floor = max(wk["bytes"] / ceilings["copy_bytes_per_s"], wk["flops"] / ceilings["bf16_flops_per_s"])
                            row.update(tflops=wk["flops"] / t / 1e12, gbps=wk["bytes"] / t / 1e9,
                                       floor_us=floor * 1e6, pct_roof=100 * floor / t)
                        rows.append(row)
                        if sink is not None:
                            sink(row)
                        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
                del c
    return rows


def markdown_table(rows: List[Dict]) -> str:
    """One line per (K×N, M, r, mode): each provider's time (or MB) and its ratio to dense_bf16."""
    providers = sorted({r["provider"] for r in rows}, key=lambda p: (p != "dense_bf16", p))
    keyed: Dict[tuple, Dict[str, Dict]] = {}
    for r in rows:
        keyed.setdefault((r["K"], r["N"], r["M"], r["r"], r["mode"]), {})[r["provider"]] = r
    head = "| K×N | M | r | mode | " + " | ".join(providers) + " | best nf4lora % of roof |"
    lines = [head, "|" + "---|" * (5 + len(providers))]
    for (K, N, M, rr, mode), by in sorted(keyed.items()):
        ref = by.get("dense_bf16")
        cells = []
        for p in providers:
            row = by.get(p)
            if row is None:
                cells.append("–")
            elif mode == "mem":
                cells.append(f"{row['peak_extra_mb']:.0f} MB")
            else:
                ratio = f" ({row['time_us'] / ref['time_us']:.2f}×)" if ref and p != "dense_bf16" else ""
                cells.append(f"{row['time_us']:.0f} µs{ratio}")
        ours = [r.get("pct_roof") for p, r in by.items() if p.startswith("nf4lora") and "pct_roof" in r]
        best = f"{max(ours):.0f}%" if ours else "–"
        lines.append(f"| {K}×{N} | {M} | {rr} | {mode} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines)
