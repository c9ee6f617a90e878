"""The benchmark scripts' own logic that runs without a GPU (bench/gemv_time.py: its shape list, the exit
without CUDA, the SM clock where nvidia-smi is missing)."""

import importlib.util
import os

import pytest
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gemv_time_spec_keeps_every_m_of_a_shape_named_twice():
    g = _load("gemv_time")
    assert g.parse_spec("8192,28672:4;4096,4096:1;8192,28672:1/2/4") == {(8192, 28672): (4, 1, 2), (4096, 4096): (1,)}
    assert list(g.parse_spec(g.DEFAULT_SPEC))[0] == (4096, 4096)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_gemv_time_needs_cuda():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        _load("gemv_time").main([])


def test_gemv_time_clock_is_none_without_nvidia_smi(monkeypatch):
    g = _load("gemv_time")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(g.torch.cuda, "current_device", lambda: 0)
    assert g.sm_clock_mhz() is None
