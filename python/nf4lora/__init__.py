"""nf4lora: fused NF4 + LoRA (QLoRA) kernels for PyTorch.

    import nf4lora
    summary = nf4lora.convert(model, target_modules="all-linear", r=16, alpha=16)
    ...train the adapters...
    nf4lora.save_adapter(model, "adapter/")
"""

from .fused import FusedRMSNorm, fuse_model_ops, restore_rotary, rms_norm, rotary, swiglu
from .layer import QLoRALinear
from .model import (convert, load_adapter, load_quantized_state_dict, merge_and_unload, save_adapter,
                    trainable_parameters)
from .nf4 import NF4Weight, dequantize_nf4, quantize_nf4
from .ops import dequantize, qlora_linear, select_backend

__version__ = "0.1.0"
__all__ = ["QLoRALinear", "NF4Weight", "quantize_nf4", "dequantize_nf4", "dequantize", "qlora_linear",
           "select_backend", "convert", "trainable_parameters", "save_adapter", "load_adapter",
           "load_quantized_state_dict", "merge_and_unload", "fuse_model_ops", "FusedRMSNorm", "rms_norm", "swiglu",
           "rotary", "restore_rotary"]
