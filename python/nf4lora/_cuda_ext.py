"""The csrc/ extension (``nf4lora._C``): loading, availability, and thin launch wrappers.

The extension links no libtorch: it takes raw device pointers, sizes and the CUDA stream.
All validation happens in ops.py before any launch; the wrappers here only translate tensors
to pointers. Importing it on a machine without a GPU is fine; launching is not.
"""

from __future__ import annotations

import contextlib
import functools
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

# nf4lora._node (csrc/node.cpp): the eager autograd node in C++, launching _C's kernels through the
# launch table _C exports. Built with _C wherever torch's extension builder is (setup.py).
_NODE = None
_NODE_ERROR: Optional[str] = "the CUDA extension nf4lora._C is not built"
if _C is not None:
    try:
        _NODE = importlib.import_module("nf4lora._node")
        _NODE.set_launch_table(_C.launch_table(), _C.LAUNCH_TABLE_VERSION)
        _NODE_ERROR = None
    except (ImportError, RuntimeError) as exc:  # not built, or built against another _C
        _NODE, _NODE_ERROR = None, str(exc)

# Output dtype codes shared with csrc/bindings.cpp.
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def built() -> bool:
    """True when the extension module was compiled and imports."""
    return _C is not None


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> Optional[str]:
    """None when CUDA kernels can run here, else why not (probed once per process: the
    dispatcher asks on every call)."""
    if _C is None:
        return f"the CUDA extension nf4lora._C is not built ({_IMPORT_ERROR})"
    if not torch.cuda.is_available():
        return "CUDA not available: no GPU or driver on this machine"
    count, err = _C.cuda_device_count()
    if count == 0:
        return f"CUDA not available to the extension: {err}"
    return None


# torch's raw accessor of the current stream (what its own Triton launches use); absent from CPU
# builds. torch.cuda.current_stream builds a Python Stream object per call: ~25 µs of host time on
# the H200 machine's host (bench/NOTES.md), on every launch.
_RAW_STREAM = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(device: torch.device) -> int:
    """The current CUDA stream of ``device`` as a raw cudaStream_t handle."""
    if _RAW_STREAM is not None:
        return _RAW_STREAM(device_index(device))
    return torch.cuda.current_stream(device).cuda_stream


# The current CUDA device's index, without torch.cuda.current_device's lazy-init check (asked with
# CUDA tensors in hand, so CUDA is initialized): ~1.5 µs less on every launch. Absent from CPU builds.
_CURRENT_DEVICE = getattr(torch._C, "_cuda_getDevice", None)
_NO_GUARD = contextlib.nullcontext()  # (reusable: it holds no state)


def device_guard(device: torch.device):
    """Make ``device`` the current CUDA device for a launch (kernels launch on the current one:
    layers spread over several GPUs must not launch on cuda:0 with cuda:1 pointers). No switch,
    and none of its host cost, when it already is the current device (the usual case)."""
    if device.type != "cuda" or device.index is None or device.index == _CURRENT_DEVICE():
        return _NO_GUARD
    return torch.cuda.device(device)


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


# --- fused forward: small M (csrc/qlora_gemv.cu) and tensor cores (csrc/qlora_mma.cu) -----------
GEMV_MAX_M = 16  # rows of x up to which the small-M kernel runs; the tensor-core kernel above


def forward_unsupported_reason(x: torch.Tensor, q: NF4Weight) -> Optional[str]:
    """None when the CUDA forward takes this call, else why not (x is (M, K))."""
    if x.dtype not in (torch.float16, torch.bfloat16):
        return f"the CUDA forward takes float16/bfloat16 x, got {x.dtype}"
    if x.shape[0] < 1:
        return f"the CUDA forward needs M >= 1 rows, got M={x.shape[0]}"
    if q.blocksize < 64:
        return f"the CUDA forward needs blocksize >= 64, got {q.blocksize}"
    if q.shape[1] % q.blocksize:
        return f"the CUDA forward needs K a multiple of the blocksize, got K={q.shape[1]}, blocksize={q.blocksize}"
    return None


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """t contiguous with a 16-byte aligned start (a copy only when it is not)."""
    t = t.contiguous()
    return t if t.data_ptr() % 16 == 0 else t.clone()


