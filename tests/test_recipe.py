"""The flagship recipe's pieces change what they claim to change."""

from functools import partial

import pytest
import torch
from pytorch_lightning import Callback, LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from project.callbacks.lookahead import Lookahead
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.models.tta import logits_with_tta
from project.networks.convnet import ConvNet
from project.optim.warmup_cosine import WarmupCosine


def small_model(**kwargs):
    return ImageClassifier(
        network=partial(ConvNet, widths=(8, 8, 8)),
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-3),
        scheduler=partial(WarmupCosine, warmup_steps=2),
        **kwargs,
    )


def fit(model, callbacks=(), max_epochs=2):
    torch.manual_seed(0)
    trainer = Trainer(
        max_epochs=max_epochs,
        limit_train_batches=6,
        limit_val_batches=1,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16))
    return trainer


def test_fit_whitening_whitens_the_images_it_is_given_and_forward_never_refits():
    torch.manual_seed(0)
    network = ConvNet(10, widths=(8, 8, 8))
    images = torch.randn(64, 3, 16, 16) @ torch.randn(16, 16)  # correlated neighbouring pixels
    before = network.whiten.weight.clone()
    network.train()(images)
    assert not network.whitening_fitted and torch.equal(network.whiten.weight, before)  # forward only computes
    network.fit_whitening(images)
    assert network.whitening_fitted
    half = network.whiten.weight.shape[0] // 2
    responses = nn.functional.conv2d(images, network.whiten.weight[:half]).transpose(0, 1).reshape(half, -1)
    covariance = responses @ responses.T / responses.shape[1]
    assert torch.allclose(covariance, torch.eye(half), atol=0.05)  # eigenvalues / (eigenvalues + 5e-4)
    restored = ConvNet(10, widths=(8, 8, 8))
    restored.load_state_dict(network.state_dict())
    assert restored.whitening_fitted and torch.equal(restored.whiten.weight, network.whiten.weight)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fit_whitening_computes_in_float32_under_autocast(dtype):
    torch.manual_seed(0)
    images = torch.randn(256, 3, 16, 16) @ torch.randn(16, 16)
    plain, autocast = ConvNet(10, widths=(8, 8, 8)), ConvNet(10, widths=(8, 8, 8))
    plain.fit_whitening(images)
    with torch.autocast("cpu", dtype=dtype):
        autocast.fit_whitening(images)
    assert torch.equal(autocast.whiten.weight, plain.whiten.weight)


def test_the_training_forward_and_backward_compile_as_one_graph():
    # fullgraph=True raises at the first graph break: a side effect, a host sync or a branch on a tensor's value.
    torch._dynamo.reset()
    network = ConvNet(10, widths=(8, 8, 8)).train()
    compiled = torch.compile(network, fullgraph=True, backend="eager")
    compiled(torch.randn(8, 3, 16, 16)).sum().backward()
    assert network.head.weight.grad is not None


class RecordWhiteningAtFirstStep(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.fitted = bool(pl_module.network.whitening_fitted)
            self.weight = pl_module.network.whiten.weight.detach().clone()


def test_whitening_is_fitted_to_plain_training_images_before_the_first_step_the_same_under_every_precision():
    filters = {}
    for precision in ("32-true", "bf16-mixed"):
        record = RecordWhiteningAtFirstStep()
        model = small_model()
        torch.manual_seed(0)
        Trainer(
            max_steps=2,
            limit_val_batches=1,
            precision=precision,
            callbacks=[record],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(model, SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16))
        assert record.fitted and torch.equal(model.network.whiten.weight, record.weight)
        filters[precision] = record.weight
    assert torch.equal(filters["bf16-mixed"], filters["32-true"])
    # They whiten the training images as they are, not an augmented batch: fitted to all 192 of them here.
    data = SyntheticDataModule(train_size=256, val_size=64, test_size=64)
    data.setup("fit")
    images = data.splits["train"][0]
    reference = ConvNet(10, widths=(8, 8, 8))
    reference.fit_whitening((images.float() - data.mean) / data.std)
    assert torch.allclose(filters["32-true"], reference.whiten.weight, rtol=1e-3, atol=1e-3)


def test_a_run_resumed_from_a_checkpoint_keeps_its_filters(tmp_path):
    model = small_model()
    trainer = fit(model, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    fitted = model.network.whiten.weight.detach().clone()
    resumed = small_model()
    Trainer(
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(
        resumed,
        SyntheticDataModule(train_size=256, val_size=64, test_size=64, batch_size=16, seed=5),
        ckpt_path=tmp_path / "run.ckpt",
        weights_only=False,
    )  # its hparams hold partials
    assert torch.equal(resumed.network.whiten.weight, fitted)


def test_a_datamodule_of_plain_dataloaders_fits_the_whitening_to_its_first_batch():
    images, labels = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))

    class Loaders(LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(images, labels), batch_size=32)

    model = small_model()
    Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    ).fit(model, Loaders())
    reference = ConvNet(10, widths=(8, 8, 8))
    reference.fit_whitening(images[:32])
    assert torch.equal(model.network.whiten.weight, reference.whiten.weight)


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


def test_predict_gives_the_probabilities_of_the_modules_tta_level():
    torch.manual_seed(0)
    images, targets = torch.randn(6, 3, 16, 16), torch.arange(6)
    weights = small_model().state_dict()
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    predicted = []
    for level in (0, 1, 2):
        model = small_model(tta_level=level)
        model.load_state_dict(weights)
        [batch] = trainer.predict(model, DataLoader(TensorDataset(images, targets), batch_size=6))
        with torch.no_grad():
            probability, label = logits_with_tta(model.network.eval(), images, level).softmax(dim=-1).max(dim=-1)
        torch.testing.assert_close(batch["probability"], probability, rtol=0, atol=1e-6)
        assert torch.equal(batch["label"], label) and torch.equal(batch["target"], targets)
        predicted.append(batch["probability"])
    # Each level changes the probabilities by far more than the tolerance: a predict at another level fails above.
    assert all((a - b).abs().max() > 1e-4 for a, b in zip(predicted, predicted[1:] + predicted[:1]))


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
