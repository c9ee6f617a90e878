"""CUDA small-M forward (csrc/qlora_gemv.cu): y = x·Wᵀ + s·(x̃·Aᵀ)·Bᵀ + bias for 1 <= M <= 16.

GPU only (`gpu` marker): float64 reference on real and odd shapes, bf16 and fp16, both absmax
forms, bias, dropout (x̃ ≠ x), every rank r; poisoned outputs; the decode bit for bit through an
identity matrix; CUDA-graph capture; clear errors for calls it does not take; compute-sanitizer.
CPU (CI): the extension builds and the dispatcher rules are tested in test_qlora_ops.py.
"""

import shutil

import pytest
import torch

from nf4lora import _cuda_ext, ops, qlora_linear, quantize_nf4
from conftest import (REL_TOL, forward_case, forward_cases, poison_next_alloc, qlora_reference_f64, random_lora, rel_err,
                      run_child, run_memcheck)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")]
DEV = "cuda"


def _pipelines(M=1):
    """The small-M pipelines this GPU runs for M rows of x (TMA and registers: sm_90 only; registers: M <= 8)."""
    sm90 = torch.cuda.get_device_capability()[0] == 9
    return [name for name in _cuda_ext.GEMV_PIPELINES
            if (name not in ("tma", "rows") or sm90) and (name != "rows" or M <= 8)]


def _forward(monkeypatch, x, q, A, B, scale, bias=None, x_lora=None):
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    poison_next_alloc(x.shape[0] * q.shape[0], x.dtype)
    with torch.no_grad():
        y = qlora_linear(x, q, A, B, scale, bias, x_lora)
    assert ops.last_path["qlora_linear"] == "cuda"
    return y


CASES = [  # M, K, N, r, blocksize, bias, dropout
    (1, 4096, 14336, 16, 64, False, False),
    (16, 14336, 4096, 64, 64, True, False),
    (5, 640, 300, 1, 128, True, True),
    (9, 4096, 4096, 8, 64, False, True),
    (8, 4096, 257, 16, 4096, True, False),
    (3, 8192, 28672, 16, 64, True, False),
    (12, 64, 1000, 3, 64, False, True),
    (2, 4160, 200, 4, 64, True, False),  # 65 chunks: K split 4 ways (TMA: 9 stages of 8, the last short;
    #                                      registers: 2 slices, the last span half)
    (4, 64, 70, 2, 64, True, False),  # one chunk (registers: half a span, 15 of 16 warps past K)
    (1, 12288, 4100, 16, 128, False, True),  # registers: 3 slices, row tiles past N in the last block
    (7, 4160, 200, 4, 64, False, True),  # registers at M > 4 (swapped code words): 2 slices, the last half a span
    (6, 64, 70, 2, 64, True, False),  # registers at M > 4: half a span, 15 of 16 warps past K
    (2, 4352, 300, 8, 64, True, False),  # registers, both spans' scales in one load (K % 256 == 0): 2 slices
    #                                      of 2304 and 2048 k (9 and 8 warps in K)
    (3, 14336, 130, 16, 64, False, True),  # registers: 4 equal slices of 3584 k (14 of 16 warps in K each)
    (1, 11008, 520, 8, 64, True, False),  # registers: 3 slices of 3840, 3840, 3328 k (the last 13 warps)
    (4, 2048, 4100, 16, 128, True, False),  # registers: one slice of 2048 k (8 of 16 warps), per-span scales
    (4, 8192, 28672, 16, 64, False, False),  # registers: 2 slices of 28 tiles would take 177 KiB of shared memory:
    #                                          1 slice of 14 in 2 passes; merged scales, streamed code loads
    (4, 6144, 28672, 16, 128, True, False),  # the same with per-span scales: 2 passes, the second 2048 k (8 warps)
    (6, 8448, 24000, 16, 64, False, True),  # registers at M > 4: 3 slices of 26 tiles (two waves, 221 KiB) -> 1
    #                                         slice of 12 in 3 passes, the last 256 k (one warp)
    (4, 4096, 71000, 16, 128, False, False),  # registers, 34 tiles per block (201 KiB of shared memory; K one slice)
    #                                          with per-span scales: plain code loads (> kRowsStreamMaxSmem)
]


