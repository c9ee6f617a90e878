"""QLoRALinear: a drop-in nn.Linear with a frozen NF4 weight and a trainable LoRA adapter."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from . import ops
from .nf4 import NF4Weight, dequantize_nf4, quantize_nf4

_WEIGHT_BUFFERS = ("packed", "absmax", "quant_map", "nested_absmax", "nested_quant_map")


class QLoRALinear(nn.Module):
    """y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ + bias with W (out, in) frozen in NF4.

    Shapes: x (..., in_features) → y (..., out_features); lora_A (r, in_features),
    lora_B (out_features, r); s = alpha / r, or alpha / sqrt(r) with ``use_rslora``.

    W is held as buffers (never Parameters, never a gradient); lora_A starts kaiming-uniform
    (a=√5) and lora_B at zero, so a fresh layer computes exactly the quantized base layer.
    The LoRA parameters and the bias live in ``compute_dtype``; an input of another dtype is
    cast to it and the output cast back, as bitsandbytes' Linear4bit does. The bias is frozen,
    as PEFT leaves it by default (set ``bias.requires_grad_()`` to train it).

    ``state_dict()`` writes W under bitsandbytes' keys (``weight``, ``weight.absmax``, ...,
    ``weight.quant_state.bitsandbytes__nf4``), so a bitsandbytes 4-bit checkpoint loads into
    this layer and the reverse.
    """

    def __init__(self, in_features: int, out_features: int, r: int = 16, alpha: float = 16,
                 dropout: float = 0.0, bias: bool = True, use_rslora: bool = False, blocksize: int = 64,
                 double_quant: bool = True, compute_dtype: Optional[torch.dtype] = None,
                 device=None, weight: Optional[NF4Weight] = None):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(r, int) or r <= 0:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        compute_dtype = compute_dtype or torch.get_default_dtype()
        if compute_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"compute_dtype must be float32, float16 or bfloat16, got {compute_dtype}")
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        if weight is None:
            w = torch.empty(out_features, in_features, device=device, dtype=torch.float32)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            weight = quantize_nf4(w, blocksize, double_quant)
        elif weight.shape != (out_features, in_features):
            raise ValueError(f"weight must have shape ({out_features}, {in_features}), got {weight.shape}")
        self._set_weight(weight)
        dev = weight.device
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=dev, dtype=compute_dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=dev, dtype=compute_dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.bias = None
        if bias:
            bound = 1 / math.sqrt(in_features)
            self.bias = nn.Parameter(torch.empty(out_features, device=dev, dtype=compute_dtype)
                                     .uniform_(-bound, bound), requires_grad=False)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    # --- the frozen weight ----------------------------------------------------------------
    def _set_weight(self, q: NF4Weight) -> None:
        for name, t in zip(_WEIGHT_BUFFERS, (q.packed, q.absmax, q.quant_map, q.nested_absmax,
                                             q.nested_quant_map)):
            self.register_buffer(f"weight_{name}", t, persistent=False)
        self.weight_nested_offset = q.nested_offset
        self.weight_blocksize = q.blocksize
        self.weight_dtype = q.dtype

    @property
    def weight(self) -> NF4Weight:
        """The frozen W (out_features, in_features) as an NF4Weight over this layer's buffers.

        Not re-validated here (it was when set, and every op validates its inputs). This runs on
        every forward, where host time counts at small batch sizes: the object is kept and handed
        out again while the buffers and its own fields are still the same objects (so it also
        keeps its validation), and rebuilt as soon as either side was reassigned."""
        b = self._buffers
        bufs = (b["weight_packed"], b["weight_absmax"], b["weight_quant_map"], b["weight_nested_absmax"],
                b["weight_nested_quant_map"])
        scalars = (self.weight_blocksize, self.weight_dtype, self.weight_nested_offset)
        q = self.__dict__.get("_weight_view")
        if (q is not None and all(a is f for a, f in zip(bufs, (q.packed, q.absmax, q.quant_map, q.nested_absmax,
                                                              q.nested_quant_map)))
                and scalars == (q.blocksize, q.dtype, q.nested_offset)
                and q.shape == (self.out_features, self.in_features)):
            return q
        q = NF4Weight(bufs[0], bufs[1], (self.out_features, self.in_features), scalars[0], scalars[1], bufs[2],
                      bufs[3], bufs[4], scalars[2], check=False)
        self.__dict__["_weight_view"] = q
        return q

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the LoRA parameters, the bias and the output (follows ``.to(dtype)``)."""
        return self.lora_A.dtype

    def _apply(self, fn, recurse=True):
        # Module.to(dtype)/.half() would cast the float32 NF4 tables and absmax, which the format
        # fixes at float32: take them out, let the rest move, then move them to the device the
        # packed codes went to, dtype unchanged.
        fixed = {k: self._buffers.pop(k) for k in ("weight_absmax", "weight_quant_map",
                                                  "weight_nested_absmax", "weight_nested_quant_map")}
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.weight_packed.device
            for k, v in fixed.items():
                self._buffers[k] = None if v is None else v.to(device)
        return self

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    @property
    def dropout(self) -> float:
        return self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) else 0.0

    # --- construction from nn.Linear -------------------------------------------------------
    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int = 16, alpha: float = 16, dropout: float = 0.0,
                    use_rslora: bool = False, blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: Optional[torch.dtype] = None) -> "QLoRALinear":
        """Quantize ``linear.weight`` to NF4 (on its device) and wrap it with a fresh adapter."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, r, alpha, dropout, linear.bias is not None,
                    use_rslora, blocksize, double_quant, compute_dtype or w.dtype,
                    weight=quantize_nf4(w, blocksize, double_quant))
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    # --- compute -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The parameters straight from their dict (each ``self.lora_A`` is a Module.__getattr__
        # call): at decode sizes a layer's call is host time (bench/results/h200/s21/).
        params = self._parameters
        A, B = params["lora_A"], params["lora_B"]
        bias = params["bias"] if "bias" in params else self.bias  # (bias=False: a plain None attribute)
        in_dtype = x.dtype
        if in_dtype != A.dtype:
            x = x.to(A.dtype)
        x_lora = None
        if self.training:
            drop = self._modules.get("lora_dropout")
            if isinstance(drop, nn.Dropout) and drop.p > 0:
                x_lora = drop(x)
        y = ops.qlora_linear(x, self.weight, A, B, self.scaling, bias, x_lora)
        return y if in_dtype == y.dtype else y.to(in_dtype)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """An nn.Linear holding W + s·B·A (and the bias) in the compute dtype."""
        w = dequantize_nf4(self.weight, torch.float32)
        w += self.scaling * (self.lora_B.float() @ self.lora_A.float())
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=w.device, dtype=self.compute_dtype)
        out.weight.copy_(w)
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, dropout={self.dropout}, bias={self.bias is not None}, "
                f"blocksize={self.weight_blocksize}, double_quant={self.weight_nested_absmax is not None}, "
                f"compute_dtype={self.compute_dtype}")

    # --- state dict in bitsandbytes' keys -------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for k, v in self.weight.to_bnb_state_dict(prefix + "weight").items():
            destination[k] = v if keep_vars else v.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "weight"
        ours = [k for k in state_dict if k == key or k.startswith(key + ".")]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        unexpected_keys[:] = [k for k in unexpected_keys if k not in ours]
        if key not in state_dict:
            missing_keys.append(key)
            return
        try:
            q = NF4Weight.from_bnb_state_dict(state_dict, key)
        except (KeyError, ValueError, TypeError) as exc:
            error_msgs.append(f"{key}: {exc}")
            return
        if q.shape != (self.out_features, self.in_features):
            error_msgs.append(f"{key}: shape {q.shape} does not match this layer's "
                              f"({self.out_features}, {self.in_features})")
            return
        self._set_weight(q.to(self.weight_packed.device))