def device_index(device: torch.device) -> int:
    """The index of a CUDA device ("cuda" without one: the current device)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def _sm_count(device: torch.device) -> int:
    return _props_of(device_index(device)).multi_processor_count


@functools.lru_cache(maxsize=None)
def _props_of(index: int):
    """The device's properties (SM count, compute capability), asked once per device."""
    return torch.cuda.get_device_properties(index)


# Rows of W per block of the small-M kernel in 16-row tiles (1: 16 rows, 2: 32; the block's 8
# warps split K), or 0: the planner's choice (plan_qlora_gemv: 16 rows for the TMA kernel at M > 8 where
# 32-row blocks would split K into slices of at most 3072 k, else 32); bench/diag_fwd.py compares.
GEMV_TILES = 0
# How the small-M kernel streams W and x and decodes it: "rows" (sm_90, M <= 8: the codes loaded straight
# into registers, warps owning spans of K and walking the rows; the decode through a shared
# byte-pair table), "tma" (sm_90 only: TMA copies into the block's mbarrier ring, the decode through
# a shared byte-pair table), "cp_async" (any GPU: cp.async rings, the byte-permute decode in
# registers), "auto" (the launcher's choice from measurements: on sm_90 rows up to M = 4 and up to
# M = 8 where K <= 4096 or where its plan walks K in passes (csrc/qlora_gemv.cu, rows_plan), tma above;
# cp_async elsewhere). Tests and bench/diag_fwd.py compare.
GEMV_PIPELINES = {"auto": 0, "cp_async": 1, "tma": 2, "rows": 3}
GEMV_PIPELINE = "auto"


def _nf4_args(q: NF4Weight):
    """(packed codes, 16-byte aligned (a copy only when they are not), the NF4 state's pointer
    arguments of every launcher: packed, absmax, quant_map, nested_absmax, nested_quant_map,
    nested_offset, blocksize)."""
    packed = q.packed if q.packed.data_ptr() % 16 == 0 else q.packed.clone()
    nested = q.nested_absmax is not None
    return packed, (packed.data_ptr(), q.absmax.data_ptr(), q.quant_map.data_ptr(),
                    q.nested_absmax.data_ptr() if nested else 0, q.nested_quant_map.data_ptr() if nested else 0,
                    q.nested_offset if nested else 0.0, q.blocksize)


def _operands(x, x_lora, A, B, bias, u_by_cublas: bool):
    """What both forward launchers take per call: (keep, y, u, operands). y (M, N) and u (M, r)
    float32 are the outputs; operands the leading pointer arguments (y, x, x_lora, A, B, bias, u) of
    contiguous, 16-byte aligned tensors. ``keep`` holds the operand tensors (copies made for
    alignment included) alive until the launch is queued. u_by_cublas: u = x_lora·Aᵀ is computed
    here (cuBLAS, float32 output). A plain function and tuples: this runs on every call, where at
    decode sizes host time is the cost."""
    x = _aligned(x)
    xl = x if x_lora is None else _aligned(x_lora)
    A, B = _aligned(A), _aligned(B)
    bias = None if bias is None else bias.contiguous()
    y = torch.empty((x.shape[0], B.shape[0]), device=x.device, dtype=x.dtype)
    if u_by_cublas:
        u = torch.mm(xl, A.t(), out_dtype=torch.float32)
    else:
        u = torch.empty((x.shape[0], B.shape[1]), device=x.device, dtype=torch.float32)
    operands = (y.data_ptr(), x.data_ptr(), xl.data_ptr(), A.data_ptr(), B.data_ptr(),
                0 if bias is None else bias.data_ptr(), u.data_ptr())
    return (x, xl, A, B, bias), y, u, operands


