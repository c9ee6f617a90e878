"""GPU time of the fused model ops (nf4lora.fused) against the PyTorch chains they replace, forward + backward.

    python bench/model_ops_time.py [--tokens 8192] [--hidden 4096] [--inter 14336] [--out FILE]
    python bench/model_ops_time.py --host [--out FILE]

Per op, bf16, at one micro-batch of a Llama-3-8B layer (tokens x hidden for the norm, tokens x intermediate for
the SwiGLU product): Hugging Face's LlamaRMSNorm module (frozen weight) against nf4lora.FusedRMSNorm sharing its
weight, F.silu(g) * u against nf4lora.swiglu, and the rotary embedding of q and k (Llama-3-8B's 32 and 8 heads of
128, sequences of 2048) against nf4lora.fused.rotary_reference (Hugging Face's math); each a forward and a
backward (x, g, u, q, k require grad). Reported: the median of 20 CUDA-event timings of one forward + backward
after warm-up (``*_us``: wall, host-bound where the launches and autograd take longer than the kernels, as for the
norm and the rotary embedding at 8192 tokens; s33 run 1 reported only these), the kernels' GPU time of the same call
by torch.profiler (``*_gpu_us``, summed over the kernels, L2 flushed before each call), the ratios fused /
PyTorch, and the fused kernels' effective bandwidth (their compulsory bytes: the norm reads x and writes y, reads dy
and x and writes dx; SwiGLU reads g, u and writes h, reads dh, g, u and writes dg, du; rotary reads and writes q and
k both ways) as a percent of a 1 GiB copy's, measured in the same process.
One JSON line per op (stdout, and FILE with --out).

--host measures what eager decode feels instead: the wall time per call of 2000 back-to-back calls without grad at
one token (batch 1: a (1, 1, hidden) norm, a (1, 1, inter) product, q / k of one position), host-bound as a decode
step is — HF's LlamaRMSNorm, F.silu(g) * u and HF's apply_rotary_pos_emb against FusedRMSNorm, nf4lora.swiglu and
the apply_rotary_pos_emb that fuse_model_ops installs, and the bare Triton launches under them (``*_kernel_us``).
"""

import argparse
import contextlib
import os
import statistics
import sys

import torch
import torch.nn.functional as F

import nf4lora
from nf4lora.benchmark import copy_bandwidth

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diag_fwd import emit, host_us, kernel_us  # noqa: E402


def time_us(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e3)
    return statistics.median(ts)


