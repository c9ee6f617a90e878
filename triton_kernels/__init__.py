"""Triton kernels of nf4lora, installed as ``nf4lora.triton_kernels``.

One op family per file, each with its @triton.jit kernels and launchers: qlora_fwd.py and qlora_bwd.py (the
``triton`` backend of nf4lora.ops' qlora_linear forward and backward), model_ops.py (RMSNorm, the SwiGLU
product and the rotary embedding, for nf4lora.fused). Imported on first use (Triton loads slowly).
"""