@forward_cases(CASES)
def test_cuda_forward_matches_reference(monkeypatch, dtype, nested, case):
    M, K, N, r = case[:4]
    c = forward_case(*case, dtype, nested)
    q, A, B, x, xl, bias, ref, plain = (c[k] for k in ("q", "A", "B", "x", "x_lora", "bias", "ref", "plain"))
    y = _forward(monkeypatch, x, q, A, B, 0.7, bias, xl)
    assert torch.isfinite(y).all()
    err = rel_err(y, ref)
    assert err < REL_TOL[dtype] and err <= 2 * rel_err(plain, ref) + 1e-6, (err, rel_err(plain, ref))
    # u = x̃·Aᵀ, returned for dB: fp32 sums of exact products. Both tile widths (different split-K
    # plans, so different summation orders) and the other pipelines are as accurate.
    for tiles, pipeline in ((1, None), (2, None), *((None, name) for name in _pipelines(M) if name != "auto")):
        poison_next_alloc(M * N, dtype)
        y2, u = _cuda_ext.qlora_forward_small(x, xl, q, A, B, 0.7, bias, tiles=tiles, pipeline=pipeline)
        assert rel_err(u, (x if xl is None else xl).double() @ A.double().t()) < 1e-5
        assert torch.isfinite(y2).all() and rel_err(y2, ref) <= 2 * rel_err(plain, ref) + 1e-6, (tiles, pipeline)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("K,N", [(2048, 520), (320, 261)])
def test_cuda_decode_is_exact_through_identity(monkeypatch, dtype, nested, K, N):
    # y = I·Wᵀ: each output is 1.0·code (exact) scaled by its absmax in fp32 and rounded once to
    # dtype; the 16 code values are first rounded to dtype (what the mma consumes). 320x261: 1305
    # absmax blocks, so the nested codes' last 4-byte word runs past the last code byte (the
    # kernels' tail path, nested_q_tail) for the last row's last block (the last K columns).
    from nf4lora.nf4 import absmax_float

    M = 16
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64, double_quant=nested)
    A, B = random_lora(N, K, 16, dtype, DEV)
    for cols in (slice(0, M), slice(K - M, K)):  # first and last K slice
        x = torch.zeros(M, K, device=DEV, dtype=dtype)
        x[:, cols] = torch.eye(M, device=DEV, dtype=dtype)
        y = _forward(monkeypatch, x, q, A, B, 0.0)
        codes = torch.stack([q.packed >> 4, q.packed & 15], 1).reshape(-1).long()
        table = q.quant_map.to(dtype).float()
        w = (table[codes] * absmax_float(q).repeat_interleave(64)).to(dtype).view(N, K)
        assert torch.equal(y, w[:, cols].t())
        for tiles in (1, 2):  # both block widths, whichever the plan picks
            y2, _ = _cuda_ext.qlora_forward_small(x, None, q, A, B, 0.0, None, tiles=tiles)
            assert torch.equal(y2, y), tiles
        for pipeline in _pipelines():
            rows = M if pipeline in _pipelines(M) else 8  # (the register pipeline: the first 8 rows)
            y3, _ = _cuda_ext.qlora_forward_small(x[:rows], None, q, A, B, 0.0, None, pipeline=pipeline)
            assert torch.equal(y3, y[:rows]), pipeline


