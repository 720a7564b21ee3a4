"""Mixed precision, torch.compile and channels-last: each a config switch, each tested where it runs.

On a GPU, channels-last weights and bf16 by default: tests/test_gpu.py.
"""

from functools import partial

import pytest
import torch
from pytorch_lightning import Trainer
from torch._dynamo.utils import counters

from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.networks.convnet import ConvNet
from project.optim.warmup_cosine import WarmupCosine

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_model(**kwargs):
    return ImageClassifier(
        network=partial(ConvNet, widths=(8, 8, 8)),
        optimizer=partial(torch.optim.SGD, lr=0.05),
        scheduler=partial(WarmupCosine, warmup_steps=2),
        **kwargs,
    )


def fit(model, **trainer_kwargs):
    torch.manual_seed(0)
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(model, SyntheticDataModule(train_size=128, val_size=32, test_size=32, batch_size=16))
    return trainer


def record_head_dtypes(model):
    dtypes = []
    model.network.head.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    return dtypes


@pytest.mark.parametrize(
    "precision, accelerator, dtype",
    [
        ("bf16-mixed", "cpu", torch.bfloat16),
        pytest.param("bf16-mixed", "gpu", torch.bfloat16, marks=GPU),
        pytest.param("16-mixed", "gpu", torch.float16, marks=GPU),
    ],
)
def test_mixed_precision_computes_in_half_and_keeps_float32_weights(precision, accelerator, dtype):
    model = tiny_model()
    dtypes = record_head_dtypes(model)
    trainer = fit(model, precision=precision, accelerator=accelerator, devices=1)
    assert dtypes and set(dtypes) == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_float32_by_default_on_a_cpu():
    model = tiny_model()
    dtypes = record_head_dtypes(model)
    fit(model, accelerator="cpu")
    assert set(dtypes) == {torch.float32}


def test_compile_switch_compiles_the_network_and_keeps_checkpoint_keys(monkeypatch):
    # Dynamo captures forward and backward graphs as with the default backend, minus the C++ code
    # generation, which takes minutes on a 2-core CPU.
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    model = tiny_model(compile=True)
    plain_keys = set(tiny_model().state_dict())
    torch._dynamo.reset()
    counters.clear()
    trainer = fit(model, accelerator="cpu")
    assert model.network._compiled_call_impl is not None  # nn.Module.compile() ran
    assert counters["stats"]["unique_graphs"] >= 1  # and training ran through captured graphs
    assert set(model.state_dict()) == plain_keys
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_batches_reach_the_network_channels_last():
    data = SyntheticDataModule(train_size=64, val_size=0, test_size=16, batch_size=16)
    data.setup("fit")
    images, _ = data.prepare_batch(next(iter(data.train_dataloader())), augment=True)
    assert images.is_contiguous(memory_format=torch.channels_last)
