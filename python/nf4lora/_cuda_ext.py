"""The csrc/ extension (``nf4lora._C``): loading, availability, and thin launch wrappers.

The extension links no libtorch: it takes raw device pointers, sizes and the CUDA stream.
All validation happens in ops.py before any launch; the wrappers here only translate tensors
to pointers. Importing it on a machine without a GPU is fine; launching is not.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from .nf4 import NF4Weight

try:
    _C = importlib.import_module("nf4lora._C")
    _IMPORT_ERROR: Optional[str] = None
except ImportError as exc:  # not built (no nvcc at install, or NF4LORA_SKIP_CUDA_BUILD=1)
    _C = None
    _IMPORT_ERROR = str(exc)

# Output dtype codes shared with csrc/bindings.cpp.
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def built() -> bool:
    """True when the extension module was compiled and imports."""
    return _C is not None


def unavailable_reason() -> Optional[str]:
    """None when CUDA kernels can run here, else why not."""
    if _C is None:
        return f"the CUDA extension nf4lora._C is not built ({_IMPORT_ERROR})"
    if not torch.cuda.is_available():
        return "CUDA not available: no GPU or driver on this machine"
    count, err = _C.cuda_device_count()
    if count == 0:
        return f"CUDA not available to the extension: {err}"
    return None


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def dequantize(q: NF4Weight, dtype: torch.dtype) -> torch.Tensor:
    """Dense (N, K) W through the CUDA dequantize kernel (inputs already validated)."""
    out = torch.empty(q.shape, dtype=dtype, device=q.device)
    if q.numel == 0:
        return out
    # The kernel reads the codes as 4-byte words; a view at an odd offset is copied once.
    packed = q.packed if q.packed.data_ptr() % 4 == 0 else q.packed.clone()
    with torch.cuda.device(q.device):
        _C.dequantize_nf4(
            out=out.data_ptr(), out_dtype=_DTYPE_CODES[dtype], packed=packed.data_ptr(),
            absmax=q.absmax.data_ptr(), quant_map=q.quant_map.data_ptr(),
            nested_absmax=q.nested_absmax.data_ptr() if q.nested else 0,
            nested_quant_map=q.nested_quant_map.data_ptr() if q.nested else 0,
            nested_offset=q.nested_offset if q.nested else 0.0,
            n=q.numel, blocksize=q.blocksize, stream=_stream(q.device))
    return out
