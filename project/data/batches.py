"""Batches sliced out of tensors that already sit on the training device."""

import math
from collections.abc import Iterator

import torch
from torch import Tensor


class TensorBatches:
    """Iterates ``(images[i], labels[i], i)`` for index slices ``i`` of a fresh permutation each pass.

    The indices travel with the batch so that per-image state (the alternating mirror) can follow
    each image across epochs.

    No workers, no collate, no per-sample Python: one ``randperm`` per epoch and one index per batch.
    The permutation is drawn from ``seed`` and the epoch that ``set_epoch`` was given: Lightning
    calls it at each epoch start, as for a ``DistributedSampler`` (a loop of your own calls it too).
    Under DDP every rank draws the same permutation and takes every
    ``world_size``-th index from ``rank`` on, cut to the same length on every rank, so the shards
    are disjoint and all ranks run the same number of batches.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.skip = 0, 0
        self.shard_size = len(images) // world_size

    # Lightning calls `loader.sampler.set_epoch(epoch)` at each epoch start, and reads `batch_sampler`
    # where a loader has a sampler: this loader is its own sampler, without a batch sampler.
    batch_sampler = None

    @property
    def sampler(self) -> "TensorBatches":
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def start_at(self, epoch: int, batch: int) -> None:
        """The next pass is epoch ``epoch``, from its ``batch``-th batch (to resume mid-epoch)."""
        self.epoch, self.skip = epoch, batch

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def indices(self) -> Tensor:
        """This rank's indices for the coming pass, in order."""
        if self.shuffle:
            order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(len(self.images))
        return order[self.rank :: self.world_size][: self.shard_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        indices = self.indices().to(self.images.device)
        skip, self.skip = self.skip, 0
        for start in range(skip * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch], batch
