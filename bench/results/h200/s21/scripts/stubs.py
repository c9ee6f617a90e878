"""Host time of the eager CUDA path on this CPU machine: _C stubbed (no launches), CPU tensors
standing in for CUDA ones. Compares the shipped path with a floor Function (same torch ops)."""
import statistics, sys, time, types
import torch
from nf4lora import ops, _cuda_ext
from nf4lora.nf4 import quantize_nf4

class StubC:
    def plan_qlora_mma(self, *a): return (0, 0, 0, 256)
    def plan_qlora_gemv(self, M, N, K, sm, tiles, code): return (1, tiles, 0)
    def lora_fold_chunks(self, r): return 1
    def __getattr__(self, name): return lambda *a, **k: None

_cuda_ext._C = StubC()
_cuda_ext._stream = lambda d: 0
_cuda_ext._sm_count = lambda d: 132
ops._backend_unavailable_reason = lambda b, op, d: None if b in ops._IMPLS[op] else "no"
def _default_backend(op, device, args=None):
    for backend in ops._cuda_order(op, device, args):
        if (ops._backend_unavailable_reason(backend, op, device) is None
                and ops._call_unsupported_reason(backend, op, args) is None):
            return backend
    return "reference"
ops._default_backend = _default_backend
gb = lambda g, B: torch.mm(g, B).float()
ops._GB_FN = gb

