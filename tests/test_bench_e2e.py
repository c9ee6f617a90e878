"""The end-to-end benchmark script runs (tiny config, CPU) and writes its summary: it must not
rot between the GPU sessions that run it for real."""

import importlib.util
import json
import os

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")


def test_bench_e2e_smoke(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_e2e.py")
    spec = importlib.util.spec_from_file_location("bench_e2e", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows, curves = mod.main(["--out", str(tmp_path), "--config", "tiny", "--device", "cpu", "--stacks",
                             "nf4lora,lora16,bnb_peft", "--batches", "1", "--seq", "32", "--steps", "1",
                             "--decode-tokens", "4", "--loss-steps", "3", "--loss-seq", "16"])
    assert [r["stack"] for r in rows] == ["nf4lora", "lora16"]  # bnb_peft needs CUDA
    assert rows[0]["weight_pct_of_bf16"] < rows[1]["weight_pct_of_bf16"]
    assert all(len(c) == 3 for c in curves.values())
    summary = (tmp_path / "summary.md").read_text()
    assert "| nf4lora |" in summary and "decode tokens/s" in summary
    first = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert first["meta"]["config"] == "tiny"
