"""MuonSGD: Muon steps for conv filters, torch's SGD for the rest, one schedule for both."""

from functools import partial

import pytest
import torch
from pytorch_lightning import Callback, Trainer
from torch import nn

from conftest import QUIET, REPO, run_in_process, scalars
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.networks.convnet import ConvNet
from project.optim.muon_sgd import MuonSGD, orthogonalize
from project.optim.warmup_cosine import WarmupCosine

SGD_SETTINGS = dict(lr=0.1, momentum=0.85, nesterov=True, weight_decay=1e-2)


def test_parameters_that_are_not_filters_step_exactly_as_torch_sgd():
    torch.manual_seed(0)
    head, bias = torch.randn(10, 16), torch.randn(16)
    ours = [nn.Parameter(head.clone()), nn.Parameter(bias.clone())]
    reference = [nn.Parameter(head.clone()), nn.Parameter(bias.clone())]
    muon_sgd = MuonSGD([{"params": ours[:1]}, {"params": ours[1:], "lr": 3.0}], filter_lr=0.5, **SGD_SETTINGS)
    sgd = torch.optim.SGD([{"params": reference[:1]}, {"params": reference[1:], "lr": 3.0}], **SGD_SETTINGS)
    for _ in range(5):
        gradients = [torch.randn_like(p) for p in ours]
        for parameters, optimizer in ((ours, muon_sgd), (reference, sgd)):
            for p, gradient in zip(parameters, gradients):
                p.grad = gradient.clone()
            optimizer.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, reference))
    assert not torch.equal(ours[0], head)


@pytest.mark.parametrize("shape", [(64, 576), (576, 64), (10, 256)])
def test_orthogonalize_is_close_to_the_polar_factor(shape):
    torch.manual_seed(0)
    gradient = torch.randn(shape) * 1e3
    u, _, vh = torch.linalg.svd(gradient, full_matrices=False)
    polar = u @ vh  # all singular values 1, same singular vectors
    result = orthogonalize(gradient)
    singular_values = torch.linalg.svdvals(result)
    assert singular_values.min() > 0.5 and singular_values.max() < 1.5  # the documented band
    assert torch.nn.functional.cosine_similarity(result.flatten(), polar.flatten(), dim=0) > 0.99


def test_a_filter_step_ignores_the_scale_of_weights_and_gradients_and_moves_a_fixed_distance():
    torch.manual_seed(0)
    filters, gradient = torch.randn(8, 4, 3, 3), torch.randn(8, 4, 3, 3)
    results = []
    for weight_scale, gradient_scale in ((1.0, 1.0), (7.0, 1.0), (1.0, 1e-4)):
        p = nn.Parameter(filters * weight_scale)
        p.grad = gradient * gradient_scale
        MuonSGD([p], filter_lr=0.1, **SGD_SETTINGS).step()
        results.append(p.detach().clone())
    assert torch.allclose(results[0], results[1], atol=1e-5) and torch.allclose(results[0], results[2], atol=1e-5)
    normalized = filters * 8**0.5 / filters.norm()  # norm sqrt(out channels) before the step
    step = (results[0] - normalized).reshape(8, -1)
    assert 0.5 * 0.1 < torch.linalg.matrix_norm(step, ord=2) < 1.5 * 0.1  # filter_lr times about-orthogonal
    assert torch.allclose(step, -0.1 * orthogonalize(gradient.reshape(8, -1)), atol=1e-6)


def test_a_group_may_hold_a_single_tensor_as_in_torch():
    bias, filters = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.randn(4, 2, 3, 3))
    optimizer = MuonSGD([{"params": bias}, {"params": filters}], lr=0.1, filter_lr=0.2)
    assert [(group["params"], group["lr"]) for group in optimizer.param_groups] == [([bias], 0.1), ([filters], 0.2)]


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="MuonSGD filter_lr must be >= 0, got -0.1"):
        MuonSGD([nn.Parameter(torch.zeros(2, 2, 3, 3))], filter_lr=-0.1)


def test_through_the_trainer_each_group_follows_the_schedule_from_its_own_base_lr():
    class Record(Callback):
        def __init__(self):
            self.lrs = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.lrs.append([group["lr"] for group in optimizer.param_groups])

    torch.manual_seed(0)
    model = ImageClassifier(
        network=partial(ConvNet, widths=(8, 8, 8)),
        bias_lr_scale=64.0,
        bias_weight_decay=True,
        optimizer=partial(MuonSGD, filter_lr=0.2, **SGD_SETTINGS),
        scheduler=partial(WarmupCosine, warmup_steps=2, min_lr_ratio=0.1),
    )
    record = Record()
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=6,
        limit_val_batches=0,
        callbacks=[record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16))
    head, filters, biases = trainer.optimizers[0].param_groups
    assert head["params"] == [model.network.head.weight]
    assert all(p.ndim == 4 for p in filters["params"]) and filters["orthogonalize"] and filters["weight_decay"] == 0
    assert all(p.ndim == 1 for p in biases["params"]) and biases["weight_decay"] == pytest.approx(1e-2 / 64)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == [0.1, 0.2, 0.1 * 64]
    assert len(record.lrs) == 6
    for step, lrs in enumerate(record.lrs):
        assert lrs == pytest.approx([base * scheduler.lr_factor(step) for base in scheduler.base_lrs])
    for p in filters["params"]:  # normalized before each step, then moved by about filter_lr * LR factor
        assert p.detach().norm().item() == pytest.approx(len(p) ** 0.5, rel=0.1)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16-mixed: the GPU default, here on the CPU
def test_the_flagship_config_learns_and_logs_every_groups_lr(tmp_path, monkeypatch, precision):
    monkeypatch.chdir(tmp_path)
    run_in_process(
        monkeypatch,
        "fit",
        "--config",
        str(REPO / "configs" / "cifar.yaml"),
        "--data",
        "SyntheticDataModule",
        "--data.batch_size",
        "64",
        "--data.train_size",
        "1536",
        "--trainer.max_epochs",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--model.network.init_args.widths",
        "[16, 32, 32]",
        "--trainer.precision",
        precision,
        "--test_after_fit",
        "false",  # on in cifar.yaml; this test is about training
        *QUIET,
    )
    run = tmp_path / "logs" / "cifar10" / "version_0"  # 1536 images (val_size 0) / 64 = 24 steps per epoch
    filter_lrs = scalars(run, "lr-MuonSGD/pg2")
    assert len(filter_lrs) == 2 * 24 and filter_lrs[0][1] == pytest.approx(0.24)  # cosine from the peak, no warmup
    assert filter_lrs[-1][1] < 0.24 * 0.01
    assert scalars(run, "lr-MuonSGD/pg1")[0][1] == pytest.approx(1.66)
    assert scalars(run, "val/acc")[-1][1] > 0.6  # chance is 0.1