def _workspace(nbytes: int, device) -> Optional[torch.Tensor]:
    return torch.empty(nbytes, device=device, dtype=torch.uint8) if nbytes else None


# Counters that are zero between launches (the split-K ones, the fused u's), one buffer per (device, stream) and,
# inside a CUDA graph capture, per capture: the kernels' last block of each group resets what it counted on, so a
# buffer zeroed once serves every later launch on its stream (in stream order), and no memset runs before the
# kernels. Allocated (zeroed) on the stream that uses it. A capture gets its own buffer, its allocation and zero
# fill captured with the graph's kernels (one fill per replay), so graphs captured on one stream
# (torch.cuda.graph's default capture stream) may be replayed at once on different streams. The dict drops a
# capture's buffer at the stream's next capture; the graph keeps its memory in its private pool.
_ZEROED_COUNTERS: dict = {}


def zeroed_counters(device: torch.device, stream: int, n: int) -> tuple:
    """(pointer, length) of at least n 4-byte counters, zero now, for launches on ``stream`` (the
    current stream of ``device``; within a graph capture, this capture's own)."""
    capture = _C.capture_id(stream)
    key = (device_index(device), stream, capture)
    entry = _ZEROED_COUNTERS.get(key)  # (the buffer, (its pointer, its length)): no tensor calls per launch
    if entry is None or entry[1][1] < n:
        if capture:  # (the stream's earlier captures' buffers: their graphs hold them)
            for old in [k for k in _ZEROED_COUNTERS if k[:2] == key[:2] and k[2] not in (0, capture)]:
                del _ZEROED_COUNTERS[old]
        buf = torch.zeros(max(n, 4096), device=device, dtype=torch.int32)
        entry = _ZEROED_COUNTERS[key] = (buf, (buf.data_ptr(), buf.numel()))
    return entry[1]


# csrc/qlora_mma.cu kernel choice: 0 = on sm_90 (H100/H200) wgmma_rs, or wgmma_ss where K is split
# across a cluster (few tiles), mma.sync elsewhere; 1 = mma.sync; 2 = wgmma with W in the register
# operand, 3 = wgmma_ss with W in shared memory, 4 = wgmma_ws, 3 warp-specialized: a producer
# warpgroup (TMA copies of x, the decode), no K split; 5 = wgmma_ws_pair, 4 with each decode shared
# by a cluster of two blocks; 6 = wgmma_rs, 4 with the decode in the consumer warpgroups' registers (RS
# wgmmas; the producers build the rows' scaled tables) (sm_90 only).
# Tests and bench/mma_diag compare them. block_m (wgmma): x rows per block, 128 or 256; 0 lets the
# launcher choose from the shape.
MMA_VARIANTS = {"auto": 0, "mma_sync": 1, "wgmma": 2, "wgmma_ss": 3, "wgmma_ws": 4, "wgmma_ws_pair": 5, "wgmma_rs": 6}

# u = x̃·Aᵀ of the large-M forward: "cublas" (torch.mm with a float32 output, torch 2.8+; the
# launcher then runs the main kernel alone) or "kernel" (csrc's lora_u_part_kernel, in the same
# launcher call). cuBLAS took 1.4-8x less GPU time than the u kernel on the H200 at every point
# measured (M 128-16384, r 16 and 64, three shapes: 6-120 µs against 17-266; bench/results/h200/s17/),
# so it is the default wherever torch has it above U_KERNEL_MAX_M rows (below, host time decides:
# default_u_by). MM_OUT_DTYPE: torch.mm(..., out_dtype=) exists (2.8+;
# the CUDA backward's g·B uses it too, ops._GB_FN).
MM_OUT_DTYPE = hasattr(torch.ops.aten.mm, "dtype")
U_BY = "cublas" if MM_OUT_DTYPE else "kernel"
# Up to this many rows u goes through the u kernel even where cuBLAS takes less GPU time: those calls
# are host-bound, and the u kernel runs in the launcher's own call (no torch.mm with out_dtype, two
# launches through the dispatcher). On the H200 (bench/results/h200/s20/), interleaved: fwd+bwd step
# walls with the u kernel 0.89-0.91x cuBLAS's at M = 128 and 0.92-0.94x at M = 1024 (run 1, three
# shapes), but the forward alone 1.00-1.15x at M = 512 and 1024 on five shapes (run 7: GPU time) and
# 0.79-1.13x at M = 128. 128 keeps the step's gain where the forward alone is mixed. The backward's
# g·B stays on cuBLAS (by the u kernel it needs a copy of Bᵀ per call: 0.78-1.00, not consistently
# better). With its split-K sum in clusters (s38 run 4) the u kernel takes 7.0-15.0 µs at M 17-128 on K 4096 /
# 14336, r 16 / 64: 1.18-1.89x cuBLAS's GPU time (5.8-8.0 µs) for one launch fewer; the step's balance at 128 was
# not re-measured.
U_KERNEL_MAX_M = 128


