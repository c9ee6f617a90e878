"""Shared test helpers: seeds, the float64 oracle, tolerances, and the gpu marker."""

import os

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors (tier 2 of the tests).
# Set before any kernel module is imported: @triton.jit reads it when a kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from nf4lora import dequantize_nf4

# ‖out − ref‖ / ‖ref‖ bounds against a float64 reference (DESIGN.md §4).
REL_TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
# Where Triton's default (tf32 dot) runs, fp32 is held to this instead.
TF32_TOL = 5e-4


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_env(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.delenv("NF4LORA_BACKEND", raising=False)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64; NaN or Inf anywhere gives inf."""
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def qlora_reference_f64(x, q, A, B, scale, bias=None, x_lora=None, grad_y=None):
    """Float64 math of the layer: (y, dx, dx_lora, dA, dB) for 2-D inputs (grads when grad_y given).

    dx includes the LoRA term when x_lora is None; otherwise dx_lora holds it.
    """
    w = dequantize_nf4(q, torch.float32).double()
    xd = x.double()
    xl = xd if x_lora is None else x_lora.double()
    Ad, Bd = A.double(), B.double()
    u = xl @ Ad.t()
    y = xd @ w.t() + scale * u @ Bd.t()
    if bias is not None:
        y = y + bias.double()
    if grad_y is None:
        return y
    g = grad_y.double()
    gB = g @ Bd
    lora = scale * gB @ Ad
    dx = g @ w + (lora if x_lora is None else 0)
    dA = scale * gB.t() @ xl
    dB = scale * g.t() @ u
    return y, dx, (None if x_lora is None else lora), dA, dB


def random_lora(N, K, r, dtype, device="cpu"):
    """A and B with magnitudes of a trained adapter (B not zero), for tests."""
    A = (torch.randn(r, K, device=device) / K**0.5).to(dtype)
    B = (torch.randn(N, r, device=device) / r**0.5).to(dtype)
    return A, B


def poison_next_alloc(numel, dtype, device="cuda"):
    """Fill a block of the caching allocator with NaN and free it: the next same-sized request gets
    it, so outputs a kernel leaves unwritten show as NaN."""
    torch.full((numel,), float("nan"), device=device, dtype=dtype)


def forward_case(M, K, N, r, blocksize, has_bias, dropout, dtype, nested, device="cuda"):
    """Random inputs of one forward test case and what they are judged against: a dict with q, A,
    B, x, x_lora (None without dropout), bias, the float64 reference y and ``plain``, the same math
    in torch at ``dtype`` (W dequantized to dtype: the error budget is twice plain's)."""
    import torch.nn.functional as F

    from nf4lora import quantize_nf4

    q = quantize_nf4(torch.randn(N, K, device=device) * K**-0.5, blocksize, double_quant=nested)
    A, B = random_lora(N, K, r, dtype, device)
    x = torch.randn(M, K, device=device, dtype=dtype)
    xl = torch.randn(M, K, device=device, dtype=dtype) if dropout else None
    bias = torch.randn(N, device=device, dtype=dtype) if has_bias else None
    ref = qlora_reference_f64(x, q, A, B, 0.7, bias, xl)
    xle = x if xl is None else xl
    plain = F.linear(x, dequantize_nf4(q, dtype), bias) + 0.7 * F.linear(F.linear(xle, A), B)
    return dict(q=q, A=A, B=B, x=x, x_lora=xl, bias=bias, scale=0.7, ref=ref, plain=plain)


def forward_cases(cases):
    """The parametrization of a forward kernel's reference test: bf16 and fp16 × plain and nested
    absmax × ``cases`` of (M, K, N, r, blocksize, bias, dropout), with readable ids."""
    def mark(fn):
        fn = pytest.mark.parametrize("case", cases, ids=lambda c: "M{}-K{}-N{}-r{}-bs{}-b{:d}-d{:d}".format(*c))(fn)
        fn = pytest.mark.parametrize("nested", [False, True])(fn)
        return pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])(fn)
    return mark


def run_child(tmp_path, body: str, timeout: float, *, prefix=(), env=None, hang: str = ""):
    """Run ``body`` (Python source; it must print "done" at its end) in a fresh Python process (after
    ``prefix``, a wrapping command), with os.environ updated by ``env``; assert it exited 0 having
    printed "done", and return its stdout. A child that exits 0 with stdout starting "skip:" (what it
    cannot check here) skips the test with that line. A child that runs past ``timeout`` s is killed and
    the test fails with ``hang`` (a kernel that never ends cannot take the test process with it)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(body))
    try:
        res = subprocess.run([*prefix, sys.executable, str(script)], capture_output=True, text=True,
                             env=dict(os.environ, **(env or {})), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{hang or 'the child process'} (killed after {timeout} s)")
    if res.returncode == 0 and res.stdout.startswith("skip:"):
        pytest.skip(res.stdout.strip())
    assert res.returncode == 0 and "done" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def run_memcheck(tmp_path, body: str) -> None:
    """Run ``body`` (as run_child takes it) under compute-sanitizer's memcheck in a fresh process
    without the caching allocator, and assert it is clean. Callers skip when compute-sanitizer is not
    installed."""
    run_child(tmp_path, body, 600, prefix=("compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "3"),
              env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})
