"""The main job runs end to end (short settings) and its checks hold."""

from nf4lora import demo


def test_demo_runs_and_learns():
    result = demo.run(pretrain_steps=40, finetune_steps=30, rank=4, progress=False, log_every=0, bench=False)
    assert max(result["layer_errors"].values()) < 1e-5
    assert result["finetune_loss"][1] < result["finetune_loss"][0]
    assert result["heldout"][1] < result["heldout"][0]
    assert result["reload_identical"]