def switches() -> tuple:
    """The module's switches that plans depend on (ops.py keys its cached plans by them as well)."""
    return GEMV_MAX_M, GEMV_TILES, GEMV_PIPELINE, U_KERNEL_MAX_M, U_BY, FOLD_LORA


def default_u_by(M: int) -> str:
    """How the large-M forward computes u = x̃·Aᵀ for a call of M rows by default ("cublas" or
    "kernel")."""
    return "kernel" if M <= U_KERNEL_MAX_M else U_BY


# The large-M forward's LoRA term folded into the warp-specialized kernel's reduction where
# _C.lora_fold_chunks(r) > 0 (r a multiple of 8): ceil(r / 32) extra chunks of tf32 MMAs of u (as
# computed, float32) and s·B's ranks, no launch or workspace of their own (u enters with tf32's 10
# mantissa bits: relative error < 2^-10, below plain bf16 math's rounding of u). False: the
# epilogue adds the LoRA term (u split into a T part and a residual, ~16 bits); for A/Bs.
FOLD_LORA = True


class LaunchPlan:
    """One launch worked out from what does not change between calls of one signature (M, N, K, r,
    dtype, device, the NF4 state, the module's switches): the launcher's own plan (kernel, K
    splits, tiles, workspace bytes) and the NF4 state's pointer arguments. run_forward / run_dx
    launch it on a call's tensors; ops.py keeps plans per call signature for its eager path.
    ``cacheable``: False where the plan holds a copy of the codes (packed not 16-byte aligned), which
    an in-place edit of the weight would leave stale: such a plan serves one call."""
    # large: the tensor-core forward (qlora_mma) rather than the small-M one (unused by dx).
    # counters: split-K counters the launch uses (zeroed_counters gives them, no memset).
    __slots__ = ("large", "dims", "dtype_code", "state", "packed", "device", "ws_bytes", "counters", "launch",
                 "by_cublas", "fold", "cacheable")

    def __init__(self, t: torch.Tensor, q: NF4Weight, r: int, large: bool, launch: tuple, ws_bytes: int = 0,
                 counters: int = 0, by_cublas: bool = False, fold: bool = False):
        # t: the call's x (M, K) or, for dx, g (M, N): its rows, dtype and device
        self.packed, self.state = _nf4_args(q)
        self.cacheable = self.packed is q.packed
        self.large, self.device, self.dtype_code = large, t.device, _DTYPE_CODES[t.dtype]
        self.dims = (t.shape[0], q.shape[0], q.shape[1], r)
        self.launch, self.ws_bytes, self.counters = launch, ws_bytes, counters
        self.by_cublas, self.fold = int(by_cublas), int(fold)


def plan_forward(x, q: NF4Weight, r: int) -> LaunchPlan:
    """The plan qlora_forward runs for x (M, K) and rank r: the small-M kernels up to GEMV_MAX_M
    rows, the tensor-core kernels above, each with its defaults."""
    if x.shape[0] <= GEMV_MAX_M:
        return plan_forward_small(x, q, r)
    return plan_forward_large(x, q, r)


