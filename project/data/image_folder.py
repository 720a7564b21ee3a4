"""Your own images: class folders, split into train, val and test, decoded once, cached on disk, held in memory
or, when too large for it, streamed from shards."""

import csv
import hashlib
import os
import shutil
import signal
import tempfile
import warnings
from multiprocessing import Pool
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from project.data.decode import RESIZE_FILTER, decode_image
from project.data.in_memory import Flip, InMemoryImageDataModule
from project.data.shards import (
    STATS_FILE,
    Shards,
    decode_processes,
    decoded_bytes,
    default_workers,
    memory_budget,
    write_shards,
)
from project.data.storage import S3Folder, exists, is_remote, upload_folder
from project.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")


class ImageFolderDataModule(InMemoryImageDataModule):
    """Images in one folder per class, like torchvision's ImageFolder, on the in-memory data path.

    Two layouts: ``root/<class>/*`` (class folders only), or ``root/train/<class>/*`` with optional
    ``root/test/<class>/*`` and ``root/val/<class>/*``. A split without its folder is held out of
    the training images, stratified by class (each class gives the same fraction), drawn with
    ``split_seed``: ``test_size`` for test, then ``val_size`` for validation. Class names are the
    folder names, sorted.

    With ``splits`` (a CSV of ``image,split`` lines, paths relative to ``root``), the file decides
    which image is in which split: the first run writes it if missing (the CLI puts it in the run
    directory and names it in the run's ``config.yaml``), so ``test``, ``predict`` and a rerun use the
    same files even after images are added to the folder.

    Images keep their aspect ratio: decoded upright (EXIF orientation) to RGB whatever their mode
    (``project/data/decode.py``), the short side resized to ``image_size / crop_fraction`` and
    the centre square of that side kept. Evaluation sees the central ``image_size`` square of it
    (torchvision's resize-then-center-crop); training a random-resized crop of it with
    ``random_crop_scale``, else a shifted ``image_size`` window. Each split is decoded once, in
    parallel, and cached in ``cache_dir`` as one uint8 tensor, rebuilt when a file is added, removed
    or changed, or the sizes change.

    A split too large for memory is streamed (``streaming``): written once as shards into ``cache_dir``
    (``project/data/shards.py``), rebuilt like the cache, and decoded in DataLoader workers batch by batch.
    Batches, augmentation, resume and DDP sharding are the same as in memory.

    ``predict`` runs on the test split, or on ``predict_dir``: any images under it, in any
    subfolder, without labels, and not cached. ``image_names`` names each image for
    ``predictions.csv``.

    Args:
        root: The folder of class folders, or of train/ (and test/, val/); or such a folder in S3-compatible
            object storage, ``s3://bucket/photos`` (``project/data/storage.py``).
        image_size: Side of the square images the network sees. Unset: what the network expects (the CLI
            sets it from a pretrained network's ``preprocessing``), else 32.
        crop_fraction: ``image_size`` over the side images are resized to before the centre crop
            (torchvision's ImageNet evaluation: 224 of 256, 0.875); 1 keeps the whole short side. Unset: the
            network's, else 1.
        random_crop_scale: Training crops cover this fraction range of the image's area, at random aspect
            ratios, resized to ``image_size`` (torchvision's RandomResizedCrop; ImageNet uses [0.08, 1]); unset,
            training images are shifted by up to ``crop_padding`` pixels instead.
        cache_dir: Where decoded splits are cached; the data folder itself may be read-only.
        batch_size: Images per batch (per device under DDP).
        val_size: Training images held out for validation when there is no val/ folder: a count, or a
            fraction if below 1 (0.1); 0 validates on the test split.
        test_size: Images held out for testing when there is no test/ folder: a count, or a fraction (0.1).
        split_seed: Draws the held-out images; the same seed and files give the same splits.
        splits: A CSV of ``image,split`` lines that fixes each image's split (written if missing).
        crop_padding: Training images are shifted by up to this many pixels (reflected borders); 0 for none.
        flip: Mirroring of training images: "random" (each image, each epoch, with probability 1/2),
            "alternating" (each image every other epoch) or "none".
        predict_dir: A folder of images to predict, searched recursively; unset, ``predict`` runs on the test split.
        streaming: "auto": the splits stay in memory if their decoded images fit a fifth of the machine's memory
            (and of the GPU's), else the largest ones stream until the rest fits; true: every split streams;
            false: none does.
        num_workers: DataLoader workers per device that decode streamed batches. Unset: the machine's cores
            shared among its devices, one left to each training process, at most 8.
    """

    def __init__(
        self,
        root: str,
        image_size: int | None = None,
        crop_fraction: float | None = None,
        random_crop_scale: tuple[float, float] | None = None,
        cache_dir: str = "data/cache",
        batch_size: int = 512,
        val_size: int | float = 0.1,
        test_size: int | float = 0.1,
        split_seed: int = 0,
        splits: str | None = None,
        crop_padding: int = 4,
        flip: Flip = "random",
        predict_dir: str | None = None,
        # The words first: a wrong value is then refused with the three it may be.
        streaming: Literal["auto", "true", "false"] | bool = "auto",
        num_workers: int | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, val_size=val_size, crop_padding=crop_padding, flip=flip)
        if image_size is not None and image_size < 1:
            raise UsageError(f"data.image_size must be >= 1 pixel, got {image_size}")
        if crop_fraction is not None and not 0 < crop_fraction <= 1:
            raise UsageError(f"data.crop_fraction must be in (0, 1], got {crop_fraction}")
        if random_crop_scale is not None and not 0 < random_crop_scale[0] <= random_crop_scale[1] <= 1:
            raise UsageError(
                f"data.random_crop_scale must be [low, high] with 0 < low <= high <= 1, got {list(random_crop_scale)}"
            )
        for name, size in (("val_size", val_size), ("test_size", test_size)):
            if isinstance(size, float) and not 0 <= size < 1:
                raise UsageError(f"data.{name} must be a count of images or a fraction in [0, 1), got {size}")
            if size < 0:
                raise UsageError(f"data.{name} must be >= 0, got {size}")
        streaming = {"true": True, "false": False}.get(streaming, streaming)
        if streaming not in (True, False, "auto"):
            raise UsageError(f"data.streaming must be auto, true or false, got {streaming!r}")
        if num_workers is not None and num_workers < 0:
            raise UsageError(f"data.num_workers must be >= 0 (0: decode in the training process), got {num_workers}")
        self.streaming, self.num_workers = streaming, num_workers
        self.root = S3Folder(root) if is_remote(root) else Path(root)
        self.cache_dir = cache_dir.rstrip("/") if is_remote(cache_dir) else Path(cache_dir)
        if is_remote(cache_dir) and streaming is False:
            raise UsageError(f"data.cache_dir {cache_dir} holds shards, which stream: drop data.streaming false")
        self.image_size, self.crop_fraction, self.random_crop_scale = image_size, crop_fraction, random_crop_scale
        if image_size is not None:  # unset, it is known once the CLI sets it from the network (_check_sizes)
            self._check_sizes()
        self.test_size, self.split_seed = test_size, split_seed
        self.splits_file = Path(splits) if splits is not None else None
        self.predict_dir = Path(predict_dir) if predict_dir is not None else None
        if self.predict_dir is not None and not self.predict_dir.is_dir():
            raise UsageError(
                f"data.predict_dir {self.predict_dir} is not a folder: give the folder of images to "
                "predict (searched recursively)"
            )
        if isinstance(self.cache_dir, Path) and self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise UsageError(f"data.cache_dir {self.cache_dir} is a file; it must be a folder (made if missing)")
        self._caches: dict[str, Path | None] = {}
        self._predict_listing: list[str] | None = None  # listed once: predict's images and their names agree
        self._listing: dict[str, tuple[list[str], list[int]]] | None = None
        self.class_names = _class_folders(self._class_root())
        if len(self.class_names) < 2:
            found = f"only {self.class_names[0]}/" if self.class_names else "no class folders"
            raise UsageError(
                f"image folder {self._class_root()} has {found}: a classifier needs two or more, "
                f"{self._class_root()}/<class>/<image files>"
            )
        for split in ("test", "val"):
            folder = self.root / split
            if self._class_root() != self.root and folder.is_dir() and _class_folders(folder) != self.class_names:
                raise UsageError(
                    f"class folders differ between {self.root / 'train'} {self.class_names} and "
                    f"{folder} {_class_folders(folder)}: both need the same classes"
                )

    @property
    def crop_size(self) -> int:
        return self.image_size or 32

    @property
    def stored_size(self) -> int:
        """The side images are decoded and cached at."""
        return round(self.crop_size / (self.crop_fraction or 1.0))

    @property
    def preprocessing(self) -> dict:
        """What a deployed model's client does before the model: resize the short side to ``resize``
        with this filter, take the centre ``crop`` square, and pass uint8 RGB (normalization is inside)."""
        return {"resize": self.stored_size, "crop": self.crop_size, "interpolation": RESIZE_FILTER}

    def _class_root(self) -> Path:
        if (self.root / "train").is_dir():
            return self.root / "train"
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"image folder {self.root} does not exist: expected {self.root}/<class>/<images>, or "
                f"{self.root}/train/<class>/<images> (test/ and val/ beside it are optional)"
            )
        stray = [name for name in ("test", "val") if (self.root / name).is_dir()]
        if stray:
            raise UsageError(
                f"image folder {self.root} has {stray[0]}/ but no train/: put the training images in "
                f"{self.root}/train/<class>/"
            )
        return self.root

    def _check_sizes(self) -> None:
        """What the image size bounds: the training shift (unused with random-resized crops)."""
        if self.random_crop_scale is None:
            self._check_crop_padding(self.crop_size)

    def prepare_data(self) -> None:
        # Lightning calls this in one process per machine before any rank's setup: under DDP the
        # images are decoded once and every rank then reads the cache.
        self._check_sizes()  # image_size may have been set since __init__, from the network
        for split in SPLITS:
            self._cache(split)

    def setup(self, stage: str) -> None:
        self._check_sizes()  # on every rank, before anything is loaded (prepare_data runs on one per machine)
        super().setup(stage)

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        if split == "predict":
            return self._predict_images() if self.predict_dir is not None else None
        cache = self._cache(split)
        if cache is None:
            return None
        if str(cache).endswith(".shards"):
            return Shards(str(cache), self._workers())
        cached = torch.load(cache, weights_only=True)
        return cached["images"], cached["labels"]

    def streamed_splits(self) -> set[str]:
        """The splits that stream (see ``streaming``)."""
        listing = self._split_listing()
        if self.streaming == "auto" and not is_remote(self.cache_dir):  # the largest splits stream first
            sizes = {split: decoded_bytes(len(files), self.stored_size) for split, (files, _) in listing.items()}
            streamed, budget = set(), memory_budget()
            for split in sorted(sizes, key=sizes.get, reverse=True):
                if sum(size for name, size in sizes.items() if name not in streamed) <= budget:
                    break
                streamed.add(split)
            return streamed
        return set(listing) if self.streaming or is_remote(self.cache_dir) else set()

    def _workers(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        return default_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def image_names(self, split: str) -> list[str]:
        """Each image's path in ``split``'s order: relative to the root (``test/cat/1.png``), or to
        ``predict_dir`` for the images found there."""
        if split == "predict" and self.predict_dir is None:
            split = "test"
        if split == "predict":
            return [os.path.relpath(file, self.predict_dir) for file in self._predict_files()]
        files, _ = self._split_listing()[split]
        return [os.path.relpath(file, self.root) for file in files]

    def _split_listing(self) -> dict[str, tuple[list[str], list[int]]]:
        """Each split's files and labels: from the splits file if it exists, else from the folders and the
        held-out draws (then written to the splits file, if one is named). Listed once per process."""
        if self._listing is None:
            listing = self._folder_listing()
            if self.splits_file is not None and self.splits_file.is_file():
                listing = self._read_splits(listing)
            else:
                listing = self._hold_out_missing(listing)
                if self.splits_file is not None:
                    self._write_splits(listing)
            self._listing = listing
        return self._listing

    def _folder_listing(self) -> dict[str, tuple[list[str], list[int]]]:
        if self._class_root() == self.root:
            return {"train": self._list(self.root)}
        return {split: self._list(self.root / split) for split in SPLITS if (self.root / split).is_dir()}

    def _hold_out_missing(self, listing: dict) -> dict:
        files, labels = listing["train"]
        for split, size in (("test", self.test_size), ("val", self.val_size)):
            if split in listing or size == 0:
                continue
            if isinstance(size, int) and size >= len(files):
                raise UsageError(
                    f"data.{split}_size {size} must be smaller than the {len(files)} images it is held out of; "
                    "give a smaller count, or a fraction such as 0.1"
                )
            held = _stratified_draw(labels, size, self.split_seed + (split == "val"))
            if not any(held) or all(held):
                raise UsageError(
                    f"data.{split}_size {size} of {len(files)} images holds out {int(held.sum())}: "
                    f"{split} and train both need images; use a larger folder or another {split}_size"
                )
            listing[split] = [f for f, h in zip(files, held) if h], [c for c, h in zip(labels, held) if h]
            files, labels = [f for f, h in zip(files, held) if not h], [c for c, h in zip(labels, held) if not h]
        listing["train"] = files, labels
        return listing

    def _write_splits(self, listing: dict) -> None:
        self.splits_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.splits_file.with_name(f".{self.splits_file.name}.{os.getpid()}.tmp")
        with open(partial, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "split"])
            for split, (files, _) in listing.items():
                writer.writerows([os.path.relpath(f, self.root), split] for f in files)
        os.replace(partial, self.splits_file)  # atomic: another process never reads half a file

    def _read_splits(self, listing: dict) -> dict:
        label_of = {
            os.path.relpath(f, self.root): (f, c) for files, labels in listing.values() for f, c in zip(files, labels)
        }
        with open(self.splits_file, newline="") as file:
            rows = list(csv.DictReader(file))
        if not rows or set(rows[0]) != {"image", "split"} or any(row["split"] not in SPLITS for row in rows):
            raise UsageError(
                f"data.splits {self.splits_file} is not a splits file: expected CSV lines `image,split` "
                f"under that header, split one of {', '.join(SPLITS)}"
            )
        missing = [row["image"] for row in rows if row["image"] not in label_of]
        if missing:
            raise UsageError(
                f"data.splits {self.splits_file} names {len(missing)} images that are not in {self.root} "
                f"(e.g. {missing[0]}); restore them, or leave out data.splits to split the folder anew"
            )
        if len(rows) < len(label_of):
            warnings.warn(
                f"{len(label_of) - len(rows)} images in {self.root} are not in data.splits {self.splits_file} "
                "and are left out; leave out data.splits to split the folder anew"
            )
        split_listing: dict[str, tuple[list[str], list[int]]] = {}
        for row in rows:
            file, label = label_of[row["image"]]
            files, labels = split_listing.setdefault(row["split"], ([], []))
            files.append(file)
            labels.append(label)
        return split_listing

    def _predict_files(self) -> list[str]:
        if self._predict_listing is not None:
            return self._predict_listing
        files = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(self.predict_dir)
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise UsageError(
                f"data.predict_dir {self.predict_dir} holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}), in any subfolder"
            )
        self._predict_listing = files
        return files

    def _predict_images(self) -> tuple[Tensor, Tensor]:
        files = self._predict_files()
        return self._decode(files), torch.full((len(files),), -1)  # -1: no label

    def _decode(self, files: list[str]) -> Tensor:
        # Workers ignore Ctrl-C: the main process alone handles it, and ends them on its way out.
        with Pool(decode_processes(), initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
            arrays = pool.starmap(decode_image, [(f, self.stored_size) for f in files], chunksize=256)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _cache(self, split: str) -> Path | None:
        # Remembered for the process: prepare_data and setup list and check the folder once between them.
        if split not in self._caches:
            self._caches[split] = self._checked_cache(split)
        return self._caches[split]

    def _checked_cache(self, split: str) -> Path | None:
        """The split's cache file, decoded and written first if missing or stale; None without such a split."""
        listing = self._split_listing()
        if split not in listing:
            if split == "test":
                raise UsageError(
                    f"image folder {self.root} has no test/ folder and data.test_size is 0: "
                    "hold out test images with data.test_size (e.g. 0.1), or add test/<class>/ folders"
                )
            return None
        files, labels = listing[split]
        if is_remote(self.cache_dir):  # shards kept in the bucket: written by the first run, streamed by all
            url = f"{self.cache_dir}/{self._cache_name(split, files)}.shards"
            if not exists(f"{url}/{STATS_FILE}"):  # the last file uploaded
                with tempfile.TemporaryDirectory() as local:
                    shards = Path(local) / "split.shards"
                    write_shards(shards, files, labels, self.stored_size, self.split_seed, split)
                    upload_folder(shards, url, last=STATS_FILE)
            return url
        cache = self.cache_dir / f"{self._cache_name(split, files)}.pt"
        if split in self.streamed_splits():
            cache = cache.with_suffix(".shards")
            if not cache.is_dir():
                cache.parent.mkdir(parents=True, exist_ok=True)
                write_shards(cache, files, labels, self.stored_size, self.split_seed, split)
                self._remove_stale(split, cache)
        elif not cache.is_file():
            self._write_cache(split, cache, {"images": self._decode(files), "labels": torch.tensor(labels)})
        return cache

    def _list(self, folder: Path) -> tuple[list[str], list[int]]:
        classes = _class_folders(folder)
        if classes != self.class_names:
            raise UsageError(f"class folders of {folder} {classes} differ from those of train/ {self.class_names}")
        files, labels = [], []
        for label, name in enumerate(self.class_names):
            found = sorted(
                path
                for file, path in _files(folder / name)
                if not file.startswith(".") and os.path.splitext(file)[1].lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise UsageError(f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
            labels += [label] * len(found)
        return files, labels

    def _cache_name(self, split: str, files: list[str]) -> str:
        """The split's cache name: changes with its files (names, sizes, versions) and the stored size."""
        listing = hashlib.sha256(f"{self.stored_size}".encode())
        prefix = len(str(self.root))
        for file in files:
            if isinstance(self.root, S3Folder):
                size, version = self.root.signature(file)
            else:
                stat = os.stat(file)
                size, version = stat.st_size, stat.st_mtime_ns
            listing.update(f"{file[prefix:]}\0{size}\0{version}\n".encode())
        return f"{self._cache_prefix(split)}{listing.hexdigest()[:16]}"

    def _cache_prefix(self, split: str) -> str:
        where = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        return f"{self.root.resolve().name}-{where}-{split}-"

    def _write_cache(self, split: str, cache: Path, content: dict[str, Tensor]) -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save(content, partial)
        os.replace(partial, cache)  # atomic: a reader never sees half a cache file
        self._remove_stale(split, cache)

    def _remove_stale(self, split: str, cache: Path) -> None:
        """Other caches of this split in the same format (for older listings or sizes)."""
        for stale in cache.parent.glob(self._cache_prefix(split) + "*"):
            if stale.suffix == cache.suffix and stale != cache:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def _files(folder: Path | S3Folder) -> list[tuple[str, str]]:
    """``(name, path)`` of the files in ``folder``."""
    if isinstance(folder, S3Folder):
        return folder.files()
    # Plain strings and os.scandir: Path objects cost seconds over CIFAR-10's 60,000 files.
    with os.scandir(folder) as entries:
        return [(entry.name, entry.path) for entry in entries if entry.is_file()]


def _class_folders(folder: Path | S3Folder) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder {folder} does not exist: expected <root>/<class>/<images>, or "
            "<root>/train/<class>/<images> (test/ and val/ beside it are optional)"
        )
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _stratified_draw(labels: list[int], size: int | float, seed: int) -> list[bool]:
    """Which images to hold out: the same fraction of each class (``size``, or ``size`` images in all),
    at least one of a class that has two or more, never a class's last one."""
    fraction = size if isinstance(size, float) else size / len(labels)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    held = [False] * len(labels)
    generator = torch.Generator().manual_seed(seed)
    for indices in by_class.values():
        count = min(max(round(fraction * len(indices)), 1), len(indices) - 1)
        for position in torch.randperm(len(indices), generator=generator)[:count].tolist():
            held[indices[position]] = True
    return held
