"""s33 run 5: why nf4lora_fused decodes slower than nf4lora (e2e: 16.8 vs 21.5 tokens/s) while each fused op costs
less host time per call than the PyTorch chain (model_ops_time --host). An 8-layer Llama-3-8B-shaped model, both
stacks from one base, eager greedy decode of 64 tokens at batch 1 alternated plain / fused three times after a full
warm-up each, then cProfile of one 32-token generate() per stack (top functions by own time)."""
import cProfile
import io
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, "bench")
import bench_e2e as e  # noqa: E402
import nf4lora  # noqa: E402

e.CONFIGS["l8"] = dict(e.CONFIGS["llama3-8b"], num_hidden_layers=8)
base = e.build_base("l8", "cuda", torch.bfloat16)
plain, _ = e.make_stack("nf4lora", base)
nf4lora.restore_rotary()
fused, _ = e.make_stack("nf4lora_fused", base)
del base
prompt = torch.randint(0, 1000, (1, 16), device="cuda")
kw = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)


def use(name):
    nf4lora.restore_rotary()
    if name == "fused":
        nf4lora.fuse_model_ops(fused)  # norms / MLPs already fused: re-patches the rotary function only
    return plain if name == "plain" else fused


with torch.no_grad():
    for name in ("plain", "fused"):
        m = use(name).eval()
        m.generate(input_ids=prompt, **kw)
    for rnd in range(3):
        for name in ("plain", "fused"):
            m = use(name)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            m.generate(input_ids=prompt, **kw)
            torch.cuda.synchronize()
            print(f"round {rnd} {name}: {64 / (time.perf_counter() - t0):.1f} tokens/s, last paths {dict(nf4lora.fused.last_path)}", flush=True)
    for name in ("plain", "fused"):
        m = use(name)
        pr = cProfile.Profile()
        pr.enable()
        m.generate(input_ids=prompt, **dict(kw, max_new_tokens=32, min_new_tokens=32))
        torch.cuda.synchronize()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
        with open(os.path.join(sys.argv[1], f"cprofile_{name}.txt"), "w") as f:
            f.write(s.getvalue())
        print(name, "cProfile total", f"{pstats.Stats(pr).total_tt:.2f} s", flush=True)
