"""An exponential moving average of the weights, through Lightning's EMAWeightAveraging, switched on by a flag."""

import torch

from conftest import QUIET, SYNTHETIC, run_in_process, scalars

EMA = ["--trainer.callbacks+=EMAWeightAveraging", "--trainer.callbacks.decay", "0.9"]
BRIEF = [
    "--trainer.limit_train_batches",
    "6",
    "--trainer.limit_val_batches",
    "2",
    "--model.scheduler.warmup_steps",
    "1",
]


def test_ema_weights_are_validated_saved_and_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, *BRIEF, *EMA, "--trainer.max_epochs", "1")
    fitted = tmp_path / "logs" / "synthetic" / "version_0"
    checkpoint = torch.load(fitted / "checkpoints" / "last.ckpt", weights_only=True)
    average, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.equal(average["network.head.weight"], current["network.head.weight"])
    # The checkpoint's weights are the average, and they are what validation measured during the fit.
    run_in_process(monkeypatch, "validate", "--config", SYNTHETIC, *QUIET, *BRIEF, "--ckpt_path", "last")
    validated = tmp_path / "logs" / "synthetic" / "version_1"
    assert scalars(validated, "val/acc")[-1][1] == scalars(fitted, "val/acc")[-1][1]