def plan_forward_small(x, q: NF4Weight, r: int, tiles: Optional[int] = None, pipeline: Optional[str] = None):
    """The small-M kernels' plan (tiles and pipeline as qlora_forward_small takes them)."""
    code = GEMV_PIPELINES[pipeline or GEMV_PIPELINE]
    (M, K), N, device = x.shape, q.shape[0], x.device
    with device_guard(device):  # (the plan resolves "auto" for the current device, as the launcher does)
        splits, tiles, ws_bytes, counters = _C.plan_qlora_gemv(M, N, K, _sm_count(device), tiles or GEMV_TILES, code)
    return LaunchPlan(x, q, r, False, (splits, tiles, code), ws_bytes, counters)


def plan_forward_large(x, q: NF4Weight, r: int, variant: str = "auto", block_m: int = 0, u_by: Optional[str] = None,
                       fold_lora: Optional[bool] = None):
    """The tensor-core kernels' plan (variant, block_m, u_by and fold_lora as qlora_forward_large
    takes them)."""
    if variant not in MMA_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(MMA_VARIANTS)}, got {variant!r}")
    u_by = u_by or default_u_by(x.shape[0])
    if u_by not in ("cublas", "kernel"):
        raise ValueError(f"u_by must be 'cublas' or 'kernel', got {u_by!r}")
    if u_by == "cublas" and not MM_OUT_DTYPE:
        raise ValueError(f"u_by='cublas' needs torch.mm with out_dtype (torch 2.8+), this is torch {torch.__version__}")
    (M, K), N, by_cublas = x.shape, q.shape[0], u_by == "cublas"
    ws_bytes = counters = 0
    if not by_cublas:
        with device_guard(x.device):  # the plan depends on the device (kernel, SM count)
            ws_bytes, counters = _C.plan_qlora_mma(M, N, K, r, MMA_VARIANTS[variant], block_m)[3:]
    fold = FOLD_LORA if fold_lora is None else bool(fold_lora)
    return LaunchPlan(x, q, r, True, (MMA_VARIANTS[variant], block_m), ws_bytes, counters, by_cublas, fold)


def node_cfg(plan: LaunchPlan, dx_plan: LaunchPlan) -> list:
    """The constants csrc/node.cpp takes (its Cfg order) for the forward ``plan`` and the backward's
    ``dx_plan`` (plan_dx's): the forward launch, the dx launch (block_m, variant), the NF4 state's
    pointers, N, K, r."""
    launch = tuple(plan.launch) + (0,) * (3 - len(plan.launch))
    packed, absmax, quant_map, nested_absmax, nested_quant_map, _, blocksize = plan.state
    M, N, K, r = plan.dims
    return [int(plan.large), *launch, plan.ws_bytes, plan.by_cublas, plan.fold, *dx_plan.launch,
            packed, absmax, quant_map, nested_absmax, nested_quant_map, blocksize, N, K, r]


def run_node(plan: LaunchPlan, cfg: list, weight: list, x, x_lora, A, B, scale: float, bias):
    """y (M, N) through the C++ autograd node (nf4lora._node): the forward by ``plan`` and a backward
    that runs g·B, the dx kernel (the default dx plan), dx_lora, dA and dB without Python. x (M, K),
    x_lora (dropout(x), or None for x), A, B, bias as qlora_forward takes them, validated by ops.py.
    weight: the NF4 state's tensors (cfg's pointers point into them; the node keeps them until its
    backward has run)."""
    device = plan.device
    with device_guard(device):
        stream = _stream(device)
        counters = zeroed_counters(device, stream, plan.counters) if plan.counters else (0, 0)
        return _NODE.qlora_apply(x, x_lora, A, B, bias, float(scale), cfg, plan.state[5], weight, counters[0],
                                 counters[1], stream)


