"""The measured dispatch tables (issue 5): written from benchmark results by
bench/make_dispatch_table.py, read by nf4lora.dispatch, honoured by ops' backend choice."""

import importlib.util
import json
import os

import pytest
import torch

from nf4lora import dispatch, ops, quantize_nf4

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _maker():
    spec = importlib.util.spec_from_file_location("make_dispatch_table",
                                                  os.path.join(ROOT, "bench", "make_dispatch_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _results(tmp_path, rows, device="Fake GPU X1"):
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"meta": {"device": device, "git_sha": "abc", "date": "d"}}]
                              + rows) + "\n")
    return str(path)


def _row(M, K, N, backend, t, provider="nf4lora", mode="fwd", r=16):
    return {"provider": provider, "mode": mode, "M": M, "K": K, "N": N, "r": r, "time_us": t,
            "path": f"qlora_linear={backend}"}


def test_table_from_results(tmp_path):
    rows = [
        # shape A: cuda wins at M 1 and 4, triton at 16
        _row(1, 64, 128, "cuda", 10), _row(1, 64, 128, "triton", 20, "nf4lora_triton"),
        _row(4, 64, 128, "cuda", 11), _row(4, 64, 128, "triton", 21, "nf4lora_triton"),
        _row(16, 64, 128, "cuda", 30), _row(16, 64, 128, "triton", 25, "nf4lora_triton"),
        # shape B: cuda everywhere; rank 64, fwd+bwd, other providers and fallbacks do not count
        _row(1, 128, 64, "cuda", 9), _row(1, 128, 64, "triton", 19, "nf4lora_triton"),
        _row(16, 128, 64, "cuda", 12), _row(16, 128, 64, "triton", 13, "nf4lora_triton"),
        _row(16, 128, 64, "triton", 1, "nf4lora_triton", r=64), _row(16, 128, 64, "triton", 1, mode="fwdbwd"),
        _row(16, 128, 64, "triton", 1, "dense_bf16"),
        {**_row(16, 128, 64, "x", 1), "path": "qlora_linear=reference (fallback: K=5 ...)"},
        # shape C: one backend only at M 1024: no choice, no rule
        _row(1024, 64, 128, "triton", 500),
    ]
    table = _maker().make_table([_results(tmp_path, rows)])
    assert table["device"] == "Fake GPU X1" and table["dtype"] == "bfloat16"
    got = [(r["K"], r["N"], r["m_min"], r["m_max"], r["backend"]) for r in table["rules"]]
    assert got == [(64, 128, 1, 4, "cuda"), (64, 128, 5, 16, "triton"), (128, 64, 1, 16, "cuda"),
                   # shapes not measured: M 1 cuda on 2 of 2; M 4 cuda (1 of 1); M 16 tie 1-1,
                   # broken by the total time (cuda 30 + 12 > triton 25 + 13)
                   (None, None, 1, 4, "cuda"), (None, None, 5, 16, "triton")]
    assert table["rules"][1]["times_us"] == {"16": {"cuda": 30, "triton": 25}}


def test_table_needs_a_comparison(tmp_path):
    with pytest.raises(SystemExit, match="more than one backend"):
        _maker().make_table([_results(tmp_path, [_row(1, 64, 128, "cuda", 10)])])


def test_preferred_lookup(monkeypatch):
    rules = [{"op": "qlora_linear", "m_min": 1, "m_max": 4, "K": 64, "N": 128, "backend": "triton"},
             {"op": "qlora_linear", "m_min": 1, "m_max": 16, "K": None, "N": None, "backend": "cuda"}]
    monkeypatch.setattr(dispatch, "tables", lambda: {("Fake GPU X1", "bfloat16"): rules})
    dispatch.preferred.cache_clear()
    try:
        bf16 = torch.bfloat16
        assert dispatch.preferred("qlora_linear", "Fake GPU X1", bf16, 3, 64, 128) == "triton"  # its shape
        assert dispatch.preferred("qlora_linear", "Fake GPU X1", bf16, 8, 64, 128) == "cuda"  # past its M range
        assert dispatch.preferred("qlora_linear", "Fake GPU X1", bf16, 3, 256, 128) == "cuda"  # shape not measured
        assert dispatch.preferred("qlora_linear", "Fake GPU X1", bf16, 17, 64, 128) is None  # M not measured
        assert dispatch.preferred("qlora_linear", "Fake GPU X1", torch.float16, 3, 64, 128) is None  # dtype
        assert dispatch.preferred("qlora_linear", "Other GPU", bf16, 3, 64, 128) is None
        assert dispatch.preferred("qlora_linear_backward", "Fake GPU X1", bf16, 3, 64, 128) is None
    finally:
        dispatch.preferred.cache_clear()