@pytest.mark.parametrize("M", [1, 4, 8, 16])
def test_cuda_forward_is_deterministic(M):
    # Every pipeline gives the same bits on every call (fixed-order reductions, no atomics on sums),
    # K split across blocks included (12288: 3 slices of the register pipeline).
    q = quantize_nf4(torch.randn(4100, 12288, device=DEV), 64, double_quant=True)
    A, B = random_lora(4100, 12288, 16, torch.bfloat16, DEV)
    x = torch.randn(M, 12288, device=DEV, dtype=torch.bfloat16)
    for pipeline in _pipelines(M):
        runs = [_cuda_ext.qlora_forward_small(x, None, q, A, B, 0.5, None, pipeline=pipeline)[0] for _ in range(3)]
        assert all(torch.equal(runs[0], y) for y in runs[1:]), pipeline


@pytest.mark.parametrize("M", [1, 4, 8, 16])
def test_cuda_forward_chained_without_syncs(M, monkeypatch):
    # Back-to-back forwards overlap their launches on sm_90 (the u kernel is the previous grid's programmatic dependent
    # and waits for it before reading x): a chain of layers, each input the previous output, gives the same bits with
    # no sync as with one after every call (a kernel reading its input early would not).
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    K, L = 2048, 8
    qs = [quantize_nf4(torch.randn(K, K, device=DEV) * K**-0.5, 64, double_quant=True) for _ in range(L)]
    lora = [random_lora(K, K, 16, torch.bfloat16, DEV) for _ in range(L)]
    x0 = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)

    def chain(sync):
        h = x0
        with torch.no_grad():
            for i in range(L):
                h = ops.qlora_linear(h, qs[i], lora[i][0], lora[i][1], 2.0)
                if i % 3 == 2:  # now and then a PyTorch kernel between two layers
                    h = h * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(h.dtype)
                if sync:
                    torch.cuda.synchronize()
        return h

    ref = chain(True)
    assert ops.last_path.get("qlora_linear") == "cuda"
    for _ in range(5):
        assert torch.equal(chain(False), ref)


def test_cuda_forward_uses_the_weights_code_table(monkeypatch):
    # The table is read from quant_map (not assumed): a permuted table changes the result accordingly.
    q = quantize_nf4(torch.randn(256, 512, device=DEV), 64)
    q.quant_map = q.quant_map.flip(0).contiguous()
    x = torch.randn(2, 512, device=DEV, dtype=torch.bfloat16)
    A, B = random_lora(256, 512, 4, torch.bfloat16, DEV)
    y = _forward(monkeypatch, x, q, A, B, 1.0)
    assert rel_err(y, qlora_reference_f64(x, q, A, B, 1.0)) < 1e-2


@pytest.mark.parametrize("nested", [False, True])
def test_cuda_forward_with_an_absmax_off_its_alignment(nested):
    # The register pipeline loads four absmax entries at once (blocksize 64, K % 256 == 0) only where
    # absmax is aligned for it (4 bytes of nested codes, 16 of floats); an absmax view starting one
    # element into its buffer takes the per-span loads and gives the same bits.
    import copy

    K, N, M = 4096, 520, 2
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64, double_quant=nested)
    A, B = random_lora(N, K, 16, torch.bfloat16, DEV)
    x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    shifted = copy.copy(q)
    buf = torch.empty(q.absmax.numel() + 1, dtype=q.absmax.dtype, device=DEV)
    buf[1:] = q.absmax
    shifted.absmax = buf[1:]
    assert shifted.absmax.data_ptr() % (4 if nested else 16) != 0
    outs = []
    for w in (q, shifted):
        poison_next_alloc(M * N, torch.bfloat16)
        outs.append(_cuda_ext.qlora_forward_small(x, None, w, A, B, 0.5, None, pipeline="rows")[0])
    assert torch.equal(outs[0], outs[1])
    assert rel_err(outs[0], qlora_reference_f64(x, q, A, B, 0.5)) < 1e-2


