"""Streaming from shards against holding the images in memory: memory, time to the first step, input throughput.

    python benchmarks/streaming.py --source <image folder> --work <scratch folder> [--small 5000 --large 20000]

From ``--source`` (class folders of JPEGs, e.g. CIFAR-10's train/), two folders of phone-sized JPEGs are made
once in ``--work``: ``small`` and ``large`` (4x the images), each image upscaled to a random size around 400x300.
Then, all at 224 px (stored at 256, torchvision's resize-256-crop-224):

1. conversion: the large folder's splits written as shards, in images per second;
2. memory and time to the first step: ``python main.py fit --config configs/images.yaml`` on each folder, in
   memory and streaming (MobileNetV3-small from scratch, so that the data path dominates), 5 steps; the peak memory
   of the whole process tree (proportional set size: shared pages counted once) and the seconds from the
   process's start to its first training step, the shards and cache already written;
3. training-input throughput: batches of 64 decoded and augmented (random-resized crop, flip, normalize) into
   a one-layer network, images per second: the template streaming the shards, against torchvision's
   ``ImageFolder`` + ``RandomResizedCrop(224)`` + flip + ``ToTensor`` + ``Normalize`` in a ``DataLoader``
   with the same number of workers on the same cores.
"""

import argparse
import os
import random
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import torch
from PIL import Image
from pytorch_lightning import Callback
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from project.data.image_folder import IMAGE_SUFFIXES, ImageFolderDataModule  # noqa: E402

SIZE, STORED = 224, 256  # torchvision's ImageNet evaluation: resize to 256, crop 224


class FirstStep(Callback):
    """Prints the wall-clock time of the first training step's start (named on the command line by its path)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            print(f"first step at {time.time()}", flush=True)


def _upscale(job):
    source, target, seed = job
    rng = random.Random(seed)
    size = (rng.randint(360, 440), rng.randint(270, 330))
    with Image.open(source) as image:
        image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)


def make_folder(source: Path, target: Path, count: int) -> None:
    """``count`` images of ``source``, the same number per class, upscaled to about 400x300, into ``target``."""
    if target.is_dir():
        return
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    per_class = count // len(classes)
    jobs = []
    for name in classes:
        files = sorted(f for f in (source / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)[:per_class]
        (target.with_suffix(".tmp") / name).mkdir(parents=True, exist_ok=True)
        jobs += [(f, target.with_suffix(".tmp") / name / f"{f.stem}.jpg", len(jobs) + i) for i, f in enumerate(files)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_upscale, jobs, chunksize=64)
    target.with_suffix(".tmp").rename(target)
    print(f"made {target}: {len(jobs)} JPEGs of about 400x300")


def tree_pss(pid: int) -> int:
    """Proportional set size of a process and its descendants, in bytes (0 for a process that has ended)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as file:
                total += next(int(line.split()[1]) * 1024 for line in file if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as file:
                    stack += [int(child) for child in file.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def fit_run(root: Path, work: Path, streaming: bool, workers: int) -> tuple[float, float]:
    """(peak memory in GB, seconds to the first step) of a short ``main.py fit`` on ``root``."""
    command = [sys.executable, str(REPO / "main.py"), "fit", "--config", str(REPO / "configs" / "images.yaml")]
    command += ["--data.root", str(root), "--data.cache_dir", str(work / "cache"), "--data.streaming", str(streaming)]
    command += ["--data.image_size", str(SIZE), "--data.crop_fraction", str(SIZE / STORED)]
    command += ["--data.num_workers", str(workers), "--data.batch_size", "64"]
    command += ["--model.network", "TorchvisionNet", "--model.network.name", "mobilenet_v3_small"]
    command += ["--model.network.weights", "null", "--trainer.max_steps", "5", "--trainer.limit_val_batches", "0"]
    command += ["--test_after_fit", "false"]
    command += ["--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false"]
    command += ["--trainer.callbacks+=benchmarks.streaming.FirstStep", "--trainer.logger.save_dir", str(work / "logs")]
    start = time.time()
    process = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss(process.pid))
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"main.py fit failed:\n{stderr[-3000:]}")
    first = next(float(line.split()[-1]) for line in stdout.splitlines() if line.startswith("first step at"))
    return peak / 1e9, first - start


