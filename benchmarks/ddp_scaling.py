"""Images per second of `main.py fit` with DDP over 2 CPU processes against 1 process, at the same global batch.

    python benchmarks/ddp_scaling.py [--global-batch 512] [--steps 12] [--widths 64 256 256]

Both runs are real `python main.py fit` subprocesses with the template's defaults (logger, LR
monitor, checkpoints) on synthetic CIFAR-shaped data: one process at the global batch, then
``--trainer.strategy ddp --trainer.devices 2`` at half of it per process (Lightning gives each
process half of the cores). Rank 0 records when each step starts; the rate is taken after
``--warmup`` steps, over whole steps.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer

MAIN = str(Path(__file__).resolve().parent.parent / "main.py")


class StepStarts(Callback):
    """Rank 0 writes the start time of every training step to ``path`` (JSON) at the end of fit."""

    def __init__(self, path: str) -> None:
        self.path, self.starts = path, []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.starts.append(time.perf_counter())
        if trainer.is_global_zero:
            Path(self.path).write_text(json.dumps(self.starts))


def images_per_second(devices: int, args, workdir: Path) -> float:
    starts = workdir / f"starts-{devices}.json"
    per_device = args.global_batch // devices
    command = [
        sys.executable,
        MAIN,
        "fit",
        "--config",
        "configs/synthetic.yaml",
        "--model.network.widths",
        json.dumps(args.widths),
        "--data.train_size",
        str(args.global_batch * args.steps),
        "--data.val_size",
        "0",
        "--data.test_size",
        "16",
        "--data.batch_size",
        str(per_device),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(workdir / "logs"),
        "--trainer.callbacks+=benchmarks.ddp_scaling.StepStarts",
        f"--trainer.callbacks.path={starts}",
    ]
    if devices > 1:
        command += ["--trainer.strategy", "ddp", "--trainer.devices", str(devices)]
    subprocess.run(command, cwd=Path(MAIN).parent, check=True, capture_output=True)
    times = json.loads(starts.read_text())[args.warmup :]
    return args.global_batch * (len(times) - 1) / (times[-1] - times[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global-batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 256])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        one = images_per_second(1, args, Path(workdir))
        two = images_per_second(2, args, Path(workdir))
    print(f"1 process,  batch {args.global_batch}:        {one:8.0f} images/s")
    print(f"2 processes, batch {args.global_batch // 2} each (DDP): {two:8.0f} images/s")
    print(f"DDP / single: {two / one:.2f}x")


if __name__ == "__main__":
    main()