@torch.no_grad()
def host_rows(hidden, inter):
    """Per-call wall time of each op at one decode token (see the module docstring's --host)."""
    from transformers.models.llama import modeling_llama as ml

    from nf4lora.triton_kernels import model_ops as k

    dt, dev, rows = torch.bfloat16, "cuda", []
    hf = ml.LlamaRMSNorm(hidden, eps=1e-5).to(dev, dt)
    fz = nf4lora.FusedRMSNorm.from_module(hf)
    x = torch.randn(1, 1, hidden, device=dev, dtype=dt)
    x2 = x.view(1, hidden)
    rows.append({"op": "rms_norm", "host": True, "shape": [1, hidden], "pytorch_us": host_us(lambda: hf(x)),
                 "fused_us": host_us(lambda: fz(x)),
                 "fused_kernel_us": host_us(lambda: k.rms_norm_fwd(x2, hf.weight, 1e-5, dt))})
    g, u = (torch.randn(1, 1, inter, device=dev, dtype=dt) for _ in range(2))
    rows.append({"op": "swiglu", "host": True, "shape": [1, inter], "pytorch_us": host_us(lambda: F.silu(g) * u),
                 "fused_us": host_us(lambda: nf4lora.swiglu(g, u)),
                 "fused_kernel_us": host_us(lambda: k.swiglu_fwd(g, u))})
    heads, kv_heads, hd = hidden // 128, max(1, hidden // 512), 128
    q = torch.randn(1, 1, heads, hd, device=dev, dtype=dt).transpose(1, 2)
    kk = torch.randn(1, 1, kv_heads, hd, device=dev, dtype=dt).transpose(1, 2)
    emb = torch.randn(1, 1, hd // 2, device=dev).repeat(1, 1, 2)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)
    fused_apply = nf4lora.fused._fused_apply_rotary(ml.apply_rotary_pos_emb)
    rows.append({"op": "rotary", "host": True, "shape": [1, heads, kv_heads, 1, hd],
                 "pytorch_us": host_us(lambda: ml.apply_rotary_pos_emb(q, kk, cos, sin)),
                 "fused_us": host_us(lambda: fused_apply(q, kk, cos, sin)),
                 "fused_kernel_us": host_us(lambda: (k.rotary(q, cos, sin), k.rotary(kk, cos, sin)))})
    for r in rows:
        for key in ("pytorch_us", "fused_us", "fused_kernel_us"):
            r[key] = round(r[key][1], 1)  # host_us: (launch side, wall) µs per call
        r["ratio"] = round(r["fused_us"] / r["pytorch_us"], 3)
    return rows


def compare(op, shape, base_run, fused_run, nbytes, copy_bw):
    """One row: event-timed wall per fwd + bwd (host-bound where the launches and autograd outlast the kernels) and
    the kernels' GPU time (torch.profiler, summed) of the PyTorch chain and the fused ops; the fused kernels'
    effective bandwidth on their compulsory bytes as a percent of copy."""
    base, fused = time_us(base_run), time_us(fused_run)
    base_gpu, fused_gpu = (sum(kernel_us(run).values()) for run in (base_run, fused_run))
    return {"op": op, "shape": shape, "pytorch_us": round(base, 1), "fused_us": round(fused, 1),
            "ratio": round(fused / base, 3), "pytorch_gpu_us": round(base_gpu, 1), "fused_gpu_us": round(fused_gpu, 1),
            "gpu_ratio": round(fused_gpu / base_gpu, 3),
            "fused_gpu_pct_copy": round(100 * nbytes / (fused_gpu * 1e-6) / copy_bw, 1)}


def fwd_bwd(fn, inputs, grad):
    def run():
        for t in inputs:
            t.grad = None
        fn(*inputs).backward(grad)
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--inter", type=int, default=14336)
    p.add_argument("--host", action="store_true", help="per-call wall time at one decode token instead")
    p.add_argument("--out")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("model_ops_time.py needs a CUDA device")
    if a.host:
        return write_rows([{"git_sha": os.environ.get("NF4LORA_GIT_SHA", "")}] + host_rows(a.hidden, a.inter), a.out)
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    dt, dev = torch.bfloat16, "cuda"
    copy_bw = copy_bandwidth(dev)
    rows = [{"copy_TBps": round(copy_bw / 1e12, 3), "git_sha": os.environ.get("NF4LORA_GIT_SHA", "")}]
    T, H, I = a.tokens, a.hidden, a.inter

    hf = LlamaRMSNorm(H, eps=1e-5).to(dev, dt).requires_grad_(False)
    torch.nn.init.normal_(hf.weight, 1.0, 0.1)
    fz = nf4lora.FusedRMSNorm.from_module(hf)
    x = torch.randn(T, H, device=dev, dtype=dt, requires_grad=True)
    dy = torch.randn(T, H, device=dev, dtype=dt)
    rows.append(compare("rms_norm", [T, H], fwd_bwd(hf, [x], dy), fwd_bwd(fz, [x], dy),
                        5 * T * H * 2, copy_bw))  # x, y; dy, x, dx

    g = torch.randn(T, I, device=dev, dtype=dt, requires_grad=True)
    u = torch.randn(T, I, device=dev, dtype=dt, requires_grad=True)
    dh = torch.randn(T, I, device=dev, dtype=dt)
    rows.append(compare("swiglu", [T, I], fwd_bwd(lambda a_, b_: F.silu(a_) * b_, [g, u], dh),
                        fwd_bwd(nf4lora.swiglu, [g, u], dh), 8 * T * I * 2, copy_bw))  # g, u, h; dh, g, u, dg, du
    heads, kv_heads, hd = a.hidden // 128, max(1, a.hidden // 512), 128  # Llama-3-8B: 32 / 8 heads of 128
    B, S = max(1, T // 2048), min(T, 2048)
    q = torch.randn(B, S, heads, hd, device=dev, dtype=dt).transpose(1, 2).requires_grad_(True)
    k = torch.randn(B, S, kv_heads, hd, device=dev, dtype=dt).transpose(1, 2).requires_grad_(True)
    emb = torch.randn(1, S, hd // 2, device=dev).repeat(1, 1, 2)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)
    dq, dk = torch.randn_like(q), torch.randn_like(k)

    def rope(fn):
        def run():
            q.grad = k.grad = None
            qe, ke = fn(q, cos, sin), fn(k, cos, sin)
            torch.autograd.backward([qe, ke], [dq, dk])
        return run

    rows.append(compare("rotary", [B, heads, kv_heads, S, hd], rope(nf4lora.fused.rotary_reference),
                        rope(nf4lora.rotary), 4 * (q.numel() + k.numel()) * 2, copy_bw))
    # (q, k in and out, forward and backward; cos, sin from L2)
    write_rows(rows, a.out)


def write_rows(rows, out):
    """One JSON line per row on stdout, and into the file out (if given)."""
    with open(out, "w") if out else contextlib.nullcontext() as f:
        for r in rows:
            emit(r, f)


if __name__ == "__main__":
    main()
