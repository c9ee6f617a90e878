"""Fused versions of a Llama-class model's own ops around the QLoRA layers: RMSNorm, SwiGLU, rotary embedding.

A training step of a converted Llama spends a large share of its GPU time outside the projections (issue 6's
profiles: elementwise muls, casts and copies of RMSNorm, SiLU · up and their backward, each a full pass over the
activations). ``fuse_model_ops(model)`` swaps those for single-pass Triton kernels (triton_kernels/model_ops.py):

- every RMSNorm module (a module whose class name ends in ``RMSNorm`` with a ``weight`` and an epsilon, as
  Llama's, Mistral's and Qwen2's) becomes a :class:`FusedRMSNorm` holding the same weight Parameter (state-dict
  keys unchanged);
- every MLP with ``gate_proj``, ``up_proj``, ``down_proj`` and a SiLU ``act_fn`` computes
  ``down_proj(swiglu(gate_proj(x), up_proj(x)))`` (an instance ``forward``; ``del mlp.forward`` undoes it);
- with ``rotary=True``, the ``apply_rotary_pos_emb`` of each attention module's modeling module (Hugging Face's
  Llama, Mistral, Qwen2 ...) becomes one that rotates q and k by :func:`rotary` where the kernel takes the call
  (q, k of shape (B, H, S, D), cos, sin (B or 1, S, D), no grad into cos / sin, unsqueeze_dim 1) and calls the
  original otherwise. That function is a module global: every model of that family in the process uses the
  fused one until :func:`restore_rotary`.

Each candidate is checked before it is swapped: on a small random input, without grad, the module (or function)
must give what the fused op's reference math gives (``_probe_close``); look-alikes with other math — Gemma's
RMSNorm (1 + weight), Cohere's interleaved rotary embedding — are left as they are and reported ("skipped",
"rotary_skipped", with a warning).

The functions follow the modules' roundings (module docstring of model_ops) and save less for the backward than
the PyTorch chains (x for the norm, g and u for the product). They run the Triton kernels on CUDA tensors, and on
CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, the tests); on CPU otherwise the same math in
PyTorch ops (``fused.last_path`` says which ran). A norm's weight that requires grad gets its gradient from
PyTorch ops (a frozen model's norms need none). Calls autograd does not record (no grad, e.g. generate()) run
the kernels without the autograd Functions. Under torch.compile the kernel launchers are registered ops
(``nf4lora::rms_norm_fwd``, ``rms_norm_bwd``, ``swiglu_fwd``, ``swiglu_bwd``, ``rotary``, with fake tensors' shapes),
so a fused model compiles to one graph (``fullgraph=True``) running the same kernels (tests/test_fused_ops.py).

Measured on the H200 (bench/results/h200/s33/): forward + backward at 8192 tokens of a Llama-3-8B layer the norm
takes 0.22x, SwiGLU 0.66x and the rotary embedding 0.34x PyTorch's wall time (host-bound for the fused norm and
rotary: their kernels take less); a Llama-3-8B-shaped QLoRA training step
runs at 1.07-1.21x the tokens/s without them (1.19-1.20x at micro-batch 4 in one call). Eager decode at batch 1 is
host-bound, and there a Triton launch costs about what the PyTorch chain it replaces does (0.90x the unfused
model's tokens/s in an in-process alternation).
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import warnings
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

# What ran last per op: "triton" or "torch" (CPU without Triton's interpreter).
last_path: Dict[str, str] = {}


# The widest row the norm kernel takes: one program a row holds it whole (BLOCK = next power of two of N); a
# Llama-class hidden size is 2048-16384.
MAX_NORM_COLS = 65536
# The kernels compute in float32: inputs of these dtypes (others, e.g. float64, take the PyTorch path).
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _triton_runs(*ts: torch.Tensor) -> bool:
    t = ts[0]
    return all(u.dtype in _KERNEL_DTYPES for u in ts) and (
        t.is_cuda or (t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"))


def _model_ops():
    from nf4lora.triton_kernels import model_ops  # imported on first use: triton loads slowly

    return model_ops


def _kernels():
    """The kernel launchers (triton_kernels/model_ops.py); under torch.compile the same launchers as registered ops
    (below), which dynamo records as graph nodes instead of tracing into Triton's launcher."""
    return _COMPILED_KERNELS if torch.compiler.is_compiling() else _model_ops()


# --- the launchers as torch ops, for torch.compile ----------------------------------------------------------------

