"""The flagship recipe's pieces change what they claim to change."""

from functools import partial

import pytest
import torch
from pytorch_lightning import Callback, Trainer
from torch import nn

from project.callbacks.lookahead import Lookahead
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.models.tta import logits_with_tta
from project.networks.convnet import ConvNet
from project.optim.warmup_cosine import WarmupCosine


def small_model(**kwargs):
    return ImageClassifier(network=partial(ConvNet, widths=(8, 8, 8)),
                           optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-3),
                           scheduler=partial(WarmupCosine, warmup_steps=2), **kwargs)


def fit(model, callbacks=(), max_epochs=2):
    torch.manual_seed(0)
    trainer = Trainer(max_epochs=max_epochs, limit_train_batches=6, limit_val_batches=1, callbacks=list(callbacks),
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16))
    return trainer


def test_whitening_is_fitted_once_from_the_first_training_batch_and_whitens_it():
    torch.manual_seed(0)
    network = ConvNet(10, widths=(8, 8, 8))
    images = torch.randn(64, 3, 16, 16) @ torch.randn(16, 16)  # correlated neighbouring pixels
    network.eval()(images)
    assert not network.whitening_fitted  # evaluation never fits
    network.train()(images)
    assert network.whitening_fitted
    half = network.whiten.weight.shape[0] // 2
    responses = nn.functional.conv2d(images, network.whiten.weight[:half]).transpose(0, 1).reshape(half, -1)
    covariance = responses @ responses.T / responses.shape[1]
    assert torch.allclose(covariance, torch.eye(half), atol=0.05)  # eigenvalues / (eigenvalues + 5e-4)
    fitted = network.whiten.weight.clone()
    network(images * 3 + 1)
    assert torch.equal(network.whiten.weight, fitted)  # never refitted
    restored = ConvNet(10, widths=(8, 8, 8))
    restored.load_state_dict(network.state_dict())
    restored.train()(images * 3 + 1)
    assert torch.equal(restored.whiten.weight, fitted)  # a checkpoint keeps the fitted filters


def test_tta_averages_mirrored_and_shifted_views():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5))
    images = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        plain = network(images)
        assert torch.equal(logits_with_tta(network, images, 0), plain)
        mirrored = (plain + network(images.flip(-1))) / 2
        assert torch.allclose(logits_with_tta(network, images, 1), mirrored)
        padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
        views = [padded[..., :8, :8], padded[..., 2:, 2:]]
        shifted = sum((network(v) + network(v.flip(-1))) / 2 for v in views) / 2
        assert torch.allclose(logits_with_tta(network, images, 2), (mirrored + shifted) / 2, atol=1e-6)
        assert not torch.allclose(logits_with_tta(network, images, 2), plain)


def test_test_step_uses_tta_and_validation_does_not(monkeypatch):
    levels = []
    import project.models.classifier as classifier

    def spy(network, images, level):
        levels.append(level)
        return network(images)

    monkeypatch.setattr(classifier, "logits_with_tta", spy)
    model = small_model(tta_level=2)
    trainer = fit(model, max_epochs=1)
    levels.clear()
    trainer.validate(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64), verbose=False)
    assert set(levels) == {0}
    levels.clear()
    trainer.test(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64), verbose=False)
    assert set(levels) == {2}


@pytest.mark.parametrize("every_n_steps", [2, 5])  # 12 steps: the last is an update step, or not
def test_lookahead_leaves_the_weights_at_its_average_and_changes_the_result(every_n_steps):
    lookahead = Lookahead(every_n_steps=every_n_steps)
    averaged = small_model()
    fit(averaged, [lookahead])
    weights = {k: v for k, v in averaged.state_dict().items() if v.is_floating_point()}
    assert weights.keys() == lookahead.slow.keys()
    assert all(torch.equal(weights[k], lookahead.slow[k]) for k in weights)  # final sync at the last step
    plain = small_model()
    fit(plain)
    assert not torch.equal(plain.network.head.weight, averaged.network.head.weight)
    assert lookahead.state_dict()["slow"] is lookahead.slow  # travels in the checkpoint


@pytest.mark.parametrize("bias_weight_decay", [False, True])
def test_biases_and_norm_weights_get_the_lr_scale_and_the_same_schedule(bias_weight_decay):
    class Record(Callback):
        def __init__(self):
            self.lrs = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.lrs.append([group["lr"] for group in optimizer.param_groups])

    record = Record()
    trainer = fit(small_model(bias_lr_scale=64.0, bias_weight_decay=bias_weight_decay), [record], max_epochs=1)
    optimizer = trainer.optimizers[0]
    weights, biases = optimizer.param_groups
    assert all(p.ndim >= 2 for p in weights["params"]) and all(p.ndim < 2 for p in biases["params"])
    assert weights["weight_decay"] == 1e-3
    # torch decays by lr * weight_decay per step: with bias decay, as much for the biases as for the weights
    assert biases["weight_decay"] == (pytest.approx(1e-3 / 64) if bias_weight_decay else 0.0)
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.05, 0.05 * 64]
    assert len(record.lrs) == 6 and all(b == pytest.approx(64 * a) for a, b in record.lrs[1:])
