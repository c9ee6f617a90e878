"""The NF4 format: quantize, dequantize, and bitsandbytes state-dict import/export.

Layout (bit-compatible with bitsandbytes, see DESIGN.md §2):

- W (N, K) is flattened row-major into n = N·K elements and cut into blocks of
  ``blocksize`` consecutive elements (the last block may be partial).
- ``absmax[b] = max |w|`` over block b (float32). Each element is scaled by the
  float32 reciprocal ``1/absmax[b]`` and rounded to the nearest of 16 NF4 codes
  (ties go to the lower code: a value strictly above a midpoint takes the upper code).
- Two codes per byte: element 2j in the HIGH nibble, element 2j+1 in the LOW nibble;
  an odd n pads the last low nibble with the code of 0.0 (7).
- Double quantization: ``offset = mean(absmax)``; ``absmax - offset`` is quantized blockwise
  (256 per block) to 8-bit indices into bitsandbytes' signed dynamic map; reconstruction is
  ``absmax[j] = code2[q[j]] * absmax2[j // 256] + offset`` in float32.

Everything here is plain PyTorch and runs on any device; it is the format's reference.
"""

from __future__ import annotations

import functools
import json
from typing import Dict, Optional

import torch

# Index = 4-bit code. Float32 values of bitsandbytes' NF4 table.
NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
ALLOWED_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
NESTED_BLOCKSIZE = 256
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_NAME_DTYPES = {v: k for k, v in _DTYPE_NAMES.items()}
# Elements quantized per chunk: bounds the temporaries of quantize/dequantize
# (about 20 bytes per element) so converting a large model does not spike memory.
_CHUNK = 1 << 24


@functools.lru_cache(maxsize=None)
def _nf4_code_cpu() -> torch.Tensor:
    return torch.tensor(NF4_CODE, dtype=torch.float32)


def nf4_code(device=None) -> torch.Tensor:
    """The 16 NF4 code values, float32, on ``device``."""
    return _nf4_code_cpu().to(device)


@functools.lru_cache(maxsize=None)
def _dynamic_map_cpu() -> torch.Tensor:
    # bitsandbytes' signed dynamic map (8 bits, up to 7 exponent bits): for exponent i in
    # 0..6 it holds ±10^(i-6) times the midpoints of a float32 linspace(0.1, 1, 2^i + 1),
    # plus 0 and 1; 256 values, sorted. Midpoints and products are float32 arithmetic, as
    # the format defines them.
    values = [0.0, 1.0]
    for i in range(7):
        edges = torch.linspace(0.1, 1.0, 2**i + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        values += (10.0 ** (i - 6) * mids).tolist() + (-(10.0 ** (i - 6)) * mids).tolist()
    values.sort()
    assert len(values) == 256
    return torch.tensor(values, dtype=torch.float32)


def dynamic_map(device=None) -> torch.Tensor:
    """bitsandbytes' 256-entry signed dynamic map (the double-quant code), float32."""
    return _dynamic_map_cpu().to(device)


def _midpoints(code: torch.Tensor) -> torch.Tensor:
    # Decision thresholds between neighbouring codes, computed in float64 and rounded to float32.
    c = code.double()
    return ((c[:-1] + c[1:]) / 2).float()


def _blockwise_codes(flat: torch.Tensor, blocksize: int, code: torch.Tensor):
    """Blockwise absmax + nearest-code indices of a flat float32 tensor.

    Returns (idx int64 (n_padded,), absmax float32 (n_blocks,)); padding elements are 0.0.
    """
    n = flat.numel()
    n_blocks = -(-n // blocksize)
    pad = n_blocks * blocksize - n
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    blocks = flat.view(n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)
    # Multiply by the float32 reciprocal, as bitsandbytes' kernels do. An all-zero block
    # has absmax 0: its elements are quantized as 0.0.
    inv = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax))
    scaled = blocks * inv[:, None]
    idx = torch.bucketize(scaled.reshape(-1), _midpoints(code).to(flat.device))
    return idx, absmax


def _check_blocksize(blocksize: int, name: str = "blocksize") -> None:
    if not isinstance(blocksize, int) or blocksize not in ALLOWED_BLOCKSIZES:
        raise ValueError(f"{name} must be one of {ALLOWED_BLOCKSIZES} (bitsandbytes' sizes), got {blocksize!r}")


