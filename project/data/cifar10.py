"""CIFAR-10 through torchvision: downloaded into ``data_dir`` on first use, then held in memory."""

import torch
from torch import Tensor
from torchvision.datasets import CIFAR10

from project.data.in_memory import Flip, InMemoryImageDataModule
from project.errors import UsageError

TRAIN_IMAGES, IMAGE_SIZE = 50_000, 32


class CIFAR10DataModule(InMemoryImageDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images, 32x32, 10 classes.

    ``val_size`` training images are held out for validation (see ``InMemoryImageDataModule``).
    """

    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 512,
        val_size: int = 5000,
        crop_padding: int = 4,
        flip: Flip = "random",
    ) -> None:
        super().__init__(batch_size=batch_size, val_size=val_size, crop_padding=crop_padding, flip=flip)
        if val_size >= TRAIN_IMAGES:
            raise UsageError(
                f"data.val_size must be smaller than the training set ({TRAIN_IMAGES} images), got {val_size}"
            )
        self._check_crop_padding(IMAGE_SIZE)
        self.data_dir = data_dir
        self.download = download

    def prepare_data(self) -> None:
        if not self.download:
            return
        try:
            CIFAR10(self.data_dir, train=True, download=True)
        except OSError as err:  # no network, DNS failure, refused or dropped connection
            raise FileNotFoundError(self._missing(f"downloading it failed ({err})")) from None

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        if split not in ("train", "test"):
            return None
        try:
            dataset = CIFAR10(self.data_dir, train=split == "train", download=False)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            raise FileNotFoundError(self._missing("it is not there or is incomplete")) from None
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(dataset.targets)

    def _missing(self, why: str) -> str:
        return (
            f"CIFAR-10 was not found in data_dir={self.data_dir!r}: {why}. Expected the folder "
            f"{self.data_dir}/cifar-10-batches-py as torchvision's CIFAR10 downloads it (the archive "
            f"cifar-10-python.tar.gz, unpacked there). Copy it there from a machine with network, point "
            f"--data.data_dir at a folder that holds it, or try again with network."
        )