@torch.library.custom_op("nf4lora::rms_norm_fwd", mutates_args=())
def _rms_norm_fwd_op(x: torch.Tensor, w: torch.Tensor, eps: float,
                     out_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    return _model_ops().rms_norm_fwd(x, w, eps, out_dtype)


@_rms_norm_fwd_op.register_fake
def _(x, w, eps, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype), x.new_empty(x.shape[:1], dtype=torch.float32)


@torch.library.custom_op("nf4lora::rms_norm_bwd", mutates_args=())
def _rms_norm_bwd_op(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    return _model_ops().rms_norm_bwd(dy, x, w, rstd)


@_rms_norm_bwd_op.register_fake
def _(dy, x, w, rstd):
    return torch.empty_like(x)


@torch.library.custom_op("nf4lora::swiglu_fwd", mutates_args=())
def _swiglu_fwd_op(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return _model_ops().swiglu_fwd(g, u)


@_swiglu_fwd_op.register_fake
def _(g, u):
    return torch.empty_like(g)


@torch.library.custom_op("nf4lora::swiglu_bwd", mutates_args=())
def _swiglu_bwd_op(dh: torch.Tensor, g: torch.Tensor, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return _model_ops().swiglu_bwd(dh, g, u)


@_swiglu_bwd_op.register_fake
def _(dh, g, u):
    return torch.empty_like(g), torch.empty_like(u)


@torch.library.custom_op("nf4lora::rotary", mutates_args=())
def _rotary_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool = False) -> torch.Tensor:
    return _model_ops().rotary(x, cos, sin, backward=backward)


@_rotary_op.register_fake
def _(x, cos, sin, backward=False):
    return torch.empty_like(x)  # the launcher's output: x's layout


_COMPILED_KERNELS = types.SimpleNamespace(rms_norm_fwd=_rms_norm_fwd_op, rms_norm_bwd=_rms_norm_bwd_op,
                                          swiglu_fwd=_swiglu_fwd_op, swiglu_bwd=_swiglu_bwd_op, rotary=_rotary_op)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's math in PyTorch ops: weight · (x in fp32 · rsqrt(mean(x²) + eps)) rounded to x's dtype."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _needs_graph(*ts: torch.Tensor) -> bool:
    """Whether autograd records this call (else the kernels run without an autograd Function: decode's host cost)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def _rms_norm_fwd(x, weight, eps):
    """(y in x's shape, x as (R, N) contiguous, weight contiguous, rstd (R,))."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    w = weight.contiguous()
    y, rstd = _kernels().rms_norm_fwd(x2, w, eps, torch.promote_types(weight.dtype, x.dtype))
    return y.view(*x.shape[:-1], y.shape[-1]), x2, w, rstd


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, x2, w, rstd = _rms_norm_fwd(x, weight, eps)
        ctx.save_for_backward(x2, w, rstd)
        ctx.x_shape = x.shape
        return y

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
    """RMSNorm over the last dimension: x (..., N), weight (N,) -> (..., N) in the promoted dtype of weight and x, as
    Hugging Face's LlamaRMSNorm computes it (the kernel for float16 / bfloat16 / float32; other dtypes in PyTorch)."""
    N = x.shape[-1]
    if weight.shape != (N,):
        raise ValueError(f"rms_norm: weight must have shape ({N},) for x of shape {tuple(x.shape)}, got "
                         f"{tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"rms_norm: weight is on {weight.device}, x on {x.device}")
    if not _triton_runs(x, weight):
        last_path["rms_norm"] = "torch"
        return rms_norm_reference(x, weight, eps)
    if N > MAX_NORM_COLS:
        raise ValueError(f"rms_norm: rows of at most {MAX_NORM_COLS} elements, got {N}")
    last_path["rms_norm"] = "triton"
    if not _needs_graph(x, weight):
        return _rms_norm_fwd(x, weight, float(eps))[0]
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
    if not _triton_runs(gate, up):
        last_path["swiglu"] = "torch"
        return F.silu(gate) * up
    last_path["swiglu"] = "triton"
    if not _needs_graph(gate, up):
        return _kernels().swiglu_fwd(gate.contiguous(), up.contiguous())
    return _SwiGLU.apply(gate, up)


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin with cos, sin (B or 1, S, D) broadcast over the heads of x (B, H, S, D)."""
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rot * sin.unsqueeze(1)


def _rotary_takes(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    """Whether the rotary kernel takes (x, cos, sin) as they are (see rotary)."""
    if x.dim() != 4 or cos.dim() != 3 or sin.shape != cos.shape or sin.stride() != cos.stride():
        return False
    B, H, S, D = x.shape
    half = D // 2
    return (D % 2 == 0 and half >= 1 and half & (half - 1) == 0 and cos.shape[1:] == (S, D)
            and cos.shape[0] in (1, B) and x.stride(-1) == 1 and cos.stride(-1) == 1
            and cos.device == x.device == sin.device and not (cos.requires_grad or sin.requires_grad)
            and _triton_runs(x, cos, sin))


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _kernels().rotary(x, cos, sin)

    @staticmethod
    def backward(ctx, g):
        cos, sin = ctx.saved_tensors
        if g.stride(-1) != 1:
            g = g.contiguous()
        return _kernels().rotary(g, cos, sin, backward=True), None, None


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x (B, H, S, D) (any strides with D contiguous, D / 2 a power of two) by cos, sin
    (B or 1, S, D): x·cos + rotate_half(x)·sin, in x's layout and dtype; cos and sin get no gradient. Calls the
    kernel cannot take (other shapes or layouts, CPU without Triton's interpreter) run rotary_reference."""
    if not _rotary_takes(x, cos, sin):
        last_path["rotary"] = "torch"
        return rotary_reference(x, cos, sin)
    last_path["rotary"] = "triton"
    return _rotary_apply(x, cos, sin)


def _rotary_apply(x, cos, sin):
    return _Rotary.apply(x, cos, sin) if _needs_graph(x) else _kernels().rotary(x, cos, sin)


# modeling module name -> its own apply_rotary_pos_emb, while fuse_model_ops has replaced it
_ROTARY_ORIGINALS: Dict[str, Callable] = {}


def _fused_apply_rotary(original: Callable) -> Callable:
    # The call's arguments past (q, k, cos, sin) are named from the original's signature here, once, in plain
    # Python that torch.compile traces (inspect.Signature.bind is not traceable).
    params = list(inspect.signature(original).parameters.values())
    plain = len(params) >= 4 and all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
    names = [p.name for p in params[4:]]
    unsqueeze_default = next((p.default for p in params[4:] if p.name == "unsqueeze_dim"), 1)

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        extra = dict(zip(names, args))
        if (not plain or len(args) > len(names) or any(n in extra or n not in names for n in kwargs)
                or (set(extra) | set(kwargs)) - {"unsqueeze_dim", "position_ids"}):
            fuse = False  # arguments the fused path does not take (or a call the original will refuse)
        else:
            extra.update(kwargs)
            fuse = (extra.get("unsqueeze_dim", unsqueeze_default) == 1 and extra.get("position_ids") is None
                    and _rotary_takes(q, cos, sin) and _rotary_takes(k, cos, sin))
        if not fuse:
            last_path["rotary"] = "torch"
            return original(q, k, cos, sin, *args, **kwargs)
        last_path["rotary"] = "triton"
        return _rotary_apply(q, cos, sin), _rotary_apply(k, cos, sin)

    apply_rotary_pos_emb.__wrapped__ = original
    apply_rotary_pos_emb.__doc__ = "nf4lora.fused's rotary embedding of q and k, else " + (original.__name__)
    return apply_rotary_pos_emb


def restore_rotary() -> List[str]:
    """Put back the apply_rotary_pos_emb that fuse_model_ops replaced; the modeling modules restored."""
    restored = []
    for mod_name, original in list(_ROTARY_ORIGINALS.items()):
        mod = sys.modules.get(mod_name)
        if mod is not None:
            mod.apply_rotary_pos_emb = original
            restored.append(mod_name)
        del _ROTARY_ORIGINALS[mod_name]
    return restored


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


# Before fuse_model_ops swaps a module or function, it checks that the original computes what the fused one does: on a
# small random input, without grad, the original against the reference math of the fused kernels (rms_norm_reference,
# silu(gate)·up, rotary_reference), within a quarter of a bf16 rounding step relative. A module that only looks
# alike (Gemma's RMSNorm scales by 1 + weight; Cohere's and DeepSeek's rotary embeddings rotate interleaved pairs)
# is left as it is, never fused into a wrong answer.
_PROBE_TOL = 2.0 ** -10


def _probe_close(got, want) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
            and bool(torch.isfinite(want).all())
            and float((got.double() - want.double()).norm()) <= _PROBE_TOL * float(want.double().norm()))


def _probe_input(n_rows: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n_rows, width, generator=g).to(device=device, dtype=dtype)


@torch.no_grad()
def _norm_is_llama_like(module: nn.Module, eps: float) -> bool:
    w = module.weight
    if w.is_meta:
        return False
    x = _probe_input(2, w.numel(), w.device, w.dtype)
    try:
        return _probe_close(module(x), rms_norm_reference(x, w, eps))
    except Exception:  # noqa: BLE001 - whatever the module refuses, it is not fused
        return False


@torch.no_grad()
def _mlp_is_swiglu(module: nn.Module) -> bool:
    w = next(module.parameters(), None)
    k = getattr(module.gate_proj, "in_features", None)
    if w is None or w.is_meta or k is None:
        return False
    # the activations' dtype: a layer's compute dtype, else its first floating-point parameter's (an NF4 or 4-bit
    # layer's packed weight is not one)
    dtype = getattr(module.gate_proj, "compute_dtype", None) or next(
        (p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    x = _probe_input(1, k, w.device, dtype)
    training = module.training
    module.eval()  # no LoRA dropout in the probe: both sides see the same projections
    try:
        return _probe_close(module(x), module.down_proj(F.silu(module.gate_proj(x)) * module.up_proj(x)))
    except Exception:  # noqa: BLE001
        return False
    finally:
        module.train(training)


@torch.no_grad()
def _rotary_is_half_split(fn: Callable) -> bool:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 3, 8, generator=g), torch.randn(1, 1, 3, 8, generator=g)
    cos, sin = torch.randn(1, 3, 8, generator=g), torch.randn(1, 3, 8, generator=g)
    try:
        qe, ke = fn(q, k, cos, sin)
    except Exception:  # noqa: BLE001
        return False
    return _probe_close(qe, rotary_reference(q, cos, sin)) and _probe_close(ke, rotary_reference(k, cos, sin))


def fuse_model_ops(model: nn.Module, rotary: bool = True) -> Dict[str, List[str]]:
    """Swap ``model``'s RMSNorm modules for :class:`FusedRMSNorm`, route its SwiGLU MLPs' product through
    :func:`swiglu` and, with ``rotary``, its attention modules' rotary embedding through :func:`rotary`, in place
    (see the module docstring). Each is checked first on a small random input (a module or function whose math
    differs, e.g. Gemma's RMSNorm or an interleaved rotary embedding, is left as it is). Returns the names of the
    norms and MLPs changed and the modeling modules whose apply_rotary_pos_emb now fuses; under "skipped", the
    RMSNorm-like modules left as they were (no 1-d weight Parameter and epsilon, rows wider than the kernel takes,
    an instance-level forward (a hook's wrapper) or other math), and under "rotary_skipped" the modeling modules
    whose apply_rotary_pos_emb computes something else (both with a warning)."""
    norms, mlps, skipped, rotary_mods, rotary_skipped = [], [], [], [], []
    for name, module in list(model.named_modules()):
        if not name:  # the model itself
            continue
        if type(module).__name__.endswith("RMSNorm") and not isinstance(module, FusedRMSNorm):
            w = getattr(module, "weight", None)
            eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
            # (an instance-level forward, e.g. accelerate's device hook, would be lost with the module: left too)
            if not isinstance(w, nn.Parameter) or w.dim() != 1 or w.numel() > MAX_NORM_COLS or eps is None \
                    or "forward" in module.__dict__ or not _norm_is_llama_like(module, eps):
                skipped.append(name)
                continue
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, FusedRMSNorm.from_module(module))
            norms.append(name)
        elif all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")) and \
                _is_silu(module.act_fn) and "forward" not in module.__dict__ and _mlp_is_swiglu(module):
            module.forward = types.MethodType(_fused_mlp_forward, module)
            mlps.append(name)
        if rotary and type(module).__name__.endswith("Attention"):
            mod_name = type(module).__module__
            mod = sys.modules.get(mod_name)
            fn = getattr(mod, "apply_rotary_pos_emb", None)
            if callable(fn) and mod_name not in _ROTARY_ORIGINALS and mod_name not in rotary_skipped:
                if _rotary_is_half_split(fn):
                    _ROTARY_ORIGINALS[mod_name] = fn
                    mod.apply_rotary_pos_emb = _fused_apply_rotary(fn)
                    rotary_mods.append(mod_name)
                else:
                    rotary_skipped.append(mod_name)
    if skipped:
        warnings.warn(f"nf4lora.fuse_model_ops: left as they were (no 1-d weight Parameter and epsilon, rows wider "
                      f"than {MAX_NORM_COLS}, an instance-level forward, or not LlamaRMSNorm's math): {skipped}",
                      stacklevel=2)
    if rotary_skipped:
        warnings.warn(f"nf4lora.fuse_model_ops: apply_rotary_pos_emb of {rotary_skipped} is not the half-split "
                      f"rotation the kernel computes: left as it is", stacklevel=2)
    return {"rms_norms": norms, "mlps": mlps, "rotary": rotary_mods, "skipped": skipped,
            "rotary_skipped": rotary_skipped}
