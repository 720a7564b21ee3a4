"""The data path shared by small-image datasets: one uint8 tensor in memory, augmentation on the device."""

from typing import Optional

import torch
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from project.data.augment import random_crop, random_flip


class InMemoryImageDataModule(LightningDataModule):
    """Base for datasets that fit in memory as ``uint8`` images ``(N, C, H, W)`` with ``int64`` labels.

    A subclass sets ``class_names`` and implements ``load(train)``. This class splits a
    validation set off the training images (the same split for every run), and, after each batch
    reaches the device, applies random crop (padding 4) and flip to training batches and
    normalizes every batch with the training images' per-channel mean and std.
    """

    class_names: list[str]

    def __init__(self, batch_size: int, val_size: int, augment: bool = True) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.val_size = val_size
        self.augment = augment
        self.train_set: Optional[TensorDataset] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, train: bool) -> tuple[Tensor, Tensor]:
        """The training (``train=True``) or test images as ``uint8 (N, C, H, W)``, and their labels."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        images, labels = self.load(train=True)
        if not 0 < self.val_size < len(images):
            raise ValueError(f"data.val_size must be between 1 and {len(images) - 1} (the training set has "
                             f"{len(images)} images), got {self.val_size}")
        # A fixed generator, not the run's seed: every run validates on the same images.
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        val, train = order[: self.val_size], order[self.val_size :]
        self.train_set = TensorDataset(images[train], labels[train])
        self.val_set = TensorDataset(images[val], labels[val])
        self.test_set = TensorDataset(*self.load(train=False))
        channels = self.train_set.tensors[0].transpose(0, 1)
        std_mean = [torch.std_mean(channel.float()) for channel in channels]
        self.std = torch.tensor([std for std, _ in std_mean]).view(1, -1, 1, 1)
        self.mean = torch.tensor([mean for _, mean in std_mean]).view(1, -1, 1, 1)

    def train_dataloader(self) -> DataLoader:
        # drop_last: a last tiny batch gives noisy BatchNorm statistics and an outsized step.
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> tuple[Tensor, Tensor]:
        images, labels = batch
        if self.augment and self.trainer is not None and self.trainer.training:
            images = random_flip(random_crop(images, padding=4))
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() - mean) / std, labels