def test_cuda_forward_is_the_default_at_small_m_and_graph_capturable():
    q = quantize_nf4(torch.randn(4096, 4096, device=DEV) * 4096**-0.5, 64, double_quant=True)
    A, B = random_lora(4096, 4096, 16, torch.bfloat16, DEV)
    x = torch.randn(4, 4096, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = qlora_linear(x, q, A, B, 2.0)
        assert ops.last_path["qlora_linear"] == "cuda"
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            qlora_linear(x, q, A, B, 2.0)  # warm up outside the capture
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = qlora_linear(x, q, A, B, 2.0)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, qlora_linear(x, q, A, B, 2.0))
        assert not torch.equal(captured, eager)


@pytest.mark.parametrize("M,K,N", [(1, 8192, 1024), (12, 4096, 512), (64, 4096, 1024)])
def test_split_k_counters_are_left_at_zero(M, K, N, monkeypatch):
    """The split-K kernels (the small-M kernels' K slices at M = 1 and 12, the u kernel's at M = 64)
    count their slices in a buffer zeroed once per stream, and the last block of each group resets
    its counter: calls in a row, on a second stream and replayed from a CUDA graph give the bits of
    the launcher's own zeroed workspace (one memset per call), and the buffers are zero after."""
    q = quantize_nf4(torch.randn(N, K, device=DEV), 64)
    A, B = random_lora(N, K, 16, torch.bfloat16, DEV)
    x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    assert _cuda_ext.plan_forward(x, q, 16).counters > 0  # each case splits K
    with torch.no_grad():
        with monkeypatch.context() as m:
            m.setattr(_cuda_ext, "zeroed_counters", lambda *a: (0, 0))  # the launcher's memset instead
            want = qlora_linear(x, q, A, B, 0.5)
        runs = [qlora_linear(x, q, A, B, 0.5) for _ in range(3)]
        assert ops.last_path["qlora_linear"] == "cuda"
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            runs.append(qlora_linear(x, q, A, B, 0.5))
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = qlora_linear(x, q, A, B, 0.5)
        for _ in range(2):
            graph.replay()
            torch.cuda.synchronize()
            runs.append(captured.clone())
    torch.cuda.synchronize()
    for y in runs:
        assert torch.equal(y, want)
    assert _cuda_ext._ZEROED_COUNTERS and all(not buf.any() for buf, _ in _cuda_ext._ZEROED_COUNTERS.values())
    if M > _cuda_ext.GEMV_MAX_M:  # a buffer shorter than the plan's count is refused before any launch
        plan = _cuda_ext.plan_forward(x, q, 16)
        keep, _, _, operands = _cuda_ext._operands(x, None, A, B, None, False)
        ws = torch.empty(plan.ws_bytes, device=DEV, dtype=torch.uint8)
        short = torch.zeros(plan.counters - 1 or 1, device=DEV, dtype=torch.int32)
        with pytest.raises(RuntimeError, match="zeroed_counters must be 4-byte aligned and hold at least"):
            _cuda_ext._C.qlora_mma(*operands, 1, ws.data_ptr(), plan.ws_bytes, 2, *plan.state, *plan.dims, 0.5,
                                   *plan.launch, 0, short.data_ptr(), plan.counters - 1,
                                   torch.cuda.current_stream().cuda_stream)


