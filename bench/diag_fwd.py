"""Where a forward's time goes (GPU only): host overhead vs kernel time, and the cost of the decode.

    python bench/diag_fwd.py [--out DIR]

1. Small M (1, 4, 8, 16) on the four shapes, r = 16, bf16, under no_grad, for the default small-M kernel,
   Triton's, and the other tile widths and pipelines (variant "cuda:TILES:PIPELINE"):
   - ``bench``: the benchmark's number (do_bench median with its L2 flush), through the op;
   - ``host``: wall time per call of 2000 back-to-back calls, CPU side (perf_counter, one sync at
     the end) — the op's own Python/dispatch/launch cost when the GPU keeps up;
   - ``host_direct``: the same calling the backend function directly (no torch.ops dispatch);
   - ``kernels``: GPU time of each kernel of one forward (torch.profiler, L2 flushed before each
     call), and their sum.
2. Large M (4096) on 8192×28672: the autotuned forward kernel with its real decode against the
   same kernel with the decode replaced by four register moves (garbage values, the same memory
   traffic and tiles): splits the decode's cost from the rest of the pipeline. Registers and
   spills of the compiled kernels are printed.
Prints one JSON line per measurement (also to DIR/diag.jsonl when --out is given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))

from nf4lora import ops
from nf4lora.benchmark import Case, _do_bench


def emit(row, sink):
    line = json.dumps(row)
    print(line, flush=True)
    if sink:
        sink.write(line + "\n")
        sink.flush()


def host_us(fn, n=2000):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e6, (t2 - t0) / n * 1e6


def interleaved_us(fns, rounds=6, calls=4, iqr=False):
    """A/B timing robust to the GPU's drift: each call of each function in ``fns`` (name → callable)
    timed alone by CUDA events after a 256 MB L2 flush, the functions in alternating order over
    ``rounds`` rounds of ``calls`` calls each; the median µs per name (and with ``iqr`` the quartiles
    as name + "_iqr"). (Profiler means drifted 15% between identical computations in one process on
    the H200; eighteenth session.)"""
    import statistics

    cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    ev = {k: [] for k in fns}
    names = list(fns)
    for f in fns.values():
        f()
    torch.cuda.synchronize()
    for rd in range(rounds):
        for k in (names if rd % 2 == 0 else names[::-1]):
            for _ in range(calls):
                cache.zero_()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fns[k]()
                e.record()
                ev[k].append((s, e))
        torch.cuda.synchronize()
    out = {}
    for k, pairs in ev.items():
        t = sorted(s.elapsed_time(e) * 1e3 for s, e in pairs)
        out[k] = round(statistics.median(t), 1)
        if iqr:
            out[k + "_iqr"] = [round(t[len(t) // 4], 1), round(t[3 * len(t) // 4], 1)]
    return out


def kernel_us(fn, iters=20):
    """Mean GPU time per call of each kernel fn launches (L2 flushed before each call)."""
    from torch.profiler import ProfilerActivity, profile

    cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            cache.zero_()
            fn()
        torch.cuda.synchronize()
    out = {}
    for ev in prof.key_averages():
        if ev.device_type.name == "CUDA" and "fill" not in ev.key.lower() and "zero" not in ev.key.lower():
            key = ev.key[:60]  # kernels whose names share these 60 characters add up under one key
            out[key] = round(out.get(key, 0.0) + ev.device_time_total / iters, 2)
    return out


def small_m(sink):
    from nf4lora import _cuda_ext
    from nf4lora.benchmark import forced_backend

    default_tiles, default_pipeline = _cuda_ext.GEMV_TILES, _cuda_ext.GEMV_PIPELINE
    for K, N in ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)):
        for M in (1, 4, 8, 16):
            c = Case(M, K, N, 16, "cuda")
            mb = (c.q.nbytes + 2 * 16 * (K + N) + 2 * M * (K + N)) / 1e6
            dense = _do_bench(lambda c=c: torch.nn.functional.linear(c.x, c.w)) * 1e3
            # "cuda:TILES:PIPELINE" (GEMV_TILES, GEMV_PIPELINE); None: the defaults
            for variant in (None, "triton", "cuda:2:tma", "cuda:2:cp_async"):
                backend, _, rest = (variant or "").partition(":")
                tiles, _, pipeline = rest.partition(":")
                if tiles:
                    _cuda_ext.GEMV_TILES = int(tiles)
                if pipeline:
                    _cuda_ext.GEMV_PIPELINE = pipeline
                with forced_backend(backend or None), torch.no_grad():
                    op = lambda c=c: ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale)  # noqa: E731
                    ops.last_path.clear()
                    op()
                    ks = kernel_us(op)
                    ksum = sum(ks.values())
                    row = {"what": "small_m", "M": M, "K": K, "N": N, "backend": variant,
                           "path": ops.last_path.get("qlora_linear"),
                           "bench_us": round(_do_bench(op) * 1e3, 2),
                           "host_us": [round(v, 2) for v in host_us(op)],
                           "kernels_us": ks, "kernel_sum_us": round(ksum, 2),
                           "kernel_TBps": round(mb / ksum, 3) if ksum else None,  # MB/µs
                           "dense_us": round(dense, 2), "MB": round(mb, 1)}
                emit(row, sink)
                _cuda_ext.GEMV_TILES, _cuda_ext.GEMV_PIPELINE = default_tiles, default_pipeline


def host_profile(sink):
    """cProfile of 2000 default-path forwards at M = 1 (where the host bounds the time)."""
    c = Case(1, 4096, 4096, 16, "cuda")
    with torch.no_grad():
        text = cprofile(lambda: ops.qlora_linear(c.x, c.q, c.A, c.B, c.scale))
    print(text, flush=True)
    emit({"what": "host_profile", "text": text[-6000:]}, sink)


def cprofile(fn, n=2000, top=18) -> str:
    """cProfile of n back-to-back calls of fn (after 50 warm-up calls): the top functions by own time."""
    import cProfile
    import io
    import pstats

    for _ in range(50):
        fn()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


_FAKE_DECODE = "mov.b32 $0, $4; mov.b32 $1, $4; mov.b32 $2, $4; mov.b32 $3, $4;"


def large_m(sink):
    import triton
    from nf4lora.triton_kernels import qlora_fwd as f

    K, N, M, r = 8192, 28672, 4096, 16
    c = Case(M, K, N, r, "cuda")
    q = c.q
    x = c.x
    u = torch.empty((M, r), device="cuda", dtype=torch.float32)
    y = torch.empty((M, N), device="cuda", dtype=x.dtype)
    f.row_times_rows(x, c.A, u)
    args = (x, *f.weight_args(q), u, c.B, c.B, y, M, N, K, r, 2.0, triton.next_power_of_2(M),
            x.stride(0), x.stride(1), c.B.stride(0), c.B.stride(1), y.stride(0), y.stride(1))
    flops = 2 * M * N * K
    dense = _do_bench(lambda: x @ c.w.t()) * 1e-3
    emit({"what": "large_m_dense", "M": M, "K": K, "N": N, "us": round(dense * 1e6, 1),
          "TFLOPs": round(flops / dense / 1e12, 1)}, sink)
    for bm, bn, bk, w, st in f._LARGE_CONFIGS + [(256, 128, 64, 8, 2), (128, 256, 64, 8, 2), (256, 64, 64, 8, 3)]:
        for decode in ("prmt", "fake"):
            consts = dict(f.decode_consts(q, x.dtype, r), HAS_BIAS=False)
            if decode == "fake":
                consts["DECODE_ASM"] = _FAKE_DECODE
            grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
            launch = lambda: f._qlora_fwd_kernel[grid](*args, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8,
                                                       NB=max(1, bk // 64), num_warps=w, num_stages=st, **consts)
            try:
                k = launch()
                t = _do_bench(launch) * 1e-3
                emit({"what": "large_m_kernel", "decode": decode, "cfg": [bm, bn, bk, w, st],
                      "us": round(t * 1e6, 1), "TFLOPs": round(flops / t / 1e12, 1),
                      "vs_dense": round(t / dense, 2), "regs": k.n_regs, "spills": k.n_spills}, sink)
            except Exception as exc:  # out of shared memory / registers for this config
                emit({"what": "large_m_kernel", "decode": decode, "cfg": [bm, bn, bk, w, st],
                      "error": str(exc)[:200]}, sink)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--only", choices=("small", "large", "host"), default=None)
    a = p.parse_args()
    sink = None
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        sink = open(os.path.join(a.out, "diag.jsonl"), "a")
    if a.only in (None, "small"):
        small_m(sink)
    if a.only in (None, "host"):
        host_profile(sink)
    if a.only in (None, "large"):
        large_m(sink)


if __name__ == "__main__":
    main()
