"""torch.library ops of nf4lora: schemas, validation, fakes, autograd and backend choice.

Ops (all in the ``nf4lora`` namespace):

- ``dequantize(weight, shape, blocksize, nested_offset, dtype) -> W``
- ``qlora_linear(x, x_lora, weight, shape, blocksize, nested_offset, A, B, scale, bias) -> (y, u)``
  (y in x's dtype; u = x̃·Aᵀ in float32, saved for dB)
- ``qlora_linear_backward(grad_y, x_lora, u, weight, shape, blocksize, nested_offset, A, B,
  scale, needs) -> (dx, dx_lora, dA, dB)``

``weight`` is the NF4 state as a tensor list: ``[packed, absmax, quant_map]`` or, double-quantized,
``[packed, absmax(uint8), quant_map, nested_absmax, nested_quant_map]`` (see :class:`NF4Weight`).
x and x_lora are 2-D (M, K) at the op level; :func:`qlora_linear` flattens leading dimensions.
Every input is validated once, here, before any kernel runs.

Backends: ``reference`` (plain PyTorch, any device), ``cuda`` (the csrc/ extension) and
``triton`` (triton_kernels/). Each op picks the fastest one implemented and available for the
device; ``NF4LORA_BACKEND=reference|triton|cuda`` forces one, and a forced backend that cannot
run the op is an error, never a silent fallback.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import _cuda_ext, dispatch, reference
from .lora_grads import lora_grads
from .nf4 import NF4Weight, dequantize_nf4

BACKENDS = ("reference", "triton", "cuda")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# op name -> backend -> implementation. Kernel backends register themselves here.
_IMPLS: Dict[str, Dict[str, Callable]] = {"dequantize": {}, "qlora_linear": {}, "qlora_linear_backward": {}}
# op name -> backend -> supports(*impl args) -> None or why that kernel does not take the call.
_SUPPORTS: Dict[str, Dict[str, Callable]] = {op: {} for op in _IMPLS}
# op name -> backend -> planner(*impl args) -> an implementation with the impl's signature for calls
# of this signature, with what it can work out once (launch plans) worked out: the eager path keeps
# it per call signature (_EagerPlan). Backends without one run their implementation as it is.
_PLANNERS: Dict[str, Dict[str, Callable]] = {op: {} for op in _IMPLS}
# Backends in order of preference on a CUDA device where the shipped dispatch tables (dispatch.py,
# written by bench/make_dispatch_table.py from measurements) say nothing about a call; a table's
# pick goes first where they do.
_CUDA_PREFERENCE = ("cuda", "triton", "reference")
# (dtype, M, K, N) of a call, from an implementation's arguments, for the dispatch tables.
_CALL_KEYS: Dict[str, Callable] = {
    "qlora_linear": lambda x, x_lora, q, *rest: (x.dtype, x.shape[0], q.shape[1], q.shape[0]),
    "qlora_linear_backward": lambda g, x_lora, u, q, *rest: (g.dtype, g.shape[0], q.shape[1], q.shape[0]),
}
# What actually ran last for each op ("triton", or "reference (fallback: ...)"): the benchmark
# records it so that a row never hides a slow path.
last_path: Dict[str, str] = {}


def _backend_unavailable_reason(backend: str, op: str, device: torch.device) -> Optional[str]:
    if backend not in _IMPLS[op]:
        return f"backend {backend!r} has no kernel for nf4lora::{op}"
    if backend == "reference":
        return None
    if backend == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None  # Triton's interpreter runs the kernels on CPU tensors (tests)
    if device.type != "cuda":
        return f"backend {backend!r} needs CUDA tensors, got device {device}"
    if backend == "cuda":
        return _cuda_ext.unavailable_reason()
    return None


# Environment variables as they are set now, for the eager path's per-call keys: os.environ.get costs
# ~2 µs (a Python mapping that encodes the key on every call); CPython's os.environ keeps its values
# in a dict of encoded keys, read directly where it has one. (select_backend reads them itself.)
_ENV_DATA = getattr(os.environ, "_data", None)
_ENCODE = getattr(os.environ, "encodekey", None)
_ENV_KEYS = ("NF4LORA_BACKEND", "TRITON_INTERPRET")
_ENV_RAW_KEYS = tuple(_ENCODE(k) for k in _ENV_KEYS) if _ENCODE is not None and _ENV_DATA is not None else None


def _env_now() -> tuple:
    """The raw values of NF4LORA_BACKEND and TRITON_INTERPRET now (None where unset): compared,
    never parsed."""
    if _ENV_RAW_KEYS is None:
        return tuple(os.environ.get(k) for k in _ENV_KEYS)
    get = _ENV_DATA.get
    return get(_ENV_RAW_KEYS[0]), get(_ENV_RAW_KEYS[1])


def select_backend(op: str, device: torch.device, args: Optional[tuple] = None) -> str:
    """The backend that runs ``op`` for tensors on ``device`` (honours NF4LORA_BACKEND). With
    ``args`` (the implementation's arguments), backends whose kernels do not take this call
    (shape, dtype, M regime) are skipped, and a forced one that does not take it is an error."""
    forced = os.environ.get("NF4LORA_BACKEND", "").strip()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"NF4LORA_BACKEND must be one of {BACKENDS}, got {forced!r}")
        reason = _backend_unavailable_reason(forced, op, device) or _call_unsupported_reason(forced, op, args)
        if reason is not None:
            raise RuntimeError(f"NF4LORA_BACKEND={forced} cannot run nf4lora::{op}: {reason}")
        return forced
    return _default_backend(op, device, args)


def _call_unsupported_reason(backend: str, op: str, args: Optional[tuple]) -> Optional[str]:
    check = _SUPPORTS[op].get(backend)
    if check is None:
        return None
    if args is None:  # no call to judge: a kernel for some calls only is not "the" backend
        return f"backend {backend!r} takes only some calls of nf4lora::{op}"
    return check(*args)


def regime_backends(op: str, device: torch.device) -> List[str]:
    """Backends preferred on ``device`` that take only some calls of ``op`` (e.g. small M)."""
    if device.type != "cuda":
        return []
    return [b for b in _CUDA_PREFERENCE if b in _SUPPORTS[op] and _backend_unavailable_reason(b, op, device) is None]


def _cuda_order(op: str, device: torch.device, args: Optional[tuple]) -> tuple:
    """_CUDA_PREFERENCE, with the dispatch table's measured pick for this call first."""
    if args is not None and op in _CALL_KEYS:
        pick = dispatch.preferred(op, dispatch.cuda_device_name(device), *_CALL_KEYS[op](*args))
        if pick is not None and pick != _CUDA_PREFERENCE[0] and pick in _CUDA_PREFERENCE:
            return (pick,) + tuple(b for b in _CUDA_PREFERENCE if b != pick)
    return _CUDA_PREFERENCE


def _default_backend(op: str, device: torch.device, args: Optional[tuple] = None) -> str:
    if device.type == "cuda":
        for backend in _cuda_order(op, device, args):
            if (_backend_unavailable_reason(backend, op, device) is None
                    and _call_unsupported_reason(backend, op, args) is None):
                return backend
    return "reference"


def register_impl(op: str, backend: str, fn: Callable, supports: Optional[Callable] = None,
                  planner: Optional[Callable] = None) -> None:
    """Plug a kernel backend's implementation of ``op`` into the dispatcher. ``supports(*args)``
    returns None when ``fn`` takes a call with these arguments, else the reason it does not
    (a kernel for one regime only, e.g. small M). ``planner(*args)`` returns an implementation
    like ``fn`` for calls of this signature (shapes, dtypes, device, weight), with its launch plan
    worked out once; the eager path keeps it per signature."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _IMPLS[op][backend] = fn
    if supports is not None:
        _SUPPORTS[op][backend] = supports
    if planner is not None:
        _PLANNERS[op][backend] = planner


# --- validation (shared by real and fake implementations) ------------------------------

def _weight(weight: Sequence[torch.Tensor], shape: Sequence[int], blocksize: int,
            nested_offset: float) -> NF4Weight:
    if len(weight) not in (3, 5):
        raise ValueError("weight must be [packed, absmax, quant_map] or "
                         f"[packed, absmax, quant_map, nested_absmax, nested_quant_map], got {len(weight)} tensors")
    if len(shape) != 2:
        raise ValueError(f"shape must be [N, K], got {list(shape)}")
    nested = len(weight) == 5
    return NF4Weight(weight[0], weight[1], shape, blocksize, torch.float32, weight[2],
                     weight[3] if nested else None, weight[4] if nested else None,
                     nested_offset if nested else None)


def _check_float(name: str, t: torch.Tensor, dtype=None, device=None, shape=None) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is None and t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device} (the device of the weight), got {t.device}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_linear_inputs(x, x_lora, q: NF4Weight, A, B, bias) -> int:
    """Validate the inputs of qlora_linear for weight q (N, K); returns r."""
    N, K = q.shape
    _check_float("x", x, device=q.device)
    if x.dim() != 2 or x.shape[1] != K:
        raise ValueError(f"x must have shape (M, {K}) (K = in_features), got {tuple(x.shape)}")
    if x_lora is not None:
        _check_float("x_lora", x_lora, x.dtype, q.device, x.shape)
    _check_float("lora_A", A, x.dtype, q.device)
    if A.dim() != 2 or A.shape[0] <= 0 or A.shape[1] != K:
        raise ValueError(f"lora_A must have shape (r, {K}) with r > 0, got {tuple(A.shape)}")
    r = A.shape[0]
    _check_float("lora_B", B, x.dtype, q.device, (N, r))
    if bias is not None:
        _check_float("bias", bias, x.dtype, q.device, (N,))
    return r


# --- nf4lora::dequantize ------------------------------------------------------------

@torch.library.custom_op("nf4lora::dequantize", mutates_args=())
def _dequantize_op(weight: List[torch.Tensor], shape: List[int], blocksize: int, nested_offset: float,
                   dtype: torch.dtype) -> torch.Tensor:
    q = _weight(weight, shape, blocksize, nested_offset)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    return _IMPLS["dequantize"][select_backend("dequantize", q.device)](q, dtype)


@_dequantize_op.register_fake
def _(weight, shape, blocksize, nested_offset, dtype):
    q = _weight(weight, shape, blocksize, nested_offset)
    return weight[0].new_empty(q.shape, dtype=dtype)


# --- nf4lora::qlora_linear ----------------------------------------------------------

def _reference_forward(x, x_lora, q, A, B, scale, bias):
    w = _dequantize_for_reference(q)
    return reference.forward(x, x if x_lora is None else x_lora, w, A, B, scale, bias)


def _reference_backward(grad_y, x_lora, u, q, A, B, scale, needs):
    w = _dequantize_for_reference(q) if needs[0] else None
    return reference.backward(grad_y, x_lora, u, w, A, B, scale, *needs)


def _dequantize_for_reference(q: NF4Weight) -> torch.Tensor:
    # The reference path (also the fallback of a forced kernel backend for shapes it does not
    # take) dequantizes W with the fastest available kernel, whatever NF4LORA_BACKEND says:
    # every dequantize backend is bit-exact with the others (tests/test_gpu.py).
    return _IMPLS["dequantize"][_default_backend("dequantize", q.device)](q, torch.float32)


@torch.library.custom_op("nf4lora::qlora_linear", mutates_args=())
def _qlora_linear_op(x: torch.Tensor, x_lora: Optional[torch.Tensor], weight: List[torch.Tensor],
                     shape: List[int], blocksize: int, nested_offset: float, A: torch.Tensor,
                     B: torch.Tensor, scale: float, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    return _forward(x, x_lora, _weight(weight, shape, blocksize, nested_offset), A, B, scale, bias)


def _forward(x, x_lora, q: NF4Weight, A, B, scale, bias):
    """The body of nf4lora::qlora_linear: validate, pick the backend, run it. Returns (y, u). (The
    eager path does the same checks and choice once per call signature: _EagerPlan.)"""
    check_linear_inputs(x, x_lora, q, A, B, bias)
    args = (x, x_lora, q, A, B, scale, bias)
    backend = select_backend("qlora_linear", q.device, args)
    last_path["qlora_linear"] = backend
    return _IMPLS["qlora_linear"][backend](*args)


@_qlora_linear_op.register_fake
def _(x, x_lora, weight, shape, blocksize, nested_offset, A, B, scale, bias):
    q = _weight(weight, shape, blocksize, nested_offset)
    r = check_linear_inputs(x, x_lora, q, A, B, bias)
    return x.new_empty((x.shape[0], q.shape[0])), x.new_empty((x.shape[0], r), dtype=torch.float32)


# --- nf4lora::qlora_linear_backward ---------------------------------------------------

@torch.library.custom_op("nf4lora::qlora_linear_backward", mutates_args=())
def _qlora_linear_backward_op(grad_y: torch.Tensor, x_lora: Optional[torch.Tensor], u: Optional[torch.Tensor],
                              weight: List[torch.Tensor], shape: List[int], blocksize: int,
                              nested_offset: float, A: torch.Tensor, B: torch.Tensor, scale: float,
                              needs: List[bool]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """needs = [dx, dx_lora, dA, dB]; outputs not needed come back as empty (0,) tensors.
    needs[1] False with needs[0] True means x̃ is x: the LoRA term is summed into dx."""
    q = _weight(weight, shape, blocksize, nested_offset)
    outs = _backward_body(grad_y, x_lora, u, q, A, B, scale, needs)
    return tuple(grad_y.new_empty(0) if t is None else t for t in outs)


def _backward_body(grad_y, x_lora, u, q: NF4Weight, A, B, scale, needs):
    """The body of nf4lora::qlora_linear_backward (the eager path's _EagerPlan.backward picks and
    runs the same implementations without this re-validation of its own saved state):
    (dx, dx_lora, dA, dB), None where not needed."""
    _check_backward(grad_y, x_lora, u, q, A, B, needs)
    backend = select_backend("qlora_linear_backward", q.device, (grad_y, x_lora, u, q, A, B, scale, needs))
    last_path["qlora_linear_backward"] = backend
    return _IMPLS["qlora_linear_backward"][backend](grad_y, x_lora, u, q, A, B, scale, tuple(needs))


def _backward_shapes(grad_y, q, A, needs):
    M, (N, K), r = grad_y.shape[0], q.shape, A.shape[0]
    shapes = [(M, K), (M, K), (r, K), (N, r)]
    return [s if need else (0,) for s, need in zip(shapes, needs)]


def _check_backward(grad_y, x_lora, u, q, A, B, needs):
    if len(needs) != 4:
        raise ValueError(f"needs must be [dx, dx_lora, dA, dB], got {list(needs)}")
    N, K = q.shape
    _check_float("grad_y", grad_y, device=q.device)
    if grad_y.dim() != 2 or grad_y.shape[1] != N:
        raise ValueError(f"grad_y must have shape (M, {N}), got {tuple(grad_y.shape)}")
    M = grad_y.shape[0]
    _check_float("lora_A", A, grad_y.dtype, q.device)
    if A.dim() != 2 or A.shape[1] != K:
        raise ValueError(f"lora_A must have shape (r, {K}), got {tuple(A.shape)}")
    _check_float("lora_B", B, grad_y.dtype, q.device, (N, A.shape[0]))
    if needs[2]:
        if x_lora is None:
            raise ValueError("x_lora is required for dA")
        _check_float("x_lora", x_lora, grad_y.dtype, q.device, (M, K))
    if needs[3]:
        if u is None:
            raise ValueError("u is required for dB")
        _check_float("u", u, torch.float32, q.device, (M, A.shape[0]))


@_qlora_linear_backward_op.register_fake
def _(grad_y, x_lora, u, weight, shape, blocksize, nested_offset, A, B, scale, needs):
    q = _weight(weight, shape, blocksize, nested_offset)
    _check_backward(grad_y, x_lora, u, q, A, B, needs)
    dtypes = [grad_y.dtype, grad_y.dtype, A.dtype, B.dtype]
    return tuple(grad_y.new_empty(s, dtype=d) for s, d in zip(_backward_shapes(grad_y, q, A, needs), dtypes))


# --- autograd --------------------------------------------------------------------------
# Only what the needed gradients read is saved: x̃ for dA, u for dB, A and B, and the NF4
# state (references to the layer's buffers, no copy). W is never saved dequantized.

def _save(ctx, x, x_lora, A, B, bias, u, weight):
    """Record what backward needs (one rule for the op's autograd and the eager Function)."""
    need_x, need_A, need_B = x.requires_grad, A.requires_grad, B.requires_grad
    need_xl = x_lora is not None and x_lora.requires_grad
    # needs[1] False with needs[0] True tells the backward that x̃ is x (the LoRA term goes into dx).
    # A separate x̃ that needs no gradient must keep the term out of dx: the backward computes it
    # apart (needs[1] True) and the caller drops it (xl_grad False).
    ctx.needs = [need_x, need_xl or (x_lora is not None and need_x), need_A, need_B]
    ctx.xl_grad = need_xl
    ctx.need_bias = bias is not None and bias.requires_grad
    saved_x = (x if x_lora is None else x_lora) if need_A else None
    ctx.save_for_backward(saved_x, u if need_B else None, A, B, *weight)


def _setup_context(ctx, inputs, output):
    x, x_lora, weight, shape, blocksize, nested_offset, A, B, scale, bias = inputs
    # (ctx.needs_input_grad is indexed over flattened inputs, the weight list expands: _save
    # reads requires_grad from the inputs themselves.)
    ctx.meta = (list(shape), blocksize, nested_offset, scale)
    _save(ctx, x, x_lora, A, B, bias, output[1], weight)


def _backward(ctx, grad_y, grad_u):
    shape, blocksize, nested_offset, scale = ctx.meta
    saved = ctx.saved_tensors
    x_lora, u, A, B, weight = saved[0], saved[1], saved[2], saved[3], list(saved[4:])
    grad_y = grad_y.contiguous()
    dx = dx_lora = dA = dB = None
    if any(ctx.needs):  # (the op returns empty tensors for the grads not needed)
        outs = torch.ops.nf4lora.qlora_linear_backward(grad_y, x_lora, u, weight, shape, blocksize,
                                                       nested_offset, A, B, scale, ctx.needs)
        dx, dx_lora, dA, dB = (o if need else None for o, need in zip(outs, ctx.needs))
    return (dx, dx_lora if ctx.xl_grad else None, [None] * len(weight), None, None, None, dA, dB, None,
            grad_y.sum(0) if ctx.need_bias else None)


_qlora_linear_op.register_autograd(_backward, setup_context=_setup_context)


# --- public functions ---------------------------------------------------------------

def _weight_args(q: NF4Weight) -> List[torch.Tensor]:
    return list(q.tensors().values())


def _offset_arg(q: NF4Weight) -> float:
    return q.nested_offset if q.nested else 0.0


def dequantize(q: NF4Weight, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Dense (N, K) W of ``dtype`` (default q.dtype) from its NF4 state, through the op."""
    return torch.ops.nf4lora.dequantize(_weight_args(q), list(q.shape), q.blocksize, _offset_arg(q),
                                        q.dtype if dtype is None else dtype)


def qlora_linear(x: torch.Tensor, weight: NF4Weight, lora_A: torch.Tensor, lora_B: torch.Tensor,
                 scale: float, bias: Optional[torch.Tensor] = None,
                 x_lora: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y = x·Wᵀ + scale·(x̃·Aᵀ)·Bᵀ + bias, differentiable in x, x_lora, lora_A, lora_B and bias.

    Args:
        x: (..., K) float32/float16/bfloat16.
        weight: frozen NF4 W of shape (N, K).
        lora_A: (r, K), lora_B: (N, r), bias: (N,) or None, all of x's dtype and device.
        scale: s, e.g. alpha / r.
        x_lora: x̃ = dropout(x), same shape as x, or None to use x for the LoRA branch.
    Returns:
        y of shape (..., N) and x's dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (..., K), got a scalar")
    lead = x.shape[:-1]
    flat = x.dim() != 2  # 2-D x goes in as it is: a reshape would add a view node to the autograd graph
    x2 = x.reshape(-1, x.shape[-1]) if flat else x
    xl2 = None
    if x_lora is not None:
        if not isinstance(x_lora, torch.Tensor) or x_lora.shape != x.shape:
            raise ValueError(f"x_lora must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(getattr(x_lora, 'shape', ()))}")
        xl2 = x_lora.reshape(-1, x.shape[-1]) if flat else x_lora
    if _eager_ok(x2, xl2, lora_A, lora_B, bias):
        plan = _eager_plan(x2, xl2, weight, lora_A, lora_B, scale, bias)
        if torch.is_grad_enabled() and (x2.requires_grad or lora_A.requires_grad or lora_B.requires_grad
                                        or (xl2 is not None and xl2.requires_grad)
                                        or (bias is not None and bias.requires_grad)):
            if plan.node_cfg is not None:  # the C++ node: forward and backward on the CUDA kernels
                last_path["qlora_linear"] = last_path["qlora_linear_backward"] = "cuda"
                y = _cuda_ext.run_node(plan.launch, plan.node_cfg, plan.node_weight, x2, xl2, lora_A, lora_B,
                                       float(scale), bias)
            else:
                y = _EagerQLoRALinear.apply(x2, xl2, lora_A, lora_B, bias, weight, plan, float(scale))
        else:  # nothing to differentiate (inference, generate()): the same body, no autograd node
            y, _ = plan.forward(weight, x2, xl2, lora_A, lora_B, float(scale), bias)
    else:
        y, _ = torch.ops.nf4lora.qlora_linear(x2, xl2, _weight_args(weight), list(weight.shape), weight.blocksize,
                                              _offset_arg(weight), lora_A, lora_B, float(scale), bias)
    return y.view(*lead, weight.shape[0]) if flat else y


# --- the eager path -------------------------------------------------------------------
# A call through torch.ops costs the dispatcher, the op's Python autograd wrapper and a rebuild
# and re-validation of the NF4 state: hundreds of µs per layer on a slow host (bench/NOTES.md), more
# than the kernel itself at decode batch sizes. Outside torch.compile and for plain tensors,
# qlora_linear runs the same checks and implementations through one autograd.Function instead, and
# does the checks and the backend choice once per call signature: an _EagerPlan, kept on the
# weight (NF4Weight.plans, dropped whenever its fields change) under a key of everything they read
# (_signature). torch.compile, tensor subclasses (FakeTensor, DTensor, functorch wrappers) and meta
# tensors go through the registered ops. EAGER_FAST_PATH = False forces the ops.
EAGER_FAST_PATH = True
# Where the forward and the backward both run on the CUDA backend, with a kept launch plan (LoRA
# dropout or not): the autograd node in C++ (nf4lora._node) instead of _EagerQLoRALinear (no Python in
# the backward). False: the Python Function everywhere (A/Bs, tests).
EAGER_NODE = True
_MAX_PLANS = 64  # per weight (one call signature per M: varying sequence lengths make many)


def _eager_ok(*tensors) -> bool:
    if not EAGER_FAST_PATH or torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter
                              or t.is_meta or torch._C._functorch.is_functorch_wrapped_tensor(t)):
            return False
    return True


def _signature(x, x_lora, A, B, bias) -> tuple:
    """Everything the forward's checks and backend choice read besides the weight's fields: the
    shapes, dtypes and devices of the tensors, NF4LORA_BACKEND and the CUDA launchers' switches.
    (The dispatch tables are fixed once loaded; the backward's choice reads the same.)"""
    return (x.shape, x.dtype, x.device, A.shape, A.dtype, A.device, B.shape, B.dtype, B.device,
            None if x_lora is None else (x_lora.shape, x_lora.dtype, x_lora.device),
            None if bias is None else (bias.shape, bias.dtype, bias.device),
            _env_now(), _cuda_ext.switches(), EAGER_NODE)


def _eager_plan(x, x_lora, q: NF4Weight, A, B, scale, bias) -> "_EagerPlan":
    """The weight's plan for this call's signature: checked and chosen on the first call of a
    signature (errors raise here, before any launch), looked up after. q's fields may have been
    reassigned since it was built: validate_cached checks them first (and drops q's plans when
    they changed)."""
    q.validate_cached()
    key = _signature(x, x_lora, A, B, bias)
    plan = q.plans.get(key)
    if plan is None:
        plan = _EagerPlan(x, x_lora, q, A, B, scale, bias)
        if len(q.plans) >= _MAX_PLANS:
            q.plans.clear()
        q.plans[key] = plan
    return plan


def _planned(op: str, backend: str, args: tuple) -> Callable:
    planner = _PLANNERS[op].get(backend)
    return _IMPLS[op][backend] if planner is None else planner(*args)


# A backward run with create_graph=True (double backward, gradient penalties): the kernels' gradients
# carry no graph, so a loss built from them would silently lose those terms. The reference backend's
# backward is plain torch math and stays differentiable; the registered ops raise torch's own error.
_NO_DOUBLE_BACKWARD = ("nf4lora::qlora_linear: a differentiable backward (create_graph=True: double backward, "
                       "gradient penalties) is not supported on the {backend} backend, whose gradients are kernel "
                       "outputs without a graph; NF4LORA_BACKEND=reference computes a differentiable one")


class _EagerPlan:
    """The forward's checks and backend choice for one call signature of one weight, done once, and
    the implementation that runs such calls (planned where the backend has a planner). The
    backward's choice is made on the first backward (it reads the same signature: grad_y matches y)
    and again only if NF4LORA_BACKEND or TRITON_INTERPRET changed in between. Where the C++ node
    takes the signature (node_cfg set: forward and backward both on the CUDA kernels), both choices
    are made here, at the first forward, and a later change of NF4LORA_BACKEND reaches the backward
    of only the calls made after it. It holds no reference to the weight (the weight holds it: the
    weight is passed in), so a weight goes with its last reference, not with the cycle collector.
    node_weight holds the weight's tensors (what node_cfg's pointers point into), not the weight."""
    __slots__ = ("backend", "run", "env", "bwd_backend", "bwd_run", "launch", "node_cfg", "node_weight")

    def __init__(self, x, x_lora, q: NF4Weight, A, B, scale, bias):
        check_linear_inputs(x, x_lora, q, A, B, bias)
        args = (x, x_lora, q, A, B, scale, bias)
        self.env = _env_now()
        self.backend = select_backend("qlora_linear", q.device, args)
        self.run = _planned("qlora_linear", self.backend, args)
        self.bwd_backend = self.bwd_run = None
        self.launch = self.node_cfg = self.node_weight = None
        if EAGER_NODE and self.backend == "cuda" and _cuda_ext._NODE is not None:
            # the backward's choice for this signature (grad_y is (M, N) in x's dtype): a stand-in
            # of that shape without storage of that size
            g = torch.empty_strided((x.shape[0], q.shape[0]), (0, 0), dtype=x.dtype, device=x.device)
            bwd_args = (g, x_lora, None, q, A, B, scale, (True, x_lora is not None, True, True))
            # (a backward the CUDA kernels do not take stays on the Python Function, which reports
            # a forced backend's refusal when a backward runs, not at the forward)
            if (_call_unsupported_reason("cuda", "qlora_linear_backward", bwd_args) is None
                    and select_backend("qlora_linear_backward", q.device, bwd_args) == "cuda"):
                launch = _bound_plan(self.run, "plan")  # the forward's launch plan, as the planner made it
                if launch is not None:  # (a plan is kept only when cacheable: LaunchPlan)
                    # (the weight's tensors, not the weight: no cycle through q.plans)
                    dx_plan = _cuda_ext.plan_dx(g, q, A.shape[0])  # (the Python backward's planner's)
                    self.launch, self.node_cfg = launch, _cuda_ext.node_cfg(launch, dx_plan)
                    self.node_weight = _weight_args(q)

    def forward(self, q: NF4Weight, x, x_lora, A, B, scale: float, bias):
        """(y, u) of the op's forward for a call of this plan's signature on its weight q."""
        last_path["qlora_linear"] = self.backend
        return self.run(x, x_lora, q, A, B, scale, bias)

    def backward(self, q: NF4Weight, grad_y, x_lora, u, A, B, scale: float, needs: tuple):
        """(dx, dx_lora, dA, dB) of the op's backward, None where not needed. Not re-validated: the
        tensors are the forward's own, and the engine hands grad_y matched to y."""
        args = (grad_y, x_lora, u, q, A, B, scale, needs)
        env = _env_now()
        if self.bwd_run is None or env != self.env:
            self.env = env
            self.bwd_backend = select_backend("qlora_linear_backward", q.device, args)
            self.bwd_run = _planned("qlora_linear_backward", self.bwd_backend, args)
        last_path["qlora_linear_backward"] = self.bwd_backend
        if self.bwd_backend != "reference" and torch.is_grad_enabled():
            raise RuntimeError(_NO_DOUBLE_BACKWARD.format(backend=self.bwd_backend))
        return self.bwd_run(*args)


class _EagerQLoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_lora, A, B, bias, q: NF4Weight, plan: _EagerPlan, scale: float):
        y, u = plan.forward(q, x, x_lora, A, B, scale, bias)
        ctx.q, ctx.plan, ctx.scale = q, plan, scale
        _save(ctx, x, x_lora, A, B, bias, u, [])
        return y

    @staticmethod
    def backward(ctx, grad_y):
        # Flat on purpose: at small M the whole step is host time, and every layer of Python on
        # this path showed in it (bench/results/h200/s20/).
        x_lora, u, A, B = ctx.saved_tensors
        needs = ctx.needs
        dx = dx_lora = dA = dB = None
        if needs[0] or needs[1] or needs[2] or needs[3]:
            dx, dx_lora, dA, dB = ctx.plan.backward(ctx.q, grad_y.contiguous(), x_lora, u, A, B, ctx.scale,
                                                    tuple(needs))
        return (dx, dx_lora if ctx.xl_grad else None, dA, dB, grad_y.sum(0) if ctx.need_bias else None, None, None,
                None)


_warned_fallback = set()


def _triton_fallback_reason(op: str, q: NF4Weight) -> Optional[str]:
    """Why the Triton kernels cannot take this weight (warned once per reason), or None."""
    from nf4lora.triton_kernels import qlora_fwd  # imported on first use: triton loads slowly

    if qlora_fwd.supports(q):
        return None
    reason = f"K={q.shape[1]} is not a multiple of blocksize={q.blocksize}"
    if reason not in _warned_fallback:
        _warned_fallback.add(reason)
        warnings.warn(f"nf4lora: the Triton kernels need K a multiple of the blocksize; {reason}, "
                      "so this layer runs on the reference path (slow)", stacklevel=4)
    last_path[op] = f"reference (fallback: {reason})"
    return reason


def _triton_forward(x, x_lora, q, A, B, scale, bias):
    if _triton_fallback_reason("qlora_linear", q):
        return _reference_forward(x, x_lora, q, A, B, scale, bias)
    from nf4lora.triton_kernels import qlora_fwd

    with _cuda_ext.device_guard(x.device):  # Triton launches on the current CUDA device
        return qlora_fwd.qlora_forward(x, x_lora, q, A, B, scale, bias)


def _triton_backward(grad_y, x_lora, u, q, A, B, scale, needs):
    if _triton_fallback_reason("qlora_linear_backward", q):
        return _reference_backward(grad_y, x_lora, u, q, A, B, scale, needs)
    from nf4lora.triton_kernels import qlora_bwd

    with _cuda_ext.device_guard(grad_y.device):
        return qlora_bwd.qlora_backward(grad_y, x_lora, u, q, A, B, scale, needs)


def _gB_cublas(g, B):
    return torch.mm(g, B, out_dtype=torch.float32)


def _gB_u_kernel(g, B):  # torch < 2.8 (no out_dtype): the forward's u kernel on a contiguous copy of Bᵀ
    return _cuda_ext.lora_u(g, B.t())


# g·B (M, r) float32 for the CUDA backward: cuBLAS with a float32 output where torch has it (2.8+).
_GB_FN = _gB_cublas if _cuda_ext.MM_OUT_DTYPE else _gB_u_kernel


def _cuda_backward(grad_y, x_lora, u, q, A, B, scale, needs, dx_plan=None):
    # Only reached for calls that dx_unsupported_reason accepts (select_backend checked): dx through
    # the CUDA kernel (by dx_plan where the eager path planned this signature, else planned here);
    # g·B (float32) by _GB_FN (cuBLAS: 9-43 µs on the H200 against the u kernel's
    # 23-61 on Bᵀ, which also needs a contiguous copy of Bᵀ per call; bench/NOTES.md, fourteenth
    # session); dA and dB as the Triton backend computes them (lora_grads). No Triton kernel runs
    # here, and the CUDA wrappers switch to the tensors' device themselves: no device guard of its
    # own. Flat on purpose: at M <= 1024 this runs host-bound, where every layer of Python counts.
    need_dx, need_dxl, need_dA, need_dB = needs
    gB = _GB_FN(grad_y, B) if (need_dx or need_dxl or need_dA) else None
    dx = None
    if need_dx:
        dx = _cuda_ext.run_dx(dx_plan or _cuda_ext.plan_dx(grad_y, q, A.shape[0]), grad_y, gB, A, scale, not need_dxl)
    return (dx,) + lora_grads(grad_y, gB, x_lora, u, A, scale, need_dxl, need_dA, need_dB)


def _cuda_forward(x, x_lora, q, A, B, scale, bias, plan=None):
    # Only reached for calls that forward_unsupported_reason accepts (select_backend checked); by
    # ``plan`` where the eager path planned this signature.
    return _cuda_ext.run_forward(plan or _cuda_ext.plan_forward(x, q, A.shape[0]), x, x_lora, A, B, scale, bias)


def _with_plan(fn: Callable, plan: _cuda_ext.LaunchPlan, key: str) -> Callable:
    """fn with its launch plan bound, for the eager path to keep (a plan holding a copy of the codes
    is not kept: LaunchPlan.cacheable)."""
    return functools.partial(fn, **{key: plan}) if plan.cacheable else fn


def _bound_plan(fn: Callable, key: str) -> Optional[_cuda_ext.LaunchPlan]:
    """The launch plan _with_plan bound into fn under ``key``, or None where none was kept."""
    return fn.keywords.get(key) if isinstance(fn, functools.partial) else None


register_impl("dequantize", "reference", dequantize_nf4)
register_impl("qlora_linear", "reference", _reference_forward)
register_impl("qlora_linear_backward", "reference", _reference_backward)
if _cuda_ext.built():
    register_impl("dequantize", "cuda", _cuda_ext.dequantize)
    register_impl("qlora_linear", "cuda", _cuda_forward,
                  supports=lambda x, x_lora, q, A, B, scale, bias: _cuda_ext.forward_unsupported_reason(x, q),
                  planner=lambda x, x_lora, q, A, B, scale, bias: _with_plan(
                      _cuda_forward, _cuda_ext.plan_forward(x, q, A.shape[0]), "plan"))
if importlib.util.find_spec("triton") is not None:
    register_impl("qlora_linear", "triton", _triton_forward)
    register_impl("qlora_linear_backward", "triton", _triton_backward)
    if _cuda_ext.built():  # the CUDA backward: its dx and u kernels, dA and dB as qlora_bwd does them
        register_impl("qlora_linear_backward", "cuda", _cuda_backward,
                      supports=lambda g, x_lora, u, q, A, B, scale, needs: _cuda_ext.dx_unsupported_reason(g, q),
                      planner=lambda g, x_lora, u, q, A, B, scale, needs: _with_plan(
                          _cuda_backward, _cuda_ext.plan_dx(g, q, A.shape[0]), "dx_plan"))
