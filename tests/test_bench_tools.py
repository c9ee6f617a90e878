"""The benchmark scripts' own logic that runs without a GPU (bench/gemv_time.py: its shape list, its brief lines,
the exit without CUDA, the SM clock where nvidia-smi is missing, --roof's read kernel; bench/model_ops_time.py's exit without CUDA)."""

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


def test_gemv_time_brief_line_names_each_variant():
    g = _load("gemv_time")
    row = {"K": 4096, "N": 14336, "M": 1, "r": 16, "weights": 9, "calls": 9, "path": "cuda", "sm_MHz": 1980,
           "us[V=0]": 14.0, "pct_copy[V=0]": 52.3, "us[V=1]": 13.58, "pct_copy[V=1]": 53.9, "same_bits": True,
           "ratio[V=1/0]": 0.97}
    assert g.brief(row) == "4096 14336 1 [V=0]=14.0 [V=1]=13.58 [V=1/0]=0.97 same_bits=True 1980 MHz"
    plain = {"K": 8, "N": 8, "M": 1, "sm_MHz": None, "us": 5.0, "pct_copy": 1.0}
    assert g.brief(plain) == "8 8 1 5.0 None MHz"
    assert g.brief({"copy_TBps": 4.2}) == '{"copy_TBps": 4.2}'


def test_gemv_time_brief_line_reports_the_read_roof():
    g = _load("gemv_time")
    row = {"K": 4096, "N": 14336, "M": 1, "sm_MHz": 1980, "us": 13.5, "pct_copy": 53.8, "read_us": 9.0,
           "read_pct_copy": 77.0, "pct_of_read": 69.9}
    assert g.brief(row) == "4096 14336 1 13.5 read=9.0us (77.0% of copy; this 69.9% of it) 1980 MHz"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the Triton interpreter on CPU tensors")
def test_gemv_time_read_kernel_sums_every_word():
    # --roof's read kernel: one int32 sum per program of 8192 words (the last program masked), wrapping like int32
    run = _load("gemv_time").read_kernel()
    src = torch.randint(-2**31, 2**31 - 1, (20001,), dtype=torch.int32)
    out = torch.full((3,), 7, dtype=torch.int32)
    run(src, out)
    for i in range(3):
        assert (int(out[i]) - int(src[8192 * i: 8192 * (i + 1)].sum())) % 2**32 == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_gemv_time_needs_cuda():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        _load("gemv_time").main([])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_model_ops_time_needs_cuda():
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        _load("model_ops_time").main([])


def test_gemv_time_clock_is_none_without_nvidia_smi(monkeypatch):
    g = _load("gemv_time")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(g.torch.cuda, "current_device", lambda: 0)
    assert g.sm_clock_mhz() is None


def test_sass_load_use_finds_a_reader_next_to_its_load():
    s = _load("sass_load_use")
    sass = """\t\tFunction : _Z6kernelv
        /*0000*/                   LDG.E.CONSTANT R84, desc[UR10][R84.64] ;   /* 0x0 */
        /*0010*/                   LDG.E.128 R4, desc[UR10][R2.64+0x10] ;   /* 0x0 */
        /*0020*/                   IADD3 R9, R10, UR16, RZ ;   /* 0x0 */
        /*0030*/               @P0 SHF.R.U32.HI R1, RZ, R89, R84 ;   /* 0x0 */
        /*0040*/                   BRA 0x100 ;   /* 0x0 */
        /*0050*/                   FADD R3, R7, R1 ;   /* 0x0 */
\t\tFunction : _Z5otherv
        /*0000*/                   LDG.E R2, desc[UR10][R6.64] ;   /* 0x0 */
        /*0010*/                   IMAD R3, R4, UR2, R5 ;   /* 0x0 */
        /*0020*/                   STS [R8], R2 ;   /* 0x0 */
""".splitlines()
    ks = s.kernels(sass)
    assert list(ks) == ["_Z6kernelv", "_Z5otherv"] and len(ks["_Z6kernelv"]) == 6
    # R84's shift 3 later (a guard predicate does not hide it); R4-R7 is read only past the branch; UR10 / UR16
    # are not R10 / R16.
    found = s.early_reads(ks["_Z6kernelv"])
    assert [(a, d) for a, d, _, _ in found] == [("0000", 3)]
    assert [(a, d) for a, d, _, _ in s.early_reads(ks["_Z5otherv"])] == [("0000", 2)]  # a store reads its data
    assert s.early_reads(ks["_Z5otherv"], within=1) == []
