"""Fine-tuning through the real Trainer: warmup as a fraction, a slower body than head, a frozen body,
and a new run started from another run's weights."""

from functools import partial

import pytest
import torch
from pytorch_lightning import Trainer
from test_trainer_lr import RecordLR

from conftest import expected_lr
from project.callbacks.freeze_body import FreezeBody
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.models.init_weights import load_init_weights
from project.networks.convnet import ConvNet
from project.optim.warmup_cosine import WarmupCosine

LR = 0.01


class PretrainedConvNet(ConvNet):
    pretrained = True  # as TorchvisionNet says of a body that starts from trained weights


def fit(callbacks=(), max_epochs=2, num_classes=10, widths=(8, 8), network=ConvNet, **model_args):
    torch.manual_seed(0)
    model_args.setdefault("scheduler", partial(WarmupCosine, warmup_fraction=0.25, min_lr_ratio=0.1))
    model = ImageClassifier(
        network=partial(network, widths=widths),
        num_classes=num_classes,
        optimizer=partial(torch.optim.AdamW, lr=LR),
        **model_args,
    )
    record = RecordLR()
    trainer = Trainer(
        max_epochs=max_epochs,
        limit_train_batches=6,
        limit_val_batches=1,
        callbacks=[record, *callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = SyntheticDataModule(num_classes=num_classes, train_size=128, val_size=32, test_size=32, batch_size=16)
    trainer.fit(model, data)
    return model, trainer, record


def test_warmup_fraction_and_a_slower_body_follow_the_closed_form_at_every_step():
    model, trainer, record = fit(body_lr_scale=0.1, network=PretrainedConvNet)
    total = trainer.estimated_stepping_batches
    assert total == 12 and trainer.lr_scheduler_configs[0].scheduler.warmup_steps == 3  # round(0.25 * 12)
    optimizer = trainer.optimizers[0]
    head = set(model.network.head.parameters())
    scales = [0.1 if not set(group["params"]) & head else 1.0 for group in optimizer.param_groups]
    assert sorted(scales) == [0.1, 0.1, 1.0]  # body weights, body biases; the head (no bias)
    assert {p for g, s in zip(optimizer.param_groups, scales) if s == 1.0 for p in g["params"]} == head
    for step, lrs in enumerate(record.lrs):
        expected = [scale * expected_lr(step, LR, 3, total, floor_ratio=0.1) for scale in scales]
        assert lrs == pytest.approx(expected, abs=1e-12)
    # A network trained from scratch has no trained body to spare: every group at the full LR.
    _, _, record = fit(body_lr_scale=0.1, max_epochs=1)
    assert record.lrs[5] == pytest.approx([expected_lr(5, LR, 2, 6, floor_ratio=0.1)] * 2, abs=1e-12)


def test_warmup_fraction_or_steps_not_both():
    with pytest.raises(ValueError, match=r"give warmup_steps \(2\) or warmup_fraction \(0.1\), not both"):
        WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), 2, 10, warmup_fraction=0.1)
    with pytest.raises(ValueError, match=r"warmup_fraction must be in \[0, 1\), got 1.0"):
        WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), total_steps=10, warmup_fraction=1.0)


def test_a_frozen_body_does_not_move_in_its_epochs_then_trains():
    class Snapshot(FreezeBody):  # the network's state at the start (whitening fitted) and after each epoch
        seen = []

        def on_train_start(self, trainer, pl_module):
            self.on_train_epoch_end(trainer, pl_module)

        def on_train_epoch_end(self, trainer, pl_module):
            self.seen.append({name: p.detach().clone() for name, p in pl_module.network.state_dict().items()})

    freeze = Snapshot(epochs=1)
    model, _, _ = fit(callbacks=[freeze], body_lr_scale=0.5)
    before, first, second = freeze.seen
    body = [name for name in first if not name.startswith("head.")]
    # Epoch 0: the body's weights and BatchNorm statistics are the initial ones; the head learned.
    assert all(torch.equal(first[name], before[name]) for name in body)
    assert not torch.equal(first["head.weight"], before["head.weight"])
    # Epoch 1: the body trains, but never-trained parts (the whitening filters) stay as they were.
    trained = [name for name in body if "features" in name and name.endswith("weight")]
    assert any(not torch.equal(second[name], first[name]) for name in trained)
    assert not model.network.whiten.weight.requires_grad


def test_init_weights_from_a_run_checkpoint_with_another_head(run_dir, tmp_path, caplog):
    checkpoint = run_dir / "checkpoints" / "last.ckpt"  # the shared CLI run: ConvNet [16, 32, 32], 10 classes
    trained = {
        key.removeprefix("network."): value
        for key, value in torch.load(checkpoint, weights_only=True)["state_dict"].items()
        if key.startswith("network.")
    }
    torch.save(trained, tmp_path / "plain.pt")
    for file in (checkpoint, tmp_path / "plain.pt"):
        model, _, _ = fit(max_epochs=1, num_classes=4, init_weights=str(file), body_lr_scale=0.0, widths=(16, 32, 32))
        new = model.network.state_dict()
        # body_lr_scale 0: the body's parameters stayed exactly as loaded; the 4-class head is new.
        body = [name for name, _ in model.network.named_parameters() if not name.startswith("head.")]
        assert len(body) > 10 and all(torch.equal(new[name], trained[name]) for name in body)
        assert torch.equal(new["whiten.weight"], trained["whiten.weight"])  # not refitted to the new data
        assert new["head.weight"].shape == (4, 32)
    assert caplog.text.count("a new head (head.weight (10, 32) there, (4, 32) here)") == 2


def test_init_weights_of_another_architecture_is_one_clear_error(tmp_path):
    torch.save(ConvNet(num_classes=10, widths=(8, 16)).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"does not fit the network .*features.2.0.weight is \(16, 8, 3, 3\) there"):
        load_init_weights(ConvNet(num_classes=10, widths=(8, 8)), str(tmp_path / "other.pt"))
    (tmp_path / "notes.pt").write_bytes(b"")
    torch.save({"epoch": 3}, tmp_path / "notes.pt")
    with pytest.raises(ValueError, match="holds no weights"):
        load_init_weights(ConvNet(num_classes=10, widths=(8, 8)), str(tmp_path / "notes.pt"))
