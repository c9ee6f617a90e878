"""The QLoRA linear layer in plain PyTorch with float32 accumulation.

This is the CPU path and the oracle every kernel is tested against. It dequantizes W
(N, K) to float32 for each call: simple and exact, not fast.

Forward (x (M, K), x̃ = dropout(x) or x, A (r, K), B (N, r), s scalar):

    u = x̃·Aᵀ                     (M, r), kept in float32 (r floats per row) for dB
    y = x·Wᵀ + s·u·Bᵀ (+ bias)    (M, N)

Backward, with g = dL/dy (M, N):

    gB  = g·B                     (M, r)
    dx  = g·W                     (M, K)   base branch, to x
    dx̃  = s·gB·A                  (M, K)   LoRA branch, to x̃ (the same tensor when no dropout)
    dA  = s·gBᵀ·x̃                 (r, K)
    dB  = s·gᵀ·u                  (N, r)
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def forward(x: torch.Tensor, x_lora: torch.Tensor, w: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
            scale: float, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y, u) for 2-D x, x_lora (M, K) and a dense float32 w (N, K); y in x's dtype, u float32."""
    xf = x.float()
    u = x_lora.float() @ A.float().t()
    y = xf @ w.t() + scale * (u @ B.float().t())
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype), u


def backward(grad_y: torch.Tensor, x_lora: torch.Tensor, u: torch.Tensor, w: Optional[torch.Tensor],
             A: torch.Tensor, B: torch.Tensor, scale: float, need_dx: bool, need_dx_lora: bool,
             need_dA: bool, need_dB: bool):
    """(dx, dx_lora, dA, dB) for 2-D inputs; each is None when not asked for.

    ``need_dx_lora=False`` with ``need_dx=True`` means x̃ is x (no dropout): the LoRA term
    s·gB·A is then added to dx in float32 before rounding. ``w`` (dense float32 (N, K)) is read
    only when need_dx.
    """
    g = grad_y.float()
    lora_dx = need_dx_lora or need_dx
    gB = g @ B.float() if (lora_dx or need_dA) else None
    lora_term = scale * (gB @ A.float()) if lora_dx else None
    dx = dx_lora = dA = dB = None
    if need_dx:
        dx = g @ w
        if not need_dx_lora:
            dx = dx + lora_term
        dx = dx.to(grad_y.dtype)
    if need_dx_lora:
        dx_lora = lora_term.to(grad_y.dtype)
    if need_dA:
        dA = (scale * (gB.t() @ x_lora.float())).to(A.dtype)
    if need_dB:
        dB = (scale * (g.t() @ u.float())).to(B.dtype)
    return dx, dx_lora, dA, dB
