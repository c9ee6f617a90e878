"""The LoRA factors' gradients from g·B, shared by every backward kernel path (Triton and CUDA).

    dx_lora = s·(g·B)·A,   dA = s·(g·B)ᵀ·x̃,   dB = s·gᵀ·u

Three small GEMMs through cuBLAS (or torch's CPU GEMM), each with s as the GEMM's alpha: one
launch and no scaled temporary each. Plain torch: importing this module loads no kernel library.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

_ZEROS = {}


def alpha_mm(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """scale·(a·b) in one GEMM: addmm with beta = 0 (its input, a cached 0-dim zero, is not read)."""
    key = (a.device, a.dtype)
    zero = _ZEROS.get(key)
    if zero is None:
        zero = _ZEROS[key] = torch.zeros((), device=a.device, dtype=a.dtype)
    return torch.addmm(zero, a, b, beta=0, alpha=scale)


def lora_grads(g: torch.Tensor, gB: Optional[torch.Tensor], x_lora: Optional[torch.Tensor],
               u: Optional[torch.Tensor], A: torch.Tensor, scale: float, need_dx_lora: bool, need_dA: bool,
               need_dB: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(dx_lora (M, K), dA (r, K), dB (N, r)), None where not needed. g (M, N), A (r, K) and x_lora
    (M, K) share one dtype (ops.py checks it); gB = g·B (M, r) and u = x̃·Aᵀ (M, r) float32, each
    rounded once to g's dtype for its GEMM."""
    dx_lora = dA = dB = None
    if need_dx_lora or need_dA:
        gB16 = gB.to(g.dtype)
        if need_dx_lora:
            dx_lora = alpha_mm(gB16, A, scale)
        if need_dA:
            dA = alpha_mm(gB16.t(), x_lora, scale)
    if need_dB:
        dB = alpha_mm(g.t(), u.to(g.dtype), scale)
    return dx_lora, dA, dB
