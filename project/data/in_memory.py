"""The data path shared by small-image datasets: one uint8 tensor on the training device, augmented there."""

from typing import Optional

import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor

from project.data.augment import random_shift_and_flip
from project.data.batches import TensorBatches

Split = tuple[Tensor, Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)


class InMemoryImageDataModule(LightningDataModule):
    """Base for datasets that fit in memory as ``uint8`` images.

    A subclass sets ``class_names`` and implements ``load(split)``. This class decodes nothing
    twice: it loads each split once, moves it to the training device, and serves batches as index
    slices (``TensorBatches``). After a batch reaches the device, training batches get a random
    shift of up to ``crop_padding`` pixels and a random mirror per image, and every batch is
    normalized with the training images' per-channel mean and std.

    Validation uses the dataset's own ``val`` split if it has one; otherwise ``val_size`` training
    images are held out (the same ones for every run); ``val_size=0`` trains on every training
    image and validates on the test set, as speed records report it (then the "best" checkpoint is
    chosen on test data).
    """

    class_names: list[str]

    def __init__(self, batch_size: int, val_size: int, crop_padding: int = 4, flip: bool = True) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if val_size < 0:
            raise ValueError(f"data.val_size must be >= 0, got {val_size}")
        self.batch_size, self.val_size, self.crop_padding, self.flip = batch_size, val_size, crop_padding, flip
        self.splits: dict[str, Split] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, split: str) -> Optional[Split]:
        """The images and labels of ``split`` ("train", "val" or "test"); None if the dataset has no such split."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        train, val = self.load("train"), self.load("val")
        if val is None and self.val_size > 0:
            train, val = self._hold_out(train)
        test = self.load("test")
        self.std, self.mean = _channel_std_mean(train[0])
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        splits = {"train": train, "val": val if val is not None else test, "test": test}
        self.splits = {name: (images.to(device), labels.to(device)) for name, (images, labels) in splits.items()}
        self.mean, self.std = self.mean.to(device), self.std.to(device)

    def train_dataloader(self) -> TensorBatches:
        # drop_last: a last tiny batch gives noisy BatchNorm statistics and an outsized step.
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return TensorBatches(*self.splits["train"], self.batch_size, shuffle=True, drop_last=True,
                             seed=torch.initial_seed(), rank=rank, world_size=world_size)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["val"], self.batch_size, shuffle=False, drop_last=False)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["test"], self.batch_size, shuffle=False, drop_last=False)

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Split, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        return self.prepare_batch(batch, augment=self.trainer is not None and self.trainer.training)

    def prepare_batch(self, batch: Split, augment: bool) -> tuple[Tensor, Tensor]:
        """A uint8 batch on its device -> augmented (if ``augment``) and normalized float images, labels."""
        images, labels = batch
        if augment and (self.crop_padding or self.flip):
            images = random_shift_and_flip(images, self.crop_padding, self.flip)
        # One fused pass, on the contiguous layout where the per-channel broadcast vectorizes.
        images = torch.addcmul(-self.mean / self.std, images.float(), 1 / self.std)
        # Convolutions run faster on channels-last input, on CPUs and (with channels-last weights,
        # see ImageClassifier.setup) on GPUs.
        return images.contiguous(memory_format=torch.channels_last), labels

    def _hold_out(self, train: Split) -> tuple[Split, Split]:
        images, labels = train
        if self.val_size >= len(images):
            raise ValueError(f"data.val_size must be smaller than the training set ({len(images)} images), "
                             f"got {self.val_size}")
        # A fixed generator, not the run's seed: every run validates on the same images.
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        val, kept = order[: self.val_size], order[self.val_size :]
        return (images[kept], labels[kept]), (images[val], labels[val])


def _channel_std_mean(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel std and mean of uint8 images, shaped (1, C, 1, 1) to broadcast over a batch."""
    std_mean = [torch.std_mean(channel.float()) for channel in images.transpose(0, 1)]
    std = torch.tensor([std for std, _ in std_mean]).view(1, -1, 1, 1)
    mean = torch.tensor([mean for _, mean in std_mean]).view(1, -1, 1, 1)
    return std, mean