def test_backend_choice_follows_the_table(monkeypatch):
    """A table's pick goes first where it takes the call; elsewhere the default order holds, and
    a pick whose kernel refuses the call (M too large for it) is skipped."""
    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)
    monkeypatch.setitem(ops._IMPLS["qlora_linear"], "cuda", lambda *a: None)
    monkeypatch.setitem(ops._SUPPORTS["qlora_linear"], "cuda",
                        lambda x, *rest: None if x.shape[0] <= 16 else f"M={x.shape[0]} > 16")
    monkeypatch.setattr(ops, "_backend_unavailable_reason", lambda backend, op, device: None)
    rules = [{"op": "qlora_linear", "m_min": 1, "m_max": 16, "K": 64, "N": 24, "backend": "triton"},
             {"op": "qlora_linear", "m_min": 1, "m_max": 64, "K": 128, "N": 24, "backend": "cuda"}]
    monkeypatch.setattr(dispatch, "tables", lambda: {("Fake GPU X1", "bfloat16"): rules})
    monkeypatch.setattr(dispatch, "cuda_device_name", lambda device: "Fake GPU X1")
    dispatch.preferred.cache_clear()
    try:
        dev = torch.device("cuda")
        q64, q128 = quantize_nf4(torch.randn(24, 64), 64), quantize_nf4(torch.randn(24, 128), 64)

        def call(M, q, dtype=torch.bfloat16):
            return (torch.randn(M, q.shape[1], dtype=dtype), None, q, None, None, 1.0, None)

        assert ops.select_backend("qlora_linear", dev, call(8, q64)) == "triton"  # the table's pick
        assert ops.select_backend("qlora_linear", dev, call(8, q128)) == "cuda"
        assert ops.select_backend("qlora_linear", dev, call(32, q128)) == "triton"  # cuda refuses M=32
        assert ops.select_backend("qlora_linear", dev, call(8, q64, torch.float16)) == "cuda"  # no fp16 table
    finally:
        dispatch.preferred.cache_clear()


def test_shipped_tables_come_from_their_sources(tmp_path):
    """Every shipped table is exactly what the maker writes from the results it names (no hand edits)."""
    maker = _maker()
    shipped = sorted(f for f in os.listdir(dispatch.DATA_DIR) if f.startswith("dispatch_"))
    assert shipped, "no dispatch table shipped"
    for name in shipped:
        with open(os.path.join(dispatch.DATA_DIR, name)) as f:
            table = json.load(f)
        again = maker.make_table([os.path.join(ROOT, s["file"]) for s in table["sources"]], table["rank"])
        assert again == table, name
    h200 = dispatch.tables()[("NVIDIA H200", "bfloat16")]
    # Measured (bench/results/h200/cuda_ss, run 3): CUDA fastest on every shape at every M from 1
    # to 16384 (the SS wgmma forward took M = 128 on 8192×28672 from Triton: 267 against 334 µs).
    assert [(r["m_min"], r["m_max"], r["backend"]) for r in h200 if r["K"] is None] == [(1, 16384, "cuda")]
    assert {r["backend"] for r in h200} == {"cuda"}


def test_forced_backend_sets_and_restores_the_environment(monkeypatch):
    from nf4lora.benchmark import forced_backend

    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)
    with forced_backend("reference"):
        assert os.environ["NF4LORA_BACKEND"] == "reference"
    assert "NF4LORA_BACKEND" not in os.environ
    monkeypatch.setenv("NF4LORA_BACKEND", "triton")
    with forced_backend("reference"):
        assert os.environ["NF4LORA_BACKEND"] == "reference"
    assert os.environ["NF4LORA_BACKEND"] == "triton"
    for none in (None, ""):  # the dispatcher's own choice: the environment as it is
        with forced_backend(none):
            assert os.environ["NF4LORA_BACKEND"] == "triton"
        assert os.environ["NF4LORA_BACKEND"] == "triton"