def test_cuda_forward_refuses_what_it_does_not_take(monkeypatch):
    monkeypatch.setenv("NF4LORA_BACKEND", "cuda")
    q = quantize_nf4(torch.randn(64, 256, device=DEV), 64)
    A, B = random_lora(64, 256, 4, torch.bfloat16, DEV)
    with pytest.raises(RuntimeError, match="M >= 1 rows, got M=0"):
        qlora_linear(torch.randn(0, 256, device=DEV, dtype=torch.bfloat16), q, A, B, 1.0)
    with pytest.raises(RuntimeError, match="float16/bfloat16 x, got torch.float32"):
        qlora_linear(torch.randn(2, 256, device=DEV), q, A.float(), B.float(), 1.0)
    q32 = quantize_nf4(torch.randn(64, 256, device=DEV), 32)
    with pytest.raises(RuntimeError, match="blocksize >= 64, got 32"):
        qlora_linear(torch.randn(2, 256, device=DEV, dtype=torch.bfloat16), q32, A, B, 1.0)
    with pytest.raises(RuntimeError, match="M must be in"):  # the launcher re-checks what it relies on
        _cuda_ext.qlora_forward_small(torch.randn(20, 256, device=DEV, dtype=torch.bfloat16), None, q, A, B, 1.0, None)
    keep, _, _, operands = _cuda_ext._operands(torch.randn(2, 256, device=DEV, dtype=torch.bfloat16), None, A, B,
                                               None, False)
    _, state = _cuda_ext._nf4_args(q)
    with pytest.raises(RuntimeError, match=r"pipeline must be 0 \(auto\), 1 \(cp.async\), 2 \(TMA\) or 3"):
        _cuda_ext._C.qlora_gemv(*operands, 0, 2, *state, 2, 64, 256, 4, 1.0, 1, 2, 4, 0, 0, 0)
    with pytest.raises(RuntimeError, match=r"the register pipeline \(3\) needs splits = ceil\(K / 4096\)"):
        _cuda_ext._C.qlora_gemv(*operands, 0, 2, *state, 2, 64, 256, 4, 1.0, 2, 2, 3, 0, 0, 0)
    with pytest.raises(RuntimeError, match=r"the register pipeline \(3\) needs tiles in \[1, max_tiles\(M\)\]"):
        _cuda_ext._C.qlora_gemv(*operands, 0, 2, *state, 2, 64, 256, 4, 1.0, 1, 65, 3, 0, 0, 0)
    # Fewer slices than ceil(K / 4096) (K walked in passes) only where K % 256 == 0 (4160: a pass would end mid-span)
    q2 = quantize_nf4(torch.randn(64, 4160, device=DEV), 64)
    A2, B2 = random_lora(64, 4160, 4, torch.bfloat16, DEV)
    keep2, _, _, operands2 = _cuda_ext._operands(torch.randn(2, 4160, device=DEV, dtype=torch.bfloat16), None, A2, B2,
                                                 None, False)
    with pytest.raises(RuntimeError, match=r"needs splits = ceil\(K / 4096\), or fewer where K % 256 == 0, .* got 1 "
                                           r"for K = 4160"):
        _cuda_ext._C.qlora_gemv(*operands2, 0, 2, *_cuda_ext._nf4_args(q2)[1], 2, 64, 4160, 4, 1.0, 1, 2, 3, 0, 0, 0)
    with pytest.raises(RuntimeError, match=r"the register pipeline \(3\) takes M <= 8, got M = 9"):
        _cuda_ext.qlora_forward_small(torch.randn(9, 256, device=DEV, dtype=torch.bfloat16), None, q, A, B, 1.0,
                                      None, pipeline="rows")
    if torch.cuda.get_device_capability()[0] == 9:  # K = 256: 4 chunks, one TMA stage, so one K slice
        ws = torch.empty(4096, device=DEV, dtype=torch.uint8)
        with pytest.raises(RuntimeError, match=r"the TMA pipeline needs splits <= K / 512 \(rounded up\)"):
            _cuda_ext._C.qlora_gemv(*operands, ws.data_ptr(), 2, *state, 2, 64, 256, 4, 1.0, 2, 2, 2, 0, 0, 0)


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not found")
def test_cuda_forward_is_memcheck_clean(tmp_path):
    run_memcheck(tmp_path, """
        import torch
        from nf4lora import _cuda_ext, quantize_nf4
        for dtype in (torch.bfloat16, torch.float16):
            for nested in (False, True):
                for M, K, N, r in ((1, 640, 300, 1), (3, 4160, 200, 4), (7, 4160, 100, 2), (9, 4096, 257, 16),
                                   (16, 2048, 512, 64)):
                    q = quantize_nf4(torch.randn(N, K, device="cuda"), 64, double_quant=nested)
                    x = torch.randn(M, K, device="cuda", dtype=dtype)
                    A = torch.randn(r, K, device="cuda", dtype=dtype)
                    B = torch.randn(N, r, device="cuda", dtype=dtype)
                    bias = torch.randn(N, device="cuda", dtype=dtype)
                    sm90 = torch.cuda.get_device_capability()[0] == 9
                    for pipeline in ("cp_async", *(("tma",) if sm90 else ()), *(("rows",) if sm90 and M <= 8 else ())):
                        _cuda_ext.qlora_forward_small(x, x, q, A, B, 0.5, bias, pipeline=pipeline)
        torch.cuda.synchronize()
        print("done")
    """)


