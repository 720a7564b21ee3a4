"""GPU paths: bf16 autocast and channels-last by default. Skipped without a CUDA device."""

import sys
from functools import partial

import pytest
import torch
from pytorch_lightning import Trainer

from conftest import REPO, SYNTHETIC
from project.cli import CLI
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.networks.convnet import ConvNet

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


def test_the_flagship_optimizer_keeps_the_filters_channels_last_and_normalized(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py"])
    cli = CLI(
        args=[
            "--config",
            str(REPO / "configs" / "cifar.yaml"),
            "--data",
            "SyntheticDataModule",
            "--data.batch_size",
            "64",
            "--trainer.max_steps",
            "5",
            "--trainer.limit_val_batches",
            "1",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    conv = cli.model.network.features[1][0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert conv.detach().norm().item() == pytest.approx(len(conv) ** 0.5, rel=0.1)  # MuonSGD's rescaling


def test_every_precision_fits_the_same_whitening_filters_on_the_gpu():
    filters = {}
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        model = ImageClassifier(network=partial(ConvNet, widths=(8, 8, 8)), optimizer=partial(torch.optim.SGD, lr=0.05))
        torch.manual_seed(0)
        Trainer(
            accelerator="gpu",
            devices=1,
            precision=precision,
            max_steps=2,
            limit_val_batches=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16))
        filters[precision] = model.network.whiten.weight.detach().cpu()
    assert torch.equal(filters["bf16-mixed"], filters["32-true"]) and torch.equal(
        filters["16-mixed"], filters["32-true"]
    )


def test_the_training_forward_and_backward_never_wait_for_the_gpu():
    network = ConvNet(10, widths=(8, 8, 8)).cuda().train()
    images = torch.randn(16, 3, 32, 32, device="cuda")
    network.fit_whitening(images)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = network(images).float().logsumexp(dim=1).mean()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
