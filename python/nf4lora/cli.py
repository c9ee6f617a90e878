"""Command line: ``python -m nf4lora demo|info``."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from . import demo

    demo.run(pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps, rank=args.rank,
             alpha=args.alpha, seed=args.seed, device=args.device, bench=not args.no_bench,
             progress=not args.no_progress, log_every=args.log_every)
    return 0


def _info(args) -> int:
    import torch

    from . import _cuda_ext, ops

    print(f"nf4lora {__import__('nf4lora').__version__}, torch {torch.__version__}")
    print(f"CUDA extension built: {_cuda_ext.built()}; usable: {_cuda_ext.unavailable_reason() or 'yes'}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        for op in ("dequantize", "qlora_linear", "qlora_linear_backward"):
            regimes = [b for b in ops.regime_backends(op, dev)]
            extra = "".join(f"; {b} where it takes the call" for b in regimes)
            print(f"  {dev.type:4s} nf4lora::{op:22s} -> {ops.select_backend(op, dev)}{extra}")
    if torch.cuda.is_available():
        from . import dispatch

        name = dispatch.cuda_device_name(torch.device("cuda"))
        found = {dtype: len(rules) for (dev_name, dtype), rules in dispatch.tables().items() if dev_name == name}
        print(f"  measured dispatch table for {name}: "
              + (", ".join(f"{n} rules ({dtype})" for dtype, n in found.items()) if found
                 else f"none (default order {' > '.join(ops._CUDA_PREFERENCE)})"))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nf4lora", description="Fused NF4 + LoRA (QLoRA) kernels for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="check the layer, fine-tune a tiny LM with QLoRA, save/reload the adapter",
                       description="The main job: checks QLoRALinear against float64 math, pre-trains a tiny "
                                   "character-level transformer on a shipped text, converts it to NF4 + LoRA, "
                                   "fine-tunes the adapters on a second text, saves and reloads the adapter, and "
                                   "on a CUDA machine benchmarks one layer shape. Needs no download.")
    d.add_argument("--pretrain-steps", type=int, default=300, help="dense pre-training steps (default 300)")
    d.add_argument("--finetune-steps", type=int, default=200, help="adapter fine-tuning steps (default 200)")
    d.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8)")
    d.add_argument("--alpha", type=float, default=16, help="LoRA alpha; scale = alpha / r (default 16)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    d.add_argument("--log-every", type=int, default=50, help="print the loss every N steps (0: never)")
    d.add_argument("--no-bench", action="store_true", help="skip the GPU microbenchmark")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    d.set_defaults(func=_demo)
    i = sub.add_parser("info", help="show which backend runs each op here")
    i.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