def run_forward(plan: LaunchPlan, x, x_lora, A, B, scale: float, bias):
    """(y (M, N) in x's dtype, u (M, r) float32) by ``plan``, made for this call's signature (ops.py
    keys its cache of plans by it). Inputs validated by ops.py."""
    keep, y, u, operands = _operands(x, x_lora, A, B, bias, plan.by_cublas)
    device, ws_bytes = plan.device, plan.ws_bytes
    with device_guard(device):
        stream = _stream(device)
        ws = _workspace(ws_bytes, device)  # split-K partial sums, where the plan splits K
        ws_ptr = 0 if ws is None else ws.data_ptr()
        counters = zeroed_counters(device, stream, plan.counters) if plan.counters else (0, 0)
        if plan.large:
            _C.qlora_mma(*operands, plan.fold, ws_ptr, ws_bytes, plan.dtype_code, *plan.state, *plan.dims,
                         float(scale), *plan.launch, plan.by_cublas, *counters, stream)
        else:
            _C.qlora_gemv(*operands, ws_ptr, plan.dtype_code, *plan.state, *plan.dims, float(scale), *plan.launch,
                          *counters, stream)
    return y, u


def qlora_forward(x, x_lora, q: NF4Weight, A, B, scale: float, bias):
    """(y (M, N) in x's dtype, u (M, r) float32): the small-M kernels up to GEMV_MAX_M rows, the
    tensor-core kernels above. Inputs validated by ops.py; forward_unsupported_reason(x, q) is None."""
    return run_forward(plan_forward(x, q, A.shape[0]), x, x_lora, A, B, scale, bias)


def qlora_forward_small(x, x_lora, q: NF4Weight, A, B, scale: float, bias, tiles: Optional[int] = None,
                        pipeline: Optional[str] = None):
    """The small-M kernels (1 <= M <= GEMV_MAX_M; the launcher refuses other M). tiles and pipeline
    default to GEMV_TILES and GEMV_PIPELINE (a key of GEMV_PIPELINES)."""
    return run_forward(plan_forward_small(x, q, A.shape[0], tiles, pipeline), x, x_lora, A, B, scale, bias)


def qlora_forward_large(x, x_lora, q: NF4Weight, A, B, scale: float, bias, variant: str = "auto",
                        block_m: int = 0, u_by: Optional[str] = None, fold_lora: Optional[bool] = None):
    """The tensor-core kernels (any M >= 1; meant for M > GEMV_MAX_M). u_by: how u = x̃·Aᵀ is
    computed, "cublas" or "kernel" (default default_u_by(M)). Workspace (sized by _C.plan_qlora_mma) when the u
    kernel runs and splits K: its S·M·r float32 partial sums (its counters: zeroed_counters; the main
    kernel's K split, with few output tiles, runs in thread-block clusters and needs none).
    fold_lora (default FOLD_LORA): where the plan is warp-specialized and _C.lora_fold_chunks(r) > 0,
    the LoRA term runs as extra reduction chunks (tf32 MMAs of u and s·B) instead of in the
    epilogue. One launch after cuBLAS's u (u_by="cublas"), two with the u kernel."""
    plan = plan_forward_large(x, q, A.shape[0], variant, block_m, u_by, fold_lora)
    return run_forward(plan, x, x_lora, A, B, scale, bias)


# --- backward dx on sm_90 (csrc/qlora_dx.cu) -------------------------------------------------

def dx_unsupported_reason(g: torch.Tensor, q: NF4Weight) -> Optional[str]:
    """None when the CUDA dx kernel takes this backward call (g is (M, N)), else why not."""
    if g.dtype not in (torch.float16, torch.bfloat16):
        return f"the CUDA dx kernel takes float16/bfloat16 gradients, got {g.dtype}"
    N, K = q.shape
    if g.shape[0] < 1:
        return f"the CUDA dx kernel needs M >= 1 rows, got M={g.shape[0]}"
    if N % 64 or K % 64:
        return f"the CUDA dx kernel needs N and K multiples of 64, got N={N}, K={K}"
    if q.blocksize < 64 or K % q.blocksize:
        return f"the CUDA dx kernel needs blocksize >= 64 dividing K, got blocksize={q.blocksize}, K={K}"
    if g.device.type == "cuda" and _props_of(device_index(g.device)).major != 9:
        return "the CUDA dx kernel needs an sm_90 GPU (wgmma)"
    return None


