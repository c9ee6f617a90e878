"""Triton kernels of nf4lora, installed as ``nf4lora.triton_kernels``.

One op family per file, each with its @triton.jit kernels and one launcher that registers
itself with nf4lora.ops. No kernel lives here yet: the fused forward and backward come with
their own issues; until then the ``triton`` backend implements no op and forcing it is an error.
"""
