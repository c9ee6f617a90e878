"""Triton kernels for the model's own ops around the QLoRA layers: RMSNorm, the SwiGLU product, rotary embedding.

    _rms_norm_fwd   y = w · (x · rsqrt(mean(x²) + eps)),  one program per row, fp32 math
    _rms_norm_bwd   dx = r · (dy·w − n · mean(dy·w · n)),  n = x · r, r the row's saved rsqrt
    _swiglu_fwd     h = silu(g) · u                        elementwise
    _swiglu_bwd     dg = (dh · u) · silu'(g),  du = dh · silu(g)
    _rotary         rotary position embedding of q or k (B, H, S, D) with cos, sin (B or 1, S, D): halves
                    x1, x2 -> (x1·c1 − x2·s1, x2·c2 + x1·s2); its backward is the same kernel with the sine
                    halves swapped and negated

Each replaces a chain of PyTorch kernels (Hugging Face's LlamaRMSNorm: an fp32 copy, pow, mean, add, rsqrt, two
muls and a cast, each a pass over the activations, and their backward; act_fn(gate) * up and its backward) by one
pass that reads its inputs once and writes its outputs once. The roundings follow Hugging Face's modules: the
normalized row is rounded to x's dtype before the weight multiplies it (LlamaRMSNorm's ``weight *
hidden.to(input_dtype)``), silu(g) to g's dtype before the product, and the backward's g-branch rounds dh · u to
the dtype as torch's mul backward does; the rotary embedding rounds once (Hugging Face's rounds q·cos,
rotate_half(q)·sin and their sum). nf4lora.fused holds the autograd functions and the model patch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

@triton.jit
def _row(ptr, row, N, BLOCK: tl.constexpr):
    """Row `row` of a contiguous (R, N) tensor as float32 (zeros past N)."""
    cols = tl.arange(0, BLOCK)
    return tl.load(ptr + row * N + cols, mask=cols < N, other=0.0).to(tl.float32)


@triton.jit
def _store_row(ptr, row, N, v, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    tl.store(ptr + row * N + cols, v.to(ptr.dtype.element_ty), mask=cols < N)


@triton.jit
def _rms_norm_fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x = _row(x_ptr, row, N, BLOCK)
    r = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    n = (x * r).to(x_ptr.dtype.element_ty).to(tl.float32)
    _store_row(y_ptr, row, N, _row(w_ptr, 0, N, BLOCK) * n, BLOCK)
    tl.store(rstd_ptr + row, r)


@triton.jit
def _rms_norm_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    dn = _row(dy_ptr, row, N, BLOCK) * _row(w_ptr, 0, N, BLOCK)
    r = tl.load(rstd_ptr + row)
    n = _row(x_ptr, row, N, BLOCK) * r
    c = tl.sum(dn * n, axis=0) / N
    _store_row(dx_ptr, row, N, r * (dn - n * c), BLOCK)


@triton.jit
def _swiglu_fwd(g_ptr, u_ptr, h_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = (g / (1.0 + tl.exp(-g))).to(h_ptr.dtype.element_ty).to(tl.float32)
    tl.store(h_ptr + offs, (a * u).to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(dh_ptr, g_ptr, u_ptr, dg_ptr, du_ptr, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = 1.0 / (1.0 + tl.exp(-g))
    a = (g * s).to(du_ptr.dtype.element_ty).to(tl.float32)  # the forward's rounded silu(g)
    da = (dh * u).to(dg_ptr.dtype.element_ty).to(tl.float32)
    tl.store(du_ptr + offs, (dh * a).to(du_ptr.dtype.element_ty), mask=mask)
    tl.store(dg_ptr + offs, (da * (s * (1.0 + g * (1.0 - s)))).to(dg_ptr.dtype.element_ty), mask=mask)


def _norm_launch(N: int):
    block = triton.next_power_of_2(N)
    return block, min(16, max(1, block // 512))


def rms_norm_fwd(x: torch.Tensor, w: torch.Tensor, eps: float, out_dtype: torch.dtype):
    """x (R, N) contiguous, w (N,): (y (R, N) out_dtype, rstd (R,) float32)."""
    R, N = x.shape
    y = torch.empty((R, N), dtype=out_dtype, device=x.device)
    rstd = torch.empty((R,), dtype=torch.float32, device=x.device)
    if R:
        block, warps = _norm_launch(N)
        _rms_norm_fwd[(R,)](x, w, y, rstd, N, eps, BLOCK=block, num_warps=warps)
    return y, rstd


def rms_norm_bwd(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, rstd: torch.Tensor):
    """dy, x (R, N) contiguous, w (N,), rstd (R,) float32: dx (R, N) in x's dtype."""
    R, N = x.shape
    dx = torch.empty_like(x)
    if R:
        block, warps = _norm_launch(N)
        _rms_norm_bwd[(R,)](dy, x, w, rstd, dx, N, BLOCK=block, num_warps=warps)
    return dx


