"""GPU paths: bf16 autocast and channels-last by default. Skipped without a CUDA device."""

import sys

import pytest
import torch

from conftest import REPO, SYNTHETIC
from project.cli import CLI

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_gpu_run_uses_bf16_channels_last_and_keeps_the_data_on_the_device(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py"])
    cli = CLI(args=["--config", SYNTHETIC, "--trainer.max_steps", "5", "--trainer.limit_val_batches", "1"], run=False)
    assert cli.trainer.precision == "bf16-mixed"
    cli.trainer.fit(cli.model, cli.datamodule)
    conv = cli.model.network.features[1][0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert cli.datamodule.splits["train"][0].is_cuda
    assert cli.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 5


def test_an_explicit_precision_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py"])
    cli = CLI(args=["--config", SYNTHETIC, "--trainer.precision", "32-true"], run=False)
    assert cli.trainer.precision == "32-true"


def test_the_flagship_optimizer_keeps_the_filters_channels_last_and_normalized(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py"])
    cli = CLI(args=["--config", str(REPO / "configs" / "cifar.yaml"), "--data", "SyntheticDataModule",
                    "--data.batch_size", "64", "--trainer.max_steps", "5", "--trainer.limit_val_batches", "1"],
              run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    conv = cli.model.network.features[1][0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert conv.detach().norm().item() == pytest.approx(len(conv) ** 0.5, rel=0.1)  # MuonSGD's rescaling
