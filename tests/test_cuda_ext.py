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