@pytest.mark.parametrize("r", [32, 64, 1032, 2056])
@pytest.mark.parametrize("M", [1, 4, 6, 8, 16])
def test_lora_term_staged_or_not(M, r):
    # Where r >= 32 and M·r >= 192 the epilogues (TMA ring, register GEMV) stage u (M x r, rows r + 4 floats apart) and
    # the block's rows of B in shared memory where they fit its free area (stage_lora), and at M = 1 with r > 32 the
    # register GEMV u alone from its own u blocks: at r = 32 M 6-16 (M 1-4 not staged), at r = 64 every M (M = 1: u
    # alone); at r = 1032 and 2056 B's rows, or u too, do not fit the area (u from shared memory and B from global
    # memory, or both from global memory; which one depends on the pipeline's area). Every pipeline, against float64.
    K, N = 2048, 1000
    c = forward_case(M, K, N, r, 64, True, True, torch.bfloat16, True)
    for pipeline in _pipelines(M):
        poison_next_alloc(M * N, torch.bfloat16)
        y, u = _cuda_ext.qlora_forward_small(c["x"], c["x_lora"], c["q"], c["A"], c["B"], 0.7, c["bias"],
                                             pipeline=pipeline)
        err = rel_err(y, c["ref"])
        assert err < REL_TOL[torch.bfloat16] and err <= 2 * rel_err(c["plain"], c["ref"]) + 1e-6, (pipeline, err)


def _rows_forward_by_fuse_u(monkeypatch, M, K, N, r, blocksize=64):
    """The register pipeline's forward with NF4LORA_FUSE_U 1 (the launcher's choice) and 0 (lora_u_kernel), x̃ != x:
    ({fuse: (y, u)}, {fuse: the CUDA kernels' names}, u's and y's float64 references); y poisoned before each."""
    q = quantize_nf4(torch.randn(N, K, device=DEV) * K**-0.5, blocksize, double_quant=True)
    A, B = random_lora(N, K, r, torch.bfloat16, DEV)
    x = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    xl = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)  # a dropout's x̃: u reads it, the GEMV x
    bias = torch.randn(N, device=DEV, dtype=torch.bfloat16)
    outs, kernels = {}, {}
    for fuse in ("1", "0"):
        monkeypatch.setenv("NF4LORA_FUSE_U", fuse)
        poison_next_alloc(M * N, torch.bfloat16)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            outs[fuse] = _cuda_ext.qlora_forward_small(x, xl, q, A, B, 0.7, bias, pipeline="rows")
            torch.cuda.synchronize()
        kernels[fuse] = [e.name for e in prof.events() if "kernel" in e.name]
    u_ref = xl.double() @ A.double().t()
    y_ref = qlora_reference_f64(x, q, A, B, 0.7, bias, xl)
    for fuse, (y, u) in outs.items():
        assert rel_err(u, u_ref) < 1e-5, fuse
        assert rel_err(y, y_ref) < REL_TOL[torch.bfloat16], fuse  # (inf where an output was left NaN)
    return outs, kernels, y_ref