class OneLayer(nn.Module):
    """A network that costs next to nothing, so that the measured rate is the input's."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 8, stride=8), nn.Linear(8, 10)

    def forward(self, images):
        return self.head(self.conv(images).mean(dim=(2, 3)))


def images_per_second(batches, batch_count: int, warmup: int = 3) -> float:
    network = OneLayer()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    iterator = iter(batches)
    for step in range(warmup + batch_count):
        if step == warmup:
            start, seen = time.perf_counter(), 0
        images, labels = next(iterator)
        loss = nn.functional.cross_entropy(network(images), labels % 10)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= warmup:
            seen += len(images)
    return seen / (time.perf_counter() - start)


def throughput(root: Path, work: Path, workers: int, batch_count: int) -> tuple[float, float]:
    """(template streaming, torchvision ImageFolder) training images per second."""
    data = ImageFolderDataModule(
        str(root),
        image_size=SIZE,
        crop_fraction=SIZE / STORED,
        random_crop_scale=(0.08, 1.0),
        cache_dir=str(work / "cache"),
        batch_size=64,
        streaming=True,
        num_workers=workers,
    )
    data.prepare_data()
    data.setup("fit")
    template = (data.prepare_batch(batch, augment=True) for batch in data.train_dataloader())
    classic_transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(SIZE),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    classic_set = datasets.ImageFolder(str(root), classic_transform)
    classic = DataLoader(classic_set, batch_size=64, shuffle=True, drop_last=True, num_workers=workers)
    return images_per_second(template, batch_count), images_per_second(classic, batch_count)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="class folders of images, e.g. CIFAR-10's train/")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the made folders and caches")
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, for both pipelines")
    parser.add_argument("--batches", type=int, default=40, help="batches of 64 timed per throughput measurement")
    args = parser.parse_args()
    work = args.work.resolve()
    folders = {"small": work / f"jpeg{args.small}", "large": work / f"jpeg{args.large}"}
    make_folder(args.source, folders["small"], args.small)
    make_folder(args.source, folders["large"], args.large)

    converting = ImageFolderDataModule(
        str(folders["large"]),
        image_size=SIZE,
        crop_fraction=SIZE / STORED,
        cache_dir=str(work / "cache"),
        streaming=True,
    )
    count = sum(len(files) for files, _ in converting._split_listing().values())
    start = time.perf_counter()
    converting.prepare_data()
    seconds = time.perf_counter() - start
    print(f"conversion of {count} images to shards: {seconds:.1f} s, {count / seconds:,.0f} images/s (0 if cached)")

    rows = []
    for streaming in (False, True):
        fit_run(folders["small"], work, streaming, args.workers)  # writes the cache or shards, not measured
        for size in ("small", "large"):
            if size == "large":
                fit_run(folders[size], work, streaming, args.workers)
            peak, first = fit_run(folders[size], work, streaming, args.workers)
            rows.append((("streaming" if streaming else "in memory"), size, peak, first))
    print(f"\n{'path':<11}{'folder':<8}{'peak GB':>9}{'first step s':>14}")
    for path, size, peak, first in rows:
        print(f"{path:<11}{size:<8}{peak:>9.2f}{first:>14.1f}")
    for path in ("in memory", "streaming"):
        (small,), (large,) = ([r for r in rows if r[0] == path and r[1] == s] for s in ("small", "large"))
        print(
            f"{path}: {args.large / args.small:.0f}x the images -> {large[2] / small[2]:.2f}x the peak memory, "
            f"{large[3] / small[3]:.2f}x the time to the first step"
        )

    rates = [throughput(folders["large"], work, args.workers, args.batches) for _ in range(2)]
    for template, classic in rates:
        print(
            f"input at {SIZE} px, {args.workers} workers: template streaming {template:,.0f} images/s, "
            f"torchvision ImageFolder {classic:,.0f} images/s: {template / classic:.2f}x"
        )


if __name__ == "__main__":
    main()
