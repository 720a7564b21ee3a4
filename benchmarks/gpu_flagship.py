"""The flagship recipe on one GPU: train time per epoch and in all, process wall time, TTA accuracy.

    python benchmarks/gpu_flagship.py --root <image folder> [--seeds 0 1 2] [--airbench airbench94_muon.py]
    python benchmarks/gpu_flagship.py --root <image folder> -- --model.compile true   # flags for main.py fit

For each seed, `python main.py fit --config configs/cifar.yaml` on the image folder (its cache is built
first, so every run starts warm), then `python main.py test` (TTA) on the run's last.ckpt. Train time
is measured inside the run, synchronized with the device at each epoch's start and end: it covers the
training steps, not validation; "fit wall" and "test wall" time the whole processes (imports, device
start-up, data, checkpoints, teardown).

With --airbench, airbench94_muon's own code (from Keller Jordan's cifar10-airbench repository; keep it
out of the repository) trains on the same images in the same call, as its ``__main__`` does (a warm-up
run of the compiled model, then one run per seed), in compile's default mode. Its own timer covers
whitening, training and the TTA evaluation, not the per-epoch evaluation; the template's train time
covers the training epochs only (its whitening fit and TTA test are in the process times).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from project.data.image_folder import ImageFolderDataModule

REPO = Path(__file__).resolve().parent.parent
MAIN, CIFAR = str(REPO / "main.py"), str(REPO / "configs" / "cifar.yaml")


class EpochTimes(Callback):
    """Writes the training time of each epoch (validation excluded) to ``path`` as JSON at the end of fit."""

    def __init__(self, path: str) -> None:
        self.path, self.epochs = Path(path), []

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit_start = self._now(pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epoch_start = self._now(pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.epochs.append(self._now(pl_module) - self.epoch_start)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.path.write_text(json.dumps({"epochs": self.epochs, "fit": self._now(pl_module) - self.fit_start}))

    @staticmethod
    def _now(pl_module: LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()


def run_template(root: str, seed: int, workdir: Path, fit_flags: list[str]) -> dict:
    logs, times = workdir / f"seed{seed}", workdir / f"seed{seed}.json"
    common = ["--trainer.logger.init_args.save_dir", str(logs), "--trainer.enable_progress_bar", "false"]
    fit_wall = timed(
        [
            MAIN,
            "fit",
            "--config",
            CIFAR,
            "--data",
            "ImageFolderDataModule",
            "--data.root",
            root,
            "--data.cache_dir",
            str(workdir / "cache"),
            "--seed_everything",
            str(seed),
            *common,
            "--test_after_fit",
            "false",  # the test pass is timed as its own process below
            "--trainer.callbacks+=benchmarks.gpu_flagship.EpochTimes",
            f"--trainer.callbacks.path={times}",
            *fit_flags,
        ]
    )
    run = logs / "cifar10" / "version_0"
    test_wall = timed(
        [
            MAIN,
            "test",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            *common,
        ]
    )
    events = EventAccumulator(str(logs / "cifar10" / "version_1"))
    events.Reload()
    measured = json.loads(times.read_text())
    return {
        "epochs": measured["epochs"],
        "train": sum(measured["epochs"]),
        "fit": measured["fit"],
        "fit_wall": fit_wall,
        "test_wall": test_wall,
        "tta_acc": events.Scalars("test/acc")[-1].value,
    }


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def write_airbench_data(data: ImageFolderDataModule, folder: Path) -> None:
    """The image folder as airbench's CifarLoader reads it: ``folder/{train,test}.pt``, uint8 N x H x W x C."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images, labels = data.load(split)
        torch.save(
            {"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels, "classes": data.class_names},
            folder / f"{split}.pt",
        )


AIRBENCH_DRIVER = """
import sys, time, torch
sys.argv = [{path!r}]  # it reads its own source at import
sys.path.insert(0, {directory!r})
import airbench94_muon as airbench
model = airbench.CifarNet().cuda().to(memory_format=torch.channels_last)
model.compile()
airbench.main("warmup", model)
for seed in {seeds!r}:
    torch.manual_seed(seed)
    start = time.perf_counter()
    accuracy = airbench.main(seed, model)
    print(f"RESULT {{seed}} {{time.perf_counter() - start}} {{accuracy}}", flush=True)
"""


def run_airbench(path: str, seeds: list[int], workdir: Path) -> list[dict]:
    path = str(Path(path).resolve())
    driver = AIRBENCH_DRIVER.format(path=path, directory=str(Path(path).parent), seeds=seeds)
    result = subprocess.run([sys.executable, "-c", driver], cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"airbench94_muon failed:\n{result.stderr[-3000:]}")
    print(result.stdout)
    rows = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    # Its own timer, the last column of its table's "eval" rows: whitening, training and TTA evaluation.
    own = [
        float(line.strip("|").split("|")[-1])
        for line in result.stdout.splitlines()
        if line.startswith("|") and line.split("|")[2].strip() == "eval"
    ][1:]  # [0] is the warm-up run
    return [
        {"wall": float(wall), "own": seconds, "tta_acc": float(accuracy)}
        for (_, wall, accuracy), seconds in zip(rows, own)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="image folder with train/<class>/ and test/<class>/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--airbench", help="path of airbench94_muon.py, to run beside the template")
    parser.add_argument("fit_flags", nargs="*", help="after --: flags for main.py fit")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = ImageFolderDataModule(args.root, cache_dir=str(workdir / "cache"))
        data.prepare_data()  # decoded before any timed run: every run starts with a warm cache
        print(f"device: {device}; template: configs/cifar.yaml {' '.join(args.fit_flags)}")
        print(
            f"{'seed':>4} {'train s':>8} {'fit s':>7} {'fit wall':>9} {'test wall':>10} {'TTA acc':>8}  "
            "train s per epoch"
        )
        template = []
        for seed in args.seeds:
            r = run_template(args.root, seed, workdir, args.fit_flags)
            template.append(r)
            print(
                f"{seed:>4} {r['train']:8.3f} {r['fit']:7.3f} {r['fit_wall']:9.2f} {r['test_wall']:10.2f} "
                f"{100 * r['tta_acc']:7.2f}%  " + " ".join(f"{t:.3f}" for t in r["epochs"])
            )
        mean = {key: statistics.mean(r[key] for r in template) for key in ("train", "fit_wall", "test_wall", "tta_acc")}
        print(
            f"template mean: train {mean['train']:.2f} s, fit wall {mean['fit_wall']:.2f} s "
            f"({mean['fit_wall'] - mean['train']:.2f} s besides training), test wall {mean['test_wall']:.2f} s, "
            f"TTA accuracy {100 * mean['tta_acc']:.2f}%"
        )
        if args.airbench:
            write_airbench_data(data, workdir / "cifar10")
            reference = run_airbench(args.airbench, args.seeds, workdir)
            wall, own, accuracy = (statistics.mean(r[key] for r in reference) for key in ("wall", "own", "tta_acc"))
            print(
                f"airbench94_muon mean: {own:.2f} s by its own timer (whitening, training, TTA evaluation), "
                f"{wall:.2f} s a run in all; TTA accuracy {100 * accuracy:.2f}%"
            )
            print(f"template train time / airbench94_muon's own time: {mean['train'] / own:.2f}x")


if __name__ == "__main__":
    main()
