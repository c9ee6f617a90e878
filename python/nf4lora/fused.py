"""Fused versions of a Llama-class model's own ops around the QLoRA layers: RMSNorm and the SwiGLU product.

A training step of a converted Llama spends a large share of its GPU time outside the projections (issue 6's
profiles: elementwise muls, casts and copies of RMSNorm, SiLU · up and their backward, each a full pass over the
activations). ``fuse_model_ops(model)`` swaps those for single-pass Triton kernels (triton_kernels/model_ops.py):

- every RMSNorm module (a module whose class name ends in ``RMSNorm`` with a ``weight`` and an epsilon, as
  Llama's, Mistral's and Qwen2's) becomes a :class:`FusedRMSNorm` holding the same weight Parameter (state-dict
  keys unchanged);
- every MLP with ``gate_proj``, ``up_proj``, ``down_proj`` and a SiLU ``act_fn`` computes
  ``down_proj(swiglu(gate_proj(x), up_proj(x)))`` (an instance ``forward``; ``del mlp.forward`` undoes it).

The functions follow the modules' roundings (module docstring of model_ops) and save less for the backward than
the PyTorch chains (x for the norm, g and u for the product). They run the Triton kernels on CUDA tensors, and on
CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, the tests); on CPU otherwise the same math in
PyTorch ops (``fused.last_path`` says which ran). A norm's weight that requires grad gets its gradient from
PyTorch ops (a frozen model's norms need none).
"""

from __future__ import annotations

import os
import types
import warnings
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

# What ran last per op: "triton" or "torch" (CPU without Triton's interpreter).
last_path: Dict[str, str] = {}


def _triton_runs(t: torch.Tensor) -> bool:
    return t.is_cuda or (t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _kernels():
    from nf4lora.triton_kernels import model_ops  # imported on first use: triton loads slowly

    return model_ops


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's math in PyTorch ops: weight · (x in fp32 · rsqrt(mean(x²) + eps)) rounded to x's dtype."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        k = _kernels()
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        w = weight.contiguous()
        y, rstd = k.rms_norm_fwd(x2, w, eps, torch.promote_types(weight.dtype, x.dtype))
        ctx.save_for_backward(x2, w, rstd)
        ctx.x_shape = x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, dy):
        x2, w, rstd = ctx.saved_tensors
        dy2 = dy.reshape(x2.shape).contiguous()
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _kernels().rms_norm_bwd(dy2, x2, w, rstd).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            n = (x2.float() * rstd[:, None]).to(x2.dtype)
            dw = (dy2.float() * n.float()).sum(0).to(w.dtype)
        return dx, dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension: x (..., N) float16 / bfloat16 / float32, weight (N,) -> (..., N) in the
    promoted dtype of weight and x, as Hugging Face's LlamaRMSNorm computes it."""
    N = x.shape[-1]
    if weight.shape != (N,):
        raise ValueError(f"rms_norm: weight must have shape ({N},) for x of shape {tuple(x.shape)}, got "
                         f"{tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"rms_norm: weight is on {weight.device}, x on {x.device}")
    if not _triton_runs(x):
        last_path["rms_norm"] = "torch"
        return rms_norm_reference(x, weight, eps)
    if N > _kernels().MAX_NORM_COLS:
        raise ValueError(f"rms_norm: rows of at most {_kernels().MAX_NORM_COLS} elements, got {N}")
    last_path["rms_norm"] = "triton"
    return _RMSNorm.apply(x, weight, float(eps))


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, u):
        g, u = g.contiguous(), u.contiguous()
        ctx.save_for_backward(g, u)
        return _kernels().swiglu_fwd(g, u)

    @staticmethod
    def backward(ctx, dh):
        g, u = ctx.saved_tensors
        return _kernels().swiglu_bwd(dh.contiguous(), g, u)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) · up, gate and up of one shape and dtype (the SwiGLU MLP's product before down_proj)."""
    if gate.shape != up.shape or gate.dtype != up.dtype or gate.device != up.device:
        raise ValueError(f"swiglu: gate and up must match in shape, dtype and device, got {tuple(gate.shape)} "
                         f"{gate.dtype} {gate.device} and {tuple(up.shape)} {up.dtype} {up.device}")
    if not _triton_runs(gate):
        last_path["swiglu"] = "torch"
        return F.silu(gate) * up
    last_path["swiglu"] = "triton"
    return _SwiGLU.apply(gate, up)


class FusedRMSNorm(nn.Module):
    """Drop-in for an RMSNorm module (LlamaRMSNorm and alikes): the same ``weight`` Parameter and epsilon, the
    forward through :func:`rms_norm`. x (..., N) -> (..., N)."""

    def __init__(self, weight: nn.Parameter, eps: float):
        super().__init__()
        self.weight = weight
        self.variance_epsilon = float(eps)

    @classmethod
    def from_module(cls, module: nn.Module) -> "FusedRMSNorm":
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None or not isinstance(getattr(module, "weight", None), nn.Parameter):
            raise ValueError(f"{type(module).__name__} has no weight Parameter and epsilon to take over")
        return cls(module.weight, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def _is_silu(act) -> bool:
    return isinstance(act, nn.SiLU) or type(act).__name__ in ("SiLUActivation", "SiLU")


def _fused_mlp_forward(self, x):
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def fuse_model_ops(model: nn.Module) -> Dict[str, List[str]]:
    """Swap ``model``'s RMSNorm modules for :class:`FusedRMSNorm` and route its SwiGLU MLPs' product through
    :func:`swiglu`, in place (see the module docstring). Returns the names of the norms and MLPs changed and of
    the RMSNorm-like modules left as they were (with a warning), e.g. rows wider than the kernel takes."""
    norms, mlps, skipped = [], [], []
    max_cols = None
    for name, module in list(model.named_modules()):
        if not name:  # the model itself
            continue
        if type(module).__name__.endswith("RMSNorm") and not isinstance(module, FusedRMSNorm):
            w = getattr(module, "weight", None)
            if max_cols is None:
                max_cols = _kernels().MAX_NORM_COLS
            if not isinstance(w, nn.Parameter) or w.dim() != 1 or w.numel() > max_cols or \
                    getattr(module, "variance_epsilon", getattr(module, "eps", None)) is None:
                skipped.append(name)
                continue
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, FusedRMSNorm.from_module(module))
            norms.append(name)
        elif all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")) and \
                _is_silu(module.act_fn) and "forward" not in module.__dict__:
            module.forward = types.MethodType(_fused_mlp_forward, module)
            mlps.append(name)
    if skipped:
        warnings.warn(f"nf4lora.fuse_model_ops: left as they were (no 1-d weight Parameter and epsilon, or rows "
                      f"wider than {max_cols}): {skipped}", stacklevel=2)
    return {"rms_norms": norms, "mlps": mlps, "skipped": skipped}
