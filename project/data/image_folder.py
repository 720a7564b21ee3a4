"""Your own images: ``root/{train,test}[,val]/<class>/*``, decoded once, cached on disk, held in memory."""

import hashlib
import os
import signal
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from project.data.in_memory import Flip, InMemoryImageDataModule
from project.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageFolderDataModule(InMemoryImageDataModule):
    """Images in one folder per class, like torchvision's ImageFolder, on the in-memory data path.

    ``root/train/<class>/*`` and ``root/test/<class>/*`` are required, ``root/val/<class>/*`` is
    optional (without it, ``val_size`` training images are held out). Class names are the folder
    names, sorted. Images are converted to RGB and resized to ``image_size`` x ``image_size`` where
    they differ. Each split is decoded once (in parallel) and cached in ``cache_dir`` as one uint8
    tensor; the cache is rebuilt when a file is added, removed or changed, or ``image_size`` changes.

    ``predict`` runs on ``test/``, or on ``predict_dir``: any images under it, in any subfolder,
    without labels, resized as in training and not cached. ``image_names`` names each image for
    ``predictions.csv``.

    Args:
        root: The folder holding train/, test/ and optionally val/.
        image_size: Side of the square images the network sees.
        cache_dir: Where decoded splits are cached; the data folder itself may be read-only.
        batch_size: Images per batch (per device under DDP).
        val_size: Training images held out for validation when there is no val/ folder; 0 validates on test/.
        crop_padding: Training images are shifted by up to this many pixels (reflected borders); 0 for none.
        flip: Mirroring of training images: "random" (each image, each epoch, with probability 1/2),
            "alternating" (each image every other epoch) or "none".
        predict_dir: A folder of images to predict, searched recursively; unset, ``predict`` runs on test/.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        cache_dir: str = "data/cache",
        batch_size: int = 512,
        val_size: int = 5000,
        crop_padding: int = 4,
        flip: Flip = "random",
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, val_size=val_size, crop_padding=crop_padding, flip=flip)
        self.root, self.image_size, self.cache_dir = Path(root), image_size, Path(cache_dir)
        self.predict_dir = Path(predict_dir) if predict_dir is not None else None
        if self.predict_dir is not None and not self.predict_dir.is_dir():
            raise UsageError(
                f"data.predict_dir {self.predict_dir} is not a folder: give the folder of images to "
                "predict (searched recursively)"
            )
        self._caches: dict[str, Path | None] = {}
        self._names: dict[str, list[str]] = {}  # per split: each image's path, relative to the root
        self.class_names = _class_folders(self.root / "train")
        if len(self.class_names) < 2:
            found = f"only {self.class_names[0]}/" if self.class_names else "no class folders"
            raise UsageError(
                f"image folder {self.root / 'train'} has {found}: a classifier needs two or more, "
                f"{self.root}/train/<class>/<image files>"
            )
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise UsageError(f"data.cache_dir {self.cache_dir} is a file; it must be a folder (made if missing)")
        test_classes = _class_folders(self.root / "test")
        if test_classes != self.class_names:
            raise UsageError(
                f"class folders differ between {self.root / 'train'} {self.class_names} and "
                f"{self.root / 'test'} {test_classes}: both need the same classes"
            )

    def prepare_data(self) -> None:
        # Lightning calls this in one process per machine before any rank's setup: under DDP the
        # images are decoded once and every rank then reads the cache.
        for split in ("train", "val", "test"):
            self._cache(split)

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        if split == "predict":
            return self._predict_images() if self.predict_dir is not None else None
        cache = self._cache(split)
        if cache is None:
            return None
        cached = torch.load(cache, weights_only=True)
        return cached["images"], cached["labels"]

    def image_names(self, split: str) -> list[str]:
        """Each image's path in ``split``'s order: relative to the root (``test/cat/1.png``), or to
        ``predict_dir`` for the images found there."""
        if split == "predict" and self.predict_dir is None:
            split = "test"
        if split not in self._names:
            self.load(split)
        return self._names[split]

    def _predict_images(self) -> tuple[Tensor, Tensor]:
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
        self._names["predict"] = [os.path.relpath(file, self.predict_dir) for file in files]
        return self._decode(files), torch.full((len(files),), -1)  # -1: no label

    def _decode(self, files: list[str]) -> Tensor:
        # Workers ignore Ctrl-C: the main process alone handles it, and ends them on its way out.
        workers = min(os.cpu_count() or 1, 8)
        with Pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
            arrays = pool.starmap(_decode, [(f, self.image_size) for f in files], chunksize=256)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _cache(self, split: str) -> Path | None:
        # Remembered for the process: prepare_data and setup list and check the folder once between them.
        if split not in self._caches:
            self._caches[split] = self._checked_cache(split)
        return self._caches[split]

    def _checked_cache(self, split: str) -> Path | None:
        """The split's cache file, decoded and written first if missing or stale; None without such a split."""
        folder = self.root / split
        if split == "val" and not folder.is_dir():
            return None
        files, labels = self._list(folder)
        self._names[split] = [os.path.relpath(file, self.root) for file in files]
        cache = self._cache_file(split, files)
        if not cache.is_file():
            self._write_cache(split, cache, {"images": self._decode(files), "labels": torch.tensor(labels)})
        return cache

    def _list(self, folder: Path) -> tuple[list[str], list[int]]:
        classes = _class_folders(folder)
        if classes != self.class_names:
            raise UsageError(f"class folders of {folder} {classes} differ from those of train/ {self.class_names}")
        files, labels = [], []
        for label, name in enumerate(self.class_names):
            # Plain strings and os.scandir: Path objects cost seconds over CIFAR-10's 60,000 files.
            with os.scandir(folder / name) as entries:
                found = sorted(
                    entry.path
                    for entry in entries
                    if not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                )
            if not found:
                raise UsageError(f"class folder {folder / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
            labels += [label] * len(found)
        return files, labels

    def _cache_file(self, split: str, files: list[str]) -> Path:
        listing = hashlib.sha256(str(self.image_size).encode())
        prefix = len(str(self.root))
        for file in files:
            stat = os.stat(file)
            listing.update(f"{file[prefix:]}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return self.cache_dir / f"{self._cache_prefix(split)}{listing.hexdigest()[:16]}.pt"

    def _cache_prefix(self, split: str) -> str:
        where = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        return f"{self.root.resolve().name}-{where}-{split}-"

    def _write_cache(self, split: str, cache: Path, content: dict[str, Tensor]) -> None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save(content, partial)
        os.replace(partial, cache)  # atomic: a reader never sees half a cache file
        for stale in cache.parent.glob(self._cache_prefix(split) + "*.pt"):
            if stale != cache:
                stale.unlink()


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder {folder} does not exist: expected <root>/train/<class>/<images> "
            "and <root>/test/<class>/<images> (and optionally <root>/val/<class>/<images>)"
        )
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _decode(path: str, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as err:  # PIL: unidentified, truncated or corrupt image
        raise UsageError(f"cannot read image {path}: {err}") from None