@pytest.mark.parametrize("M,K,N,blocksize", [(1, 8192, 2048, 64), (2, 4096, 1000, 64), (2, 4096, 1000, 128),
                                             (1, 14336, 520, 64)])
def test_u_beside_the_register_gemv_at_rank_64(monkeypatch, M, K, N, blocksize):
    # With r >= 64 and M·r <= SMs, where u is not computed in the GEMV's own grid (M = 2; at M = 1 where a u block's
    # work would pass a quarter of a row block's: 8192x2048, or where no SM is spare: 14336x520), u runs as
    # lora_u_small_kernel's 128-thread blocks beside the register GEMV's blocks (capped at 120 registers);
    # NF4LORA_FUSE_U=0 keeps lora_u_kernel. Both against float64 (y) and u to fp32 summation order. (blocksize 128:
    # the per-span scale loads; 14336: K split in slices.)
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the register pipeline runs on sm_90 only")
    if M * 64 > torch.cuda.get_device_properties(0).multi_processor_count:
        pytest.skip("one u block per SM needs M·r SMs")
    outs, kernels, _ = _rows_forward_by_fuse_u(monkeypatch, M, K, N, 64, blocksize)
    assert any("lora_u_small_kernel" in k for k in kernels["1"]), kernels["1"]
    assert any("qlora_gemv_rows_co_kernel" in k for k in kernels["1"]), kernels["1"]
    assert not any("lora_u_small_kernel" in k for k in kernels["0"]), kernels["0"]
    assert rel_err(outs["1"][0], outs["0"][0]) < 1e-3  # (u by another summation order; the GEMV's code the same)


@pytest.mark.parametrize("M,K,N", [(1, 2048, 4096), (1, 4096, 1000), (2, 4096, 1000), (1, 8192, 2048)])
def test_register_gemv_computes_u_in_its_own_grid(monkeypatch, M, K, N):
    # At M = 1, where the register GEMV's blocks and u's fit one wave (one block per SM), u = x̃·Aᵀ is computed by
    # extra blocks of the GEMV's grid (one launch a forward, no lora_u_kernel); NF4LORA_FUSE_U=0 keeps the u kernel,
    # as M = 2 always does. Both within the reference's tolerance, u to fp32 summation order. (8192: two K slices,
    # the u blocks spread over both.)
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the register pipeline runs on sm_90 only")
    outs, kernels, y_ref = _rows_forward_by_fuse_u(monkeypatch, M, K, N, 16)
    assert any("lora_u_kernel" in k for k in kernels["1"]) == (M > 1), kernels["1"]
    assert any("lora_u_kernel" in k for k in kernels["0"]), kernels["0"]
    # (the LoRA term's u differs by fp32 summation order only)
    assert rel_err(outs["1"][0], y_ref) <= 2 * rel_err(outs["0"][0], y_ref) + 1e-6
    assert rel_err(outs["1"][0], outs["0"][0]) < 1e-3


