"""The csrc/ extension: built wherever nvcc is, imports without a GPU, never crashes the process."""

import os
import shutil

import pytest
import torch

from nf4lora import _cuda_ext, ops


@pytest.mark.skipif(shutil.which("nvcc") is None or os.environ.get("NF4LORA_SKIP_CUDA_BUILD") == "1",
                    reason="nvcc not on this machine: the extension is not built")
def test_extension_is_built_where_nvcc_is():
    assert _cuda_ext.built(), _cuda_ext._IMPORT_ERROR
    assert "dequantize" in _cuda_ext._C.dequantize_nf4.__doc__.lower()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_no_gpu_gives_a_clear_reason_and_reference_backend():
    reason = _cuda_ext.unavailable_reason()
    assert reason is not None and ("CUDA not available" in reason or "not built" in reason)
    if _cuda_ext.built():
        count, err = _cuda_ext._C.cuda_device_count()  # must return, not crash
        assert count == 0 and err
    assert ops.select_backend("dequantize", torch.device("cpu")) == "reference"


@pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")
def test_capture_id_is_zero_outside_a_capture():
    # zeroed_counters keys its buffers by it; with no GPU (or no capture) it returns 0, not an error.
    assert _cuda_ext._C.capture_id(0) == 0
    if torch.cuda.is_available():
        assert _cuda_ext._C.capture_id(torch.cuda.current_stream().cuda_stream) == 0
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.graph(graph, stream=stream):
            inside = _cuda_ext._C.capture_id(stream.cuda_stream)
            torch.ones(1, device="cuda").add_(1)
        assert inside != 0 and _cuda_ext._C.capture_id(stream.cuda_stream) == 0


@pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")
def test_launchers_refuse_bad_calls_before_touching_memory():
    # Plans and launchers check their arguments first and report what is wrong (no GPU needed:
    # no pointer below is ever dereferenced).
    C = _cuda_ext._C
    with pytest.raises(RuntimeError, match="N, K positive multiples of 64"):
        C.plan_qlora_dx(5, 100, 256, 0)
    with pytest.raises(RuntimeError, match="block_m must be 0 .choose., 128 or 256, got 64"):
        C.plan_qlora_dx(5, 4096, 256, 64)
    with pytest.raises(RuntimeError, match="rs dx kernel folds the LoRA term .*needs r % 8 == 0, got r = 13"):
        C.plan_qlora_dx(2048, 14336, 4096, 0, 4, r=13)
    with pytest.raises(RuntimeError, match="variant must be 0"):
        C.plan_qlora_mma(5, 256, 256, 4, 9, 0)
    with pytest.raises(RuntimeError,
                       match=r"variant must be 0 \(auto\), 1 \(ss\), 2 \(ws\), 3 \(ws, LoRA in the epilogue\) or 4 "
                             r"\(rs\), got 5"):
        C.plan_qlora_dx(5, 4096, 256, 0, 5)
    # dx, g, gB, A, dtype, packed, absmax, quant_map, nested_absmax, nested_quant_map,
    # nested_offset, blocksize, M, N, K, r, scale, block_m, variant, stream
    dx_args = [16, 16, 0, 16, 2, 16, 16, 16, 0, 0, 0.0, 64, 5, 4096, 256, 4, 1.0, 0, 0, 0]
    with pytest.raises(RuntimeError, match="variant must be 0"):
        C.qlora_dx(*dx_args[:18], -1, 0)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        C.qlora_dx(8, *dx_args[1:])
    with pytest.raises(RuntimeError, match="blocksize must be a power of two"):
        C.qlora_dx(*dx_args[:11], 96, *dx_args[12:])
    assert [C.lora_fold_chunks(r) for r in (1, 8, 16, 30, 32, 40, 64, 65, 80)] == [0, 1, 1, 0, 1, 2, 2, 0, 3]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs an sm_90 GPU"):
            C.qlora_dx(*dx_args)


@pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")
def test_large_m_forward_refuses_bad_u_by_before_any_work(monkeypatch):
    # How u = x̃·Aᵀ is computed is checked before any tensor is touched (CPU tensors here).
    from nf4lora import quantize_nf4

    q = quantize_nf4(torch.randn(64, 64), 64)
    x, A, B = torch.randn(32, 64), torch.randn(4, 64), torch.randn(64, 4)
    with pytest.raises(ValueError, match="u_by must be 'cublas' or 'kernel', got 'cuda'"):
        _cuda_ext.qlora_forward_large(x, None, q, A, B, 1.0, None, u_by="cuda")
    monkeypatch.setattr(_cuda_ext, "MM_OUT_DTYPE", False)  # as under torch < 2.8
    with pytest.raises(ValueError, match=r"u_by='cublas' needs torch.mm with out_dtype \(torch 2.8\+\)"):
        _cuda_ext.qlora_forward_large(x, None, q, A, B, 1.0, None, u_by="cublas")


@pytest.mark.skipif(not _cuda_ext.built(), reason="the CUDA extension is not built")
def test_small_m_plan_splits_k_only_for_narrow_w():
    # plan_qlora_gemv (host code, no GPU needed): blocks own 16 (tiles=1) or 32 rows and all of K;
    # K is split over blocks only while the column blocks leave the SMs fewer than two blocks each,
    # into at most 8 slices of at least two 64-wide chunks per warp (16 per slice).
    plan = _cuda_ext._C.plan_qlora_gemv
    assert plan(1, 28672, 8192, 132, 2) == (1, 2, 0, 0)  # 896 column blocks: no split, no workspace
    assert plan(1, 14336, 4096, 132, 2) == (1, 2, 0, 0)  # 448
    # 4096 rows: 128 column blocks -> ceil(264 / 128) = 3 slices; workspace = partials + counters (one
    # per column block)
    assert plan(16, 4096, 14336, 132, 2) == (3, 2, 4 * 3 * 16 * 4096 + 4 * 128, 128)
    assert plan(1, 4096, 4096, 132, 1) == (2, 1, 4 * 2 * 1 * 4096 + 4 * 256, 256)  # 256 blocks of 16 rows
    assert plan(1, 1024, 4096, 132, 2)[0] == 4  # 32 blocks want 9 slices; 64 chunks allow 4
    assert plan(1, 257, 1 << 20, 132, 2)[0] == 8  # never more than 8
    assert plan(3, 1000, 64, 132, 2)[:2] == (1, 2)  # one chunk: nothing to split
    assert plan(1, 4096, 4096, 132, 7)[1] == 2  # a tile count it does not take falls back to 2
    # The TMA pipeline's plan counts its resident blocks per SM (4 at M = 1, 3 at M = 8 where shared
    # memory holds 3, 2 at M > 8): as many slices as one wave of them takes, floor(blocks · SMs / col_blocks).
    assert plan(1, 28672, 8192, 132, 2, 2) == (1, 2, 0, 0)  # 896 column blocks: more than a wave
    assert plan(1, 4096, 4096, 132, 2, 2) == (4, 2, 4 * 4 * 1 * 4096 + 4 * 128, 128)  # 528 // 128
    assert plan(8, 4096, 4096, 132, 2, 2)[0] == 3  # 396 // 128
    assert plan(16, 4096, 14336, 132, 2, 2) == (2, 2, 4 * 2 * 16 * 4096 + 4 * 128, 128)  # 264 // 128
    assert plan(1, 1024, 4096, 132, 2, 2)[0] == 4  # 32 blocks want 16 slices; 64 chunks allow 4
    # tiles 0, the planner's choice: 16-row blocks for the TMA kernel at M > 8 where 32-row ones would split K
    # into slices of at most 3072 k (bench/results/h200/s25 run 7), else 32 rows.
    assert plan(16, 4096, 4096, 132, 0, 2) == (1, 1, 0, 0)  # 32 rows: 2 slices of 2048; 16 rows: 256 blocks, no split
    assert plan(16, 1024, 4096, 132, 0, 2) == (4, 1, 4 * 4 * 16 * 1024 + 4 * 64, 64)  # 32 rows: 4 slices of 1024
    assert plan(12, 4096, 6144, 132, 0, 2)[1] == 1  # 2 slices of 3072
    assert plan(16, 4096, 8192, 132, 0, 2)[:2] == (2, 2)  # 2 slices of 4096: 32 rows
    assert plan(16, 4096, 14336, 132, 0, 2)[:2] == (2, 2)
    assert plan(16, 6144, 4096, 132, 0, 2)[:2] == (1, 2)  # 32-row blocks need no split
    assert plan(8, 4096, 4096, 132, 0, 2)[1] == 2  # M <= 8: 32 rows
    assert plan(16, 4096, 4096, 132, 0, 1)[1] == 2  # the cp.async pipeline: 32 rows
    # The register pipeline (3): its counters are the split-K ones (one per row block, where K is split) and two more
    # for u computed in its own grid (launch_typed's fused u), where K is split in the workspace too (8 bytes after the
    # split-K ones). K in ceil(K / 4096) slices (16 warps of two 128-wide spans;
    # equal in whole 256-k spans, GemvRows::slice_k: 14336 in 4 of 3584), the rows in
    # blocks of whole 16-row tiles (at most 64, fewer above M = 2: the warps' row sums fill shared
    # memory), as many blocks as one wave of one per SM takes. Where those blocks' shared memory passes
    # kRowsStreamMaxSmem (168 KiB) and K % 256 == 0: the fewest slices whose blocks use the SMs as well (blocks over
    # the SM slots of the waves they take), walked in passes of 4096 k.
    assert plan(1, 28672, 8192, 132, 2, 3) == (2, 28, 4 * 2 * 1 * 28672 + 4 * 64 + 8, 64 + 2)  # 1792 tiles, 66 blocks wanted
    assert plan(4, 4096, 14336, 132, 2, 3) == (4, 8, 4 * 4 * 4 * 4096 + 4 * 32 + 8, 32 + 2)  # 4 slices; 33 blocks wanted
    assert plan(4, 28672, 8192, 132, 2, 3) == (1, 14, 0, 2)  # 2 slices of 28 tiles: 177 KiB; 1 of 14 (2 passes)
    assert plan(4, 8192, 28672, 132, 2, 3) == (1, 4, 0, 2)  # 7 slices of 29 tiles: 182 KiB; 1 of 4 (7 passes)
    assert plan(4, 28000, 8192, 132, 2, 3)[:2] == (2, 27)  # one slice's 125 blocks use fewer SMs than two slices' 130
    assert plan(4, 28672, 8320, 132, 2, 3)[0] == 3  # K % 256 != 0: no passes
    assert plan(1, 4096, 4160, 132, 2, 3)[0] == 2
    assert plan(1, 1 << 20, 64, 132, 2, 3) == (1, 64, 0, 2)  # 64 tiles at most: more than a wave
    assert plan(4, 1 << 20, 64, 132, 2, 3)[1] == 40  # M = 4: 40 (16 warps × 640 rows × 4 × 4 bytes)
    assert plan(8, 1 << 20, 64, 132, 2, 3)[1] == 20  # M = 8: 20
    # 0 (auto) is the launcher's choice for the current device: on sm_90 registers up to M = 4 (M = 8 where
    # K <= 4096), TMA above.
    sm90 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
    assert plan(1, 28672, 8192, 132, 2, 0) == plan(1, 28672, 8192, 132, 2, 3 if sm90 else 1)
    # M 5-8: registers where K is one slice (K <= 4096) or walked in passes (8192: 2 slices of 20 tiles would take
    # two waves and 229 KiB a block; 1 of 14 in passes), TMA on longer K split over blocks
    assert plan(8, 28672, 8192, 132, 2, 3) == (1, 14, 0, 2)
    assert plan(8, 28672, 8192, 132, 2, 0) == plan(8, 28672, 8192, 132, 2, 3 if sm90 else 1)
    assert plan(8, 4096, 8192, 132, 2, 0) == plan(8, 4096, 8192, 132, 2, 2 if sm90 else 1)  # 2 slices of 4 tiles
    assert plan(8, 14336, 4096, 132, 2, 0) == plan(8, 14336, 4096, 132, 2, 3 if sm90 else 1)
    assert plan(5, 4096, 4160, 132, 2, 0) == plan(5, 4096, 4160, 132, 2, 2 if sm90 else 1)
    assert plan(9, 4096, 4096, 132, 2, 0) == plan(9, 4096, 4096, 132, 2, 2 if sm90 else 1)
