"""The end-to-end benchmark script runs (tiny config, CPU) and writes its summary: it must not
rot between the GPU sessions that run it for real."""

import importlib.util
import json
import os

import pytest
import torch

import nf4lora

pytest.importorskip("transformers")
pytest.importorskip("peft")


def test_bench_e2e_smoke(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_e2e.py")
    spec = importlib.util.spec_from_file_location("bench_e2e", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    common = ["--out", str(tmp_path), "--config", "tiny", "--device", "cpu", "--batches", "1", "--seq", "32",
              "--steps", "1", "--decode-tokens", "4", "--loss-steps", "3", "--loss-seq", "16"]
    # Two invocations into one --out: the second merges its stacks into the first one's results.
    rows1, curves1 = mod.main(common + ["--stacks", "nf4lora", "--profile", "--profile-batch", "2"])
    # nf4lora with the model's norms, SwiGLU products and rotary embeddings fused: its own stack
    try:
        model, _ = mod.make_stack("nf4lora_fused", mod.build_base("tiny", "cpu", torch.float32))
        assert sum(isinstance(m, nf4lora.FusedRMSNorm) for m in model.modules()) == 2 * 2 + 1
        assert all("forward" in m.__dict__ for n, m in model.named_modules() if n.endswith(".mlp"))
    finally:
        assert len(nf4lora.restore_rotary()) == 1  # (a module global: the other stacks and tests run the original)
    rows2, curves2 = mod.main(common + ["--stacks", "lora16,bnb_peft"])
    assert [r["stack"] for r in rows1] == ["nf4lora"] and [r["stack"] for r in rows2] == ["lora16"]  # bnb: CUDA
    nf4, l16 = rows1[0], rows2[0]
    assert nf4["weight_pct_of_bf16"] < l16["weight_pct_of_bf16"]
    # 4.13 bits per weight = 25.8% at real sizes; in these 64-wide layers the code tables (1.1 KB
    # per layer) add about 10 points.
    assert 25 < nf4["target_weight_pct_of_bf16"] < 40 and l16["target_weight_pct_of_bf16"] == 100
    assert len(curves1["nf4lora"]) == 3 and len(curves2["lora16"]) == 3
    summary = (tmp_path / "summary.md").read_text()
    assert "| nf4lora |" in summary and "| lora16 |" in summary and "decode tokens/s" in summary
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert lines[0]["meta"]["config"] == "tiny"
    assert [r["stack"] for r in lines[1:-1]] == ["nf4lora", "lora16"]
    assert set(lines[-1]["loss_curves"]) == {"nf4lora", "lora16"}
    prof = (tmp_path / "profile_nf4lora.txt").read_text()
    assert "Self CPU" in prof and prof.startswith("# one training step (no checkpointing) at micro-batch 2,")
    # --only-decode updates the decode columns of the existing rows and nothing else.
    rows3, _ = mod.main(common + ["--stacks", "nf4lora", "--only-decode", "--profile"])
    assert "Self CPU" in (tmp_path / "profile_decode_nf4lora.txt").read_text()
    lines2 = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    again = lines2[1]
    assert again["stack"] == "nf4lora" and again["decode_tokens_per_s"] == rows3[0]["decode_tokens_per_s"]
    assert again["train_b1_nockpt"] == nf4["train_b1_nockpt"] and len(lines2) == len(lines)
    # The compiled decode (CUDA graphs) is refused off CUDA, with the reason.
    with pytest.raises(SystemExit):
        mod.main(common + ["--stacks", "nf4lora", "--only-decode", "--decode-compiled"])
    # --summarize-only rewrites the summary from the file, keeping its meta line.
    (tmp_path / "summary.md").unlink()
    mod.main(["--out", str(tmp_path), "--summarize-only"])
    assert "| lora16 |" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0]) == lines2[0]