DX_VARIANTS = {"auto": 0, "ss": 1, "ws": 2, "ws_epilogue": 3, "rs": 4}


def qlora_dx(g, q: NF4Weight, gB, A, scale: float, add_lora: bool, block_m: int = 0, variant: str = "auto"):
    """dx (M, K) in g's dtype = g·W (+ scale·gB·A when add_lora) for a call dx_unsupported_reason
    accepts. g (M, N) and A (r, K) in g's dtype, gB (M, r) float32 = g·B. block_m: tokens per
    block, 0 (the plan's choice from the shape), 128 or 256. variant: "ws" (the warp-specialized
    kernel: a producer warpgroup copies g by TMA and decodes W, two consumer warpgroups run the
    MMAs; where _C.lora_fold_chunks(r) > 0 the LoRA term folded into the reduction as extra chunks:
    gB's columns and A's rows by TMA, s·gB split into a T part and a residual in registers; one
    launch), "ss" (every thread decodes and issues MMAs; with few tiles the reduction over N is
    split over the blocks of a thread-block cluster and summed in a fixed order, without any
    workspace; the LoRA term added by the epilogue), "ws_epilogue" (the ws kernel with the LoRA
    term added by the epilogue as the SS kernel does: for comparison), "rs" (the decode in the
    consumer warpgroups' registers feeding register-operand MMAs, W never in shared memory, the
    LoRA term folded: needs r % 8 == 0 when add_lora, else a RuntimeError), or "auto" (rs wherever
    the plan does not split, ws there when add_lora and r % 8 != 0; _C.plan_qlora_dx(..., r=r) says which)."""
    return run_dx(plan_dx(g, q, A.shape[0], block_m, variant), g, gB, A, scale, add_lora)


def plan_dx(g, q: NF4Weight, r: int, block_m: int = 0, variant: str = "auto") -> LaunchPlan:
    """qlora_dx's plan for g (M, N) and rank r (block_m and variant as qlora_dx takes them)."""
    if variant not in DX_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(DX_VARIANTS)}, got {variant!r}")
    return LaunchPlan(g, q, r, True, (block_m, DX_VARIANTS[variant]))


def run_dx(plan: LaunchPlan, g, gB, A, scale: float, add_lora: bool):
    """qlora_dx by ``plan``, made for this call's signature."""
    g, A, gB = _aligned(g), _aligned(A), _aligned(gB)
    device = plan.device
    M, N, K, r = plan.dims
    dx = torch.empty((M, K), device=device, dtype=g.dtype)
    with device_guard(device):
        _C.qlora_dx(dx.data_ptr(), g.data_ptr(), gB.data_ptr() if add_lora else 0, A.data_ptr(), plan.dtype_code,
                    *plan.state, M, N, K, r, float(scale), *plan.launch, _stream(device))
    return dx


def lora_u(x, A):
    """(M, r) float32 = x·Aᵀ through the forward's u kernel (x (M, K), A (r, K) of x's dtype,
    float16/bfloat16, K a multiple of 64): the backward's g·B with A = Bᵀ."""
    (M, K), r = x.shape, A.shape[0]
    x, A = _aligned(x), _aligned(A)
    u = torch.empty((M, r), device=x.device, dtype=torch.float32)
    with device_guard(x.device):
        ws_bytes = _C.lora_u_workspace(M, K, r)
        ws = _workspace(ws_bytes, x.device)
        _C.lora_u(u.data_ptr(), x.data_ptr(), A.data_ptr(), 0 if ws is None else ws.data_ptr(), ws_bytes,
                  _DTYPE_CODES[x.dtype], M, K, r, _stream(x.device))
    return u