_EW_BLOCK = 1024


def swiglu_fwd(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """g, u contiguous, same shape and dtype: silu(g) · u."""
    h = torch.empty_like(g)
    n = g.numel()
    if n:
        _swiglu_fwd[(triton.cdiv(n, _EW_BLOCK),)](g, u, h, n, BLOCK=_EW_BLOCK, num_warps=4)
    return h


def swiglu_bwd(dh: torch.Tensor, g: torch.Tensor, u: torch.Tensor):
    """dh, g, u contiguous, same shape and dtype: (dg, du)."""
    dg, du = torch.empty_like(g), torch.empty_like(u)
    n = g.numel()
    if n:
        _swiglu_bwd[(triton.cdiv(n, _EW_BLOCK),)](dh, g, u, dg, du, n, BLOCK=_EW_BLOCK, num_warps=4)
    return dg, du


@triton.jit
def _rotary(x_ptr, c_ptr, s_ptr, o_ptr, H, S, sxb, sxh, sxs, scb, scs, sob, soh, sos,
            HALF: tl.constexpr, BS: tl.constexpr, BWD: tl.constexpr):
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    pos = tl.program_id(1) * BS + tl.arange(0, BS)
    d = tl.arange(0, HALF)
    mask = (pos < S)[:, None]
    p64 = pos.to(tl.int64)[:, None]
    xo = x_ptr + b * sxb + h * sxh + p64 * sxs + d[None, :]
    co = b * scb + p64 * scs + d[None, :]
    x1 = tl.load(xo, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(xo + HALF, mask=mask, other=0.0).to(tl.float32)
    c1 = tl.load(c_ptr + co, mask=mask, other=0.0).to(tl.float32)
    c2 = tl.load(c_ptr + co + HALF, mask=mask, other=0.0).to(tl.float32)
    s1 = tl.load(s_ptr + co, mask=mask, other=0.0).to(tl.float32)
    s2 = tl.load(s_ptr + co + HALF, mask=mask, other=0.0).to(tl.float32)
    if BWD:  # the transpose: (g1·c1 + g2·s2, g2·c2 − g1·s1)
        s1, s2 = -s2, -s1
    oo = o_ptr + b * sob + h * soh + p64 * sos + d[None, :]
    tl.store(oo, (x1 * c1 - x2 * s1).to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(oo + HALF, (x2 * c2 + x1 * s2).to(o_ptr.dtype.element_ty), mask=mask)


_ROTARY_BS = 16


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool = False) -> torch.Tensor:
    """x (B, H, S, D) with stride 1 along D, D / 2 a power of two; cos, sin (B or 1, S, D) with stride 1 along D and
    the same strides: the rotated x (or, backward, the gradient through the rotation) in x's layout and dtype."""
    B, H, S, D = x.shape
    out = torch.empty_like(x)
    if x.numel():
        scb = cos.stride(0) if cos.shape[0] > 1 else 0
        _rotary[(B * H, triton.cdiv(S, _ROTARY_BS))](
            x, cos, sin, out, H, S, x.stride(0), x.stride(1), x.stride(2), scb, cos.stride(1),
            out.stride(0), out.stride(1), out.stride(2), HALF=D // 2, BS=_ROTARY_BS, BWD=backward, num_warps=2)
    return out
