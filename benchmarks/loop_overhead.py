"""Per-step cost of the template's training loop against a hand-written PyTorch loop and bare Lightning.

    python benchmarks/loop_overhead.py --network flagship --batch-size 256 --steps 15
    python benchmarks/loop_overhead.py --network tiny --batch-size 64 --steps 300

All three run the same network, data path (TensorBatches, crop + flip + normalize), loss, SGD and
WarmupCosine, one after the other in this process, and report the median wall time between the
starts of consecutive steps after ``--warmup`` steps:
- hand:     a plain PyTorch loop;
- bare:     Lightning's Trainer with progress bar, logger, model summary and checkpointing off;
- template: the template's CLI defaults (progress bar, TensorBoard logger, LR monitor, checkpoints).
"""

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, Trainer

from project.cli import CLI
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier
from project.networks.convnet import ConvNet
from project.optim.configure import parameter_groups
from project.optim.warmup_cosine import WarmupCosine

WIDTHS = {"flagship": (64, 256, 256), "tiny": (8, 8, 8)}
OPTIMIZER = partial(torch.optim.SGD, lr=0.1, momentum=0.85, nesterov=True, weight_decay=5e-4)
SCHEDULER = partial(WarmupCosine, warmup_steps=5)


class StepClock(Callback):
    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, *args):
        self.starts.append(time.perf_counter())


def median_step(starts, warmup):
    return statistics.median(b - a for a, b in zip(starts[warmup:], starts[warmup + 1 :]))


def make_data(batch_size, steps):
    data = SyntheticDataModule(train_size=batch_size * (steps + 1), test_size=16, val_size=0, batch_size=batch_size)
    data.setup("fit")
    return data


def make_model(widths):
    torch.manual_seed(0)
    return ImageClassifier(
        network=partial(ConvNet, widths=widths), optimizer=OPTIMIZER, scheduler=SCHEDULER, label_smoothing=0.2
    )


def hand_loop(widths, batch_size, steps):
    data, model = make_data(batch_size, steps), make_model(widths)
    optimizer = OPTIMIZER(parameter_groups(model))
    scheduler = SCHEDULER(optimizer, total_steps=steps)
    starts = []
    for batch in data.train_dataloader():
        starts.append(time.perf_counter())
        images, labels = data.prepare_batch(batch, augment=True)
        loss = F.cross_entropy(model(images), labels, label_smoothing=0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    starts.append(time.perf_counter())
    return starts


def bare_lightning(widths, batch_size, steps):
    clock = StepClock()
    trainer = Trainer(
        max_steps=steps,
        limit_val_batches=0,
        callbacks=[clock],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(make_model(widths), make_data(batch_size, steps))
    return clock.starts


def template(widths, batch_size, steps):
    clock = StepClock()
    with tempfile.TemporaryDirectory() as logs:
        sys.argv = ["main.py"]
        cli = CLI(
            args=[
                "--model",
                "ImageClassifier",
                "--model.network",
                "ConvNet",
                "--model.network.widths",
                str(list(widths)),
                "--model.optimizer",
                "SGD",
                "--model.optimizer.lr",
                "0.1",
                "--model.optimizer.momentum",
                "0.85",
                "--model.optimizer.nesterov",
                "true",
                "--model.optimizer.weight_decay",
                "5e-4",
                "--model.scheduler.warmup_steps",
                "5",
                "--model.label_smoothing",
                "0.2",
                "--data",
                "SyntheticDataModule",
                f"--data.train_size={batch_size * (steps + 1)}",
                "--data.test_size",
                "16",
                "--data.val_size",
                "0",
                "--data.batch_size",
                str(batch_size),
                "--trainer.max_steps",
                str(steps),
                "--trainer.limit_val_batches",
                "0",
                "--trainer.logger.save_dir",
                logs,
            ],
            run=False,
        )
        cli.trainer.callbacks.append(clock)
        cli.trainer.fit(cli.model, cli.datamodule)
    return clock.starts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=WIDTHS, default="tiny")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    run = dict(widths=WIDTHS[args.network], batch_size=args.batch_size, steps=args.steps + args.warmup)
    hand_loop(**{**run, "steps": args.warmup + 2})  # untimed: whichever loop ran first was slower
    seconds = {
        name: median_step(loop(**run), args.warmup)
        for name, loop in [("hand", hand_loop), ("bare", bare_lightning), ("template", template)]
    }
    print(f"{args.network} network, batch {args.batch_size}, median of {args.steps} steps")
    for name, value in seconds.items():
        print(f"{name:<10}{value * 1e3:10.2f} ms/step{value / seconds['hand']:8.3f}x hand")
    print(
        f"template - hand {1e3 * (seconds['template'] - seconds['hand']):+.3f} ms/step, "
        f"template - bare {1e3 * (seconds['template'] - seconds['bare']):+.3f} ms/step"
    )


if __name__ == "__main__":
    main()