class NF4Weight:
    """A frozen weight of shape (N, K) in NF4, bitsandbytes' layout.

    Attributes:
        packed:   uint8 (ceil(N·K/2),): two codes per byte, even element in the high nibble.
        absmax:   float32 (n_blocks,), or uint8 (n_blocks,) indices when double-quantized.
        quant_map: float32 (16,): the NF4 code table.
        shape:    (N, K).
        blocksize: elements per block (32…4096).
        dtype:    the dtype the weight had before quantization (dequantize's default).
        nested_absmax: float32 (ceil(n_blocks/256),) or None.
        nested_quant_map: float32 (256,) or None.
        nested_offset: float (a float32 value) or None.
    """

    def __init__(self, packed, absmax, shape, blocksize, dtype=torch.float32, quant_map=None,
                 nested_absmax=None, nested_quant_map=None, nested_offset=None, *, check: bool = True):
        self.packed = packed
        self.absmax = absmax
        self.shape = tuple(int(s) for s in shape)
        self.blocksize = blocksize
        self.dtype = dtype
        self.quant_map = nf4_code(packed.device) if quant_map is None else quant_map
        self.nested_absmax = nested_absmax
        self.nested_quant_map = nested_quant_map
        self.nested_offset = None if nested_offset is None else float(nested_offset)
        # Launch state derived from the fields (ops.py's eager path: checks done and launch plans
        # worked out, per call signature); dropped whenever validate_cached sees a field change.
        self.plans: Dict[tuple, object] = {}
        if check:  # check=False only for state already validated (a layer's own buffers)
            self.validate()

    # --- properties -------------------------------------------------------------------
    @property
    def nested(self) -> bool:
        return self.nested_absmax is not None

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_blocks(self) -> int:
        return -(-self.numel // self.blocksize)

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def tensors(self) -> Dict[str, torch.Tensor]:
        out = {"packed": self.packed, "absmax": self.absmax, "quant_map": self.quant_map}
        if self.nested:
            out["nested_absmax"] = self.nested_absmax
            out["nested_quant_map"] = self.nested_quant_map
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of device memory the weight occupies (codes + scales + tables)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def to(self, device) -> "NF4Weight":
        moved = {k: v.to(device) for k, v in self.tensors().items()}
        return NF4Weight(moved["packed"], moved["absmax"], self.shape, self.blocksize, self.dtype,
                         moved["quant_map"], moved.get("nested_absmax"), moved.get("nested_quant_map"),
                         self.nested_offset)

    def __repr__(self) -> str:
        return (f"NF4Weight(shape={self.shape}, blocksize={self.blocksize}, nested={self.nested}, "
                f"dtype={self.dtype}, device={self.device}, nbytes={self.nbytes})")

    # --- checks -----------------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        """What validate() depends on: (the field objects, a flat tuple of their ids, where their
        data lives and how much of it there is, and the scalar fields). The first item keeps the
        objects alive while the fingerprint is held, so their ids cannot be reused."""
        ts = (self.packed, self.absmax, self.quant_map, self.nested_absmax, self.nested_quant_map)
        key = [self.shape, self.blocksize, self.dtype, self.nested_offset]
        for t in ts:
            if isinstance(t, torch.Tensor):
                key += (id(t), t.data_ptr(), t.numel(), t.is_contiguous())
            else:
                key.append(id(t))
        return ts, tuple(key)

    def validate_cached(self) -> None:
        """validate(), skipped when the fields are still the objects that last passed it (same
        storage, size and contiguity, same scalars): for the eager path, which checks every call
        of a layer whose weight rarely changes. Real (not fake or meta) tensors only. A change drops
        the derived ``plans``."""
        fp = self._fingerprint()
        last = self.__dict__.get("_validated")
        if last is not None and last[1] == fp[1]:
            return
        self.validate()
        self.plans.clear()
        self._validated = fp

    def __getstate__(self):
        # copies (deepcopy, pickle) start without the derived state: the plans hold raw pointers
        state = dict(self.__dict__)
        state.pop("_validated", None)
        state["plans"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.setdefault("plans", {})  # (objects pickled before plans existed)

    def validate(self) -> None:
        """Raise ValueError/TypeError naming the field whose size, dtype or device is wrong."""
        if len(self.shape) != 2 or min(self.shape) <= 0:
            raise ValueError(f"shape must be (N, K) with N, K > 0, got {self.shape}")
        _check_blocksize(self.blocksize)
        if self.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype must be one of {_FLOAT_DTYPES}, got {self.dtype}")
        expect = {
            "packed": (torch.uint8, (self.numel + 1) // 2),
            "absmax": (torch.uint8 if self.nested else torch.float32, self.n_blocks),
            "quant_map": (torch.float32, 16),
        }
        if self.nested:
            if self.nested_quant_map is None or self.nested_offset is None:
                raise ValueError("nested_absmax given without nested_quant_map and nested_offset")
            expect["nested_absmax"] = (torch.float32, -(-self.n_blocks // NESTED_BLOCKSIZE))
            expect["nested_quant_map"] = (torch.float32, 256)
        elif self.absmax.dtype == torch.uint8:
            raise ValueError("absmax is uint8 (double-quantized) but nested_absmax is missing")
        device = self.packed.device
        for name, (dtype, numel) in expect.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype:
                raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
            if t.numel() != numel:
                raise ValueError(f"{name} must have {numel} elements for shape {self.shape} and "
                                 f"blocksize {self.blocksize}, got {t.numel()}")
            if t.device != device:
                raise ValueError(f"{name} is on {t.device} but packed is on {device}")
            if not t.is_contiguous():
                raise ValueError(f"{name} must be contiguous")

    # --- bitsandbytes state dicts -----------------------------------------------------
    def to_bnb_state_dict(self, prefix: str = "weight") -> Dict[str, torch.Tensor]:
        """The keys bitsandbytes' Linear4bit writes for this weight (``prefix`` is the key of
        the packed bytes, e.g. ``"model.layers.0.self_attn.q_proj.weight"``)."""
        meta = {"quant_type": "nf4", "blocksize": self.blocksize, "dtype": _DTYPE_NAMES[self.dtype],
                "shape": list(self.shape)}
        # The code tables are shared between weights in memory; each key gets its own copy
        # (80 bytes + 1 KiB) so that safetensors, which refuses shared storage, can save a model.
        sd = {prefix: self.packed.view(-1, 1), f"{prefix}.absmax": self.absmax,
              f"{prefix}.quant_map": self.quant_map.clone()}
        if self.nested:
            sd[f"{prefix}.nested_absmax"] = self.nested_absmax
            sd[f"{prefix}.nested_quant_map"] = self.nested_quant_map.clone()
            meta.update(nested_blocksize=NESTED_BLOCKSIZE, nested_dtype="float32",
                        nested_offset=self.nested_offset)
        blob = json.dumps(meta).encode("utf-8")
        sd[f"{prefix}.quant_state.bitsandbytes__nf4"] = torch.tensor(list(blob), dtype=torch.uint8)
        return sd

    @classmethod
    def from_bnb_state_dict(cls, sd: Dict[str, torch.Tensor], prefix: str = "weight") -> "NF4Weight":
        """Read the weight whose packed bytes are at ``sd[prefix]`` (bitsandbytes' keys).

        Packed storage of another dtype (bitsandbytes' ``quant_storage``) is viewed as uint8.
        """
        qs_key = f"{prefix}.quant_state.bitsandbytes__nf4"
        if qs_key not in sd:
            found = [k for k in sd if k.startswith(f"{prefix}.quant_state.")]
            if found:
                raise ValueError(f"{found[0]}: only NF4 is supported, not {found[0].rsplit('__', 1)[-1]}")
            raise KeyError(f"state dict has no key {qs_key!r}: not a bitsandbytes NF4 weight")
        meta = json.loads(bytes(sd[qs_key].cpu().tolist()).decode("utf-8"))
        if meta.get("quant_type") != "nf4":
            raise ValueError(f"{qs_key}: quant_type must be 'nf4', got {meta.get('quant_type')!r}")
        if meta.get("dtype") not in _NAME_DTYPES:
            raise ValueError(f"{qs_key}: dtype must be one of {sorted(_NAME_DTYPES)}, got {meta.get('dtype')!r}")
        shape = meta.get("shape")
        if not isinstance(shape, (list, tuple)) or len(shape) != 2:
            raise ValueError(f"{qs_key}: shape must be [N, K], got {shape!r}")
        for key in (prefix, f"{prefix}.absmax"):
            if key not in sd:
                raise KeyError(f"state dict has no key {key!r}")
        packed = sd[prefix].contiguous().view(-1)
        if packed.dtype != torch.uint8:
            packed = packed.view(torch.uint8)
        quant_map = sd.get(f"{prefix}.quant_map")
        nested = "nested_offset" in meta
        kwargs = {}
        if nested:
            if meta.get("nested_blocksize") != NESTED_BLOCKSIZE:
                raise ValueError(f"{qs_key}: nested_blocksize must be {NESTED_BLOCKSIZE}, "
                                 f"got {meta.get('nested_blocksize')!r}")
            for name in ("nested_absmax", "nested_quant_map"):
                if f"{prefix}.{name}" not in sd:
                    raise KeyError(f"state dict has no key {prefix}.{name!s} (double-quantized weight)")
                kwargs[name] = sd[f"{prefix}.{name}"].contiguous().view(-1)
            kwargs["nested_offset"] = float(meta["nested_offset"])
        return cls(packed, sd[f"{prefix}.absmax"].contiguous().view(-1), shape, meta.get("blocksize"),
                   _NAME_DTYPES[meta["dtype"]],
                   None if quant_map is None else quant_map.contiguous().view(-1), **kwargs)


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> NF4Weight:
    """Quantize a (N, K) float weight to NF4, bit-exact with bitsandbytes' CUDA quantizer.

    Args:
        w: (N, K) float32/float16/bfloat16 tensor on any device.
        blocksize: elements per absmax block, one of 32…4096 (powers of two).
        double_quant: quantize the absmax to 8 bits as well (bitsandbytes' compress_statistics).
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D (out_features, in_features), got shape {tuple(w.shape)}")
    if w.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"w must be one of {_FLOAT_DTYPES}, got {w.dtype}")
    if w.numel() == 0:
        raise ValueError(f"w must not be empty, got shape {tuple(w.shape)}")
    _check_blocksize(blocksize)
    if not torch.isfinite(w).all():
        raise ValueError("w contains NaN or Inf: NF4 cannot represent it")
    flat = w.detach().reshape(-1)
    code = nf4_code(w.device)
    n = flat.numel()
    step = max(blocksize, _CHUNK // blocksize * blocksize)  # chunks of whole blocks
    packed_parts, absmax_parts = [], []
    for start in range(0, n, step):
        idx, am = _blockwise_codes(flat[start:start + step].float(), blocksize, code)
        if idx.numel() % 2:
            idx = torch.cat([idx, idx.new_full((1,), 7)])
        idx = idx.to(torch.uint8)
        packed_parts.append((idx[0::2] << 4) | idx[1::2])
        absmax_parts.append(am)
    # Only the last chunk can hold padding, so concatenating keeps the flat byte order
    # (every chunk but the last has an even number of elements: step is a multiple of 32).
    packed = torch.cat(packed_parts)[: (n + 1) // 2].contiguous()
    absmax = torch.cat(absmax_parts)
    if not double_quant:
        return NF4Weight(packed, absmax, w.shape, blocksize, w.dtype, code)
    offset = absmax.mean()
    code2 = dynamic_map(w.device)
    q2, absmax2 = _blockwise_codes(absmax - offset, NESTED_BLOCKSIZE, code2)
    q2 = q2[: absmax.numel()].to(torch.uint8).contiguous()
    return NF4Weight(packed, q2, w.shape, blocksize, w.dtype, code, absmax2, code2, offset.item())


def absmax_float(q: NF4Weight) -> torch.Tensor:
    """The per-block absmax as float32 (n_blocks,), decoding the nested state if present."""
    if not q.nested:
        return q.absmax
    j = torch.arange(q.n_blocks, device=q.device) // NESTED_BLOCKSIZE
    # Multiply then add as two float32 roundings, as bitsandbytes does (no fused multiply-add).
    return q.nested_quant_map[q.absmax.long()] * q.nested_absmax[j] + q.nested_offset


def dequantize_nf4(q: NF4Weight, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Dequantize to a dense (N, K) tensor of ``dtype`` (default: the original dtype).

    ``w[i] = quant_map[code[i]] * absmax[i // blocksize]`` in float32, then one rounding to ``dtype``.
    """
    dtype = q.dtype if dtype is None else dtype
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be one of {_FLOAT_DTYPES}, got {dtype}")
    absmax = absmax_float(q)
    n = q.numel
    out = torch.empty(n, dtype=dtype, device=q.device)
    step = _CHUNK  # a multiple of every blocksize
    for start in range(0, n, step):
        stop = min(n, start + step)
        b = q.packed[start // 2:(stop + 1) // 2]
        idx = torch.stack([b >> 4, b & 15], dim=1).reshape(-1)[: stop - start].long()
        blk = absmax[start // q.blocksize:-(-stop // q.blocksize)].repeat_interleave(q.blocksize)
        blk = blk[: stop - start]
        out[start:stop] = (q.quant_map[idx] * blk).to(dtype)
    return out.view(q.shape)


def bits_per_parameter(q: NF4Weight) -> float:
    """Storage cost of the codes and scales (tables excluded), in bits per weight."""
    scale_bytes = q.absmax.numel() * q.absmax.element_size()
    if q.nested:
        scale_bytes += q.nested_absmax.numel() * 4
    return 8.0 * (q.packed.numel() + scale_bytes) / q.numel


__all__ = ["NF4_CODE", "ALLOWED_BLOCKSIZES", "NESTED_BLOCKSIZE", "NF4Weight", "quantize_nf4",
           "dequantize_nf4", "absmax_float", "nf4_code", "dynamic_map", "bits_per_parameter"]