def test_register_gemv_with_u_in_its_grid_needs_no_whole_wave(tmp_path):
    # The fused grid's row blocks wait for its u blocks (wait_for_u), so the u blocks come first in the grid's linear
    # order: a row block then waits only for blocks started before it. Here the grid, sized for the device's SMs, runs
    # in a green context of 16 of them (as under an SM-limited context, or beside another stream's kernels): it must
    # finish, with the bits it gives on the whole GPU (with the u blocks last, the first resident blocks are row blocks
    # waiting for u blocks that cannot start, and the process hangs). In a child process, killed if it hangs.
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the register pipeline runs on sm_90 only")
    try:
        from torch.cuda import green_contexts
    except ImportError:
        pytest.skip("this torch has no torch.cuda.green_contexts")
    del green_contexts
    run_child(tmp_path, """
        import torch
        from torch.cuda.green_contexts import GreenContext
        from torch.profiler import ProfilerActivity, profile
        from nf4lora import _cuda_ext, quantize_nf4
        torch.manual_seed(0)
        K, N, r = 4096, 14336, 16
        q = quantize_nf4(torch.randn(N, K, device="cuda") * K**-0.5, 64, double_quant=True)
        A = torch.randn(r, K, device="cuda", dtype=torch.bfloat16) * K**-0.5
        B = torch.randn(N, r, device="cuda", dtype=torch.bfloat16) * 0.1
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            want = _cuda_ext.qlora_forward_small(x, None, q, A, B, 0.5, None, pipeline="rows")[0]
            torch.cuda.synchronize()
        names = [e.name for e in prof.events() if "kernel" in e.name]
        assert not any("lora_u_kernel" in n for n in names), names  # (the fused grid)
        try:
            gc = GreenContext.create(num_sms=16, device_id=0)
        except Exception as e:  # (a driver without green contexts)
            print("skip:", type(e).__name__, e)
            raise SystemExit(0)
        if hasattr(gc, "Stream"):
            stream = gc.Stream()
            enter, leave = (lambda: None), (lambda: None)
        else:
            stream, enter, leave = None, gc.set_context, gc.pop_context
        enter()
        with torch.cuda.stream(stream or torch.cuda.current_stream()):
            ys = [_cuda_ext.qlora_forward_small(x, None, q, A, B, 0.5, None, pipeline="rows")[0] for _ in range(20)]
        torch.cuda.synchronize()
        leave()
        assert all(torch.equal(y, want) for y in ys)
        print("done")
    """, 60, hang="the fused register GEMV hung in a green context of 16 SMs")


def test_graphs_captured_on_one_stream_replay_at_once(tmp_path):
    # Two CUDA graphs captured on torch.cuda.graph's default capture stream, each a chain of forwards with split-K
    # counters (M = 1 on 14336x4096: 4 K slices) and the fused u's wait (M = 1), replayed at once on two streams:
    # each capture has its own counters (zeroed_counters by capture id), so every replay gives the bits of a
    # replay alone. (With one buffer per stream they shared them: sums and u counts of one graph's blocks mixed into
    # the other's, wrong results or a wait that never ends.) In a child process, killed if it hangs.
    run_child(tmp_path, """
        import torch
        from nf4lora import quantize_nf4, qlora_linear
        torch.manual_seed(0)
        K, N, r, L = 14336, 4096, 16, 6
        qs = [quantize_nf4(torch.randn(N, K, device="cuda") * K**-0.5, 64, double_quant=True) for _ in range(2)]
        A = torch.randn(r, K, device="cuda", dtype=torch.bfloat16) * K**-0.5
        B = torch.randn(N, r, device="cuda", dtype=torch.bfloat16) * 0.1
        xs = [torch.randn(1, K, device="cuda", dtype=torch.bfloat16) for _ in range(2)]

        def chain(i):
            with torch.no_grad():
                return [qlora_linear(xs[i], qs[i], A, B, 0.5 + i) for _ in range(L)]

        for i in range(2):
            chain(i)  # (plans and buffers made outside the capture)
        torch.cuda.synchronize()
        graphs, outs = [torch.cuda.CUDAGraph() for _ in range(2)], [None, None]
        for i in range(2):
            with torch.cuda.graph(graphs[i]):
                outs[i] = chain(i)
        want = []
        for i in range(2):
            graphs[i].replay()
            torch.cuda.synchronize()
            want.append([y.clone() for y in outs[i]])
        streams = [torch.cuda.Stream() for _ in range(2)]
        for _ in range(200):
            for i in range(2):
                streams[i].wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(streams[i]):
                    graphs[i].replay()
            for s in streams:
                torch.cuda.current_stream().wait_stream(s)
            torch.cuda.synchronize()
            for i in range(2):
                assert all(torch.equal(y, w) for y, w in zip(outs[i], want[i])), i
        print("done")
    """, 120, env={"NF4LORA_BACKEND": "cuda"}, hang="two graphs replayed at once hung")
