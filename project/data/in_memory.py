"""The data path shared by image datasets: uint8 batches augmented and normalized on the training device.

A split is held in memory (one uint8 tensor on the training device), or, when too large for memory, streamed
from shards (``project/data/shards.py``); both give the same batches and go through the same augmentation."""

import warnings
from typing import TYPE_CHECKING, Literal

import torch
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from project.data.augment import center_crop, random_resized_crop, random_shift_and_flip
from project.data.batches import TensorBatches
from project.data.shards import Shards, std_mean_of_levels
from project.errors import UsageError

Split = tuple[Tensor, Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)
Flip = Literal["random", "alternating", "none"]
if TYPE_CHECKING:  # imported where a split streams: a run that streams nothing does not load LitData
    from project.data.shard_batches import ShardBatches

    Batches = TensorBatches | ShardBatches

# Lightning warns on every mid-epoch resume unless the loader itself has a state_dict; the
# datamodule's state_dict below restores the position instead (Lightning prefetches a batch, so a
# loader's own count would be one ahead).
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 images -> ``(images - mean) / std`` in float32, per channel: the data path's one normalization
    (training, evaluation and the exported model share it, so they see bit-identical inputs)."""
    # One fused pass, on the contiguous layout where the per-channel broadcast vectorizes.
    return torch.addcmul(-mean / std, images.float(), 1 / std)


class InMemoryImageDataModule(LightningDataModule):
    """Base for image datasets served as ``uint8`` batches, held in memory or streamed.

    A subclass sets ``class_names`` and implements ``load(split)``. This class decodes nothing
    twice: it loads each split once, moves it to the training device, and serves batches as index
    slices (``TensorBatches``); a split that ``load`` returns as ``Shards`` is streamed instead.
    After a batch reaches the device, training batches get a random
    shift of up to ``crop_padding`` pixels and a mirror per image, and every batch is normalized
    with the training images' per-channel mean and std.

    ``flip="alternating"`` is airbench's alternating flip (arXiv 2404.00498): each
    image is mirrored at random in the first epoch and the other way round in each epoch after, so
    any two consecutive epochs show both views of every image, where random flips repeat one view
    for a quarter of the images. airbench94 needs about 10% fewer steps for the same accuracy.

    Validation uses the dataset's own ``val`` split if it has one; otherwise ``val_size`` training
    images are held out (the same ones for every run); ``val_size=0`` trains on every training
    image and validates on the test set, as speed records report it (then the "best" checkpoint is
    chosen on test data).

    Images may be stored larger than the network sees them: with ``crop_size`` set, evaluation
    takes the central ``crop_size`` square, and training either a random ``crop_size`` window
    shifted as above, or, with ``random_crop_scale``, a random-resized crop (torchvision's
    ``RandomResizedCrop``) of the whole stored image.

    ``normalization``, ``(mean, std)`` per channel in [0, 1], replaces the training images'
    statistics: pretrained weights expect the normalization they were trained with (the CLI sets it
    from the network's ``preprocessing``).
    """

    class_names: list[str]
    crop_size: int | None = None
    random_crop_scale: tuple[float, float] | None = None
    normalization: tuple[list[float], list[float]] | None = None

    def __init__(self, batch_size: int, val_size: int, crop_padding: int = 4, flip: Flip = "random") -> None:
        super().__init__()
        if batch_size < 1:
            raise UsageError(f"data.batch_size must be >= 1, got {batch_size}")
        if val_size < 0:
            raise UsageError(f"data.val_size must be >= 0, got {val_size}")
        if crop_padding < 0:
            raise UsageError(f"data.crop_padding must be >= 0 pixels (0: no shift), got {crop_padding}")
        if flip not in ("random", "alternating", "none"):
            raise UsageError(f"data.flip must be 'random', 'alternating' or 'none', got {flip!r}")
        self.batch_size, self.val_size, self.crop_padding, self.flip = batch_size, val_size, crop_padding, flip
        self.splits: dict[str, Split | Shards] = {}
        # Where a checkpoint stopped: its epoch, the batches done in it, and their size.
        self.resume_epoch, self.resume_batch, self.resume_batch_size = None, 0, None
        self.predicted_indices: list[Tensor] = []  # each predict batch's image indices, in the order predicted

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _check_crop_padding(self, image_size: int) -> None:
        """The shift pads each image with its own reflection, which torch's reflect padding keeps narrower than the
        image: a subclass calls this once it knows the side of the images it shifts."""
        if self.crop_padding >= image_size:
            raise UsageError(
                f"data.crop_padding must be smaller than the images it shifts ({image_size} pixels), "
                f"got {self.crop_padding}"
            )

    def load(self, split: str) -> Split | Shards | None:
        """The uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)`` of ``split`` ("train", "val", "test" or
        "predict"), or None if the dataset has no such split: without "val", ``val_size`` training images are held
        out; without "predict", ``predict`` runs on "test". Unknown labels are -1. A split too large for memory
        may be returned as ``Shards`` to stream (not "predict"; no held-out validation from it)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if stage == "predict" and "predict" not in self.splits:
            predict = self.load("predict")
            if predict is not None:
                device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
                self.splits["predict"] = (predict[0].to(device), predict[1].to(device))
        if "train" in self.splits:
            return
        train, val = self.load("train"), self.load("val")
        if val is None and self.val_size > 0:
            train, val = self._hold_out(train)
        test = self.load("test")
        if self.normalization is None:
            self.std, self.mean = (train.std, train.mean) if isinstance(train, Shards) else _channel_std_mean(train[0])
        else:  # in the stored uint8 levels, shaped to broadcast over a batch
            self.mean, self.std = (torch.tensor(values).mul(255).view(1, -1, 1, 1) for values in self.normalization)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if val is None:
            rank_zero_info(
                "data.val_size 0: validation runs on the test split, so the best checkpoint (and a search's best "
                "trial) is chosen on test data"
            )
        splits = {"train": train, "val": val if val is not None else test, "test": test}
        self.splits.update({name: _to(split, device) for name, split in splits.items()})
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        # Drawn from the run's seed, like the batch order: a rerun mirrors the same images.
        if self.flip == "alternating":
            first_epoch = torch.Generator().manual_seed(torch.initial_seed())
            self.mirrored_first = (torch.rand(_length(train), generator=first_epoch) < 0.5).to(device)
        # Augmentation draws from its own generator, which checkpoints carry (see state_dict).
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.augment_rng = torch.Generator(device).manual_seed(torch.initial_seed() + rank)

    def train_dataloader(self) -> "Batches":
        # drop_last: a last tiny batch gives noisy BatchNorm statistics and an outsized step.
        world_size = self.trainer.world_size if self.trainer else 1
        per_device = _length(self.splits["train"]) // world_size
        if per_device < self.batch_size:  # a small folder: one batch of every training image, rather than none
            on_each = f" per device ({world_size} devices)" if world_size > 1 else ""
            warnings.warn(
                f"data.batch_size {self.batch_size} is larger than the {per_device} training "
                f"images{on_each}: lowered to {per_device}, one batch per epoch"
            )
            self.batch_size = per_device
        if (
            self.resume_batch_size not in (None, self.batch_size)
            and 0 < self.resume_batch < per_device // self.resume_batch_size
        ):
            self._continue_with_another_batch_size()
        batches = self._batches("train", shuffle=True, drop_last=True)
        # The trainer's epoch is not restored yet when it first asks for this loader (to count the run's
        # steps), so a resume takes the checkpoint's own epoch. One taken at an epoch's end resumes with the
        # next epoch, at its first batch.
        epoch = self.resume_epoch
        if epoch is None:
            epoch = self.trainer.current_epoch if self.trainer else 0
        if self.resume_batch < len(batches):
            batches.start_at(epoch, self.resume_batch)
        else:
            batches.start_at(epoch + 1, 0)
        self.resume_epoch, self.resume_batch, self.resume_batch_size = None, 0, None
        return batches

    def _batches(self, split: str, shuffle: bool, drop_last: bool) -> "Batches":
        """Under DDP, training batches are sharded across ranks (disjoint, the same count on every rank);
        every rank evaluates the whole of the other splits."""
        data, seed = self.splits[split], torch.initial_seed()
        if isinstance(data, Shards):
            return data.batches(self.batch_size, shuffle, drop_last, seed, sharded=split == "train")
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if split != "train":
            rank, world_size = 0, 1
        return TensorBatches(*data, self.batch_size, shuffle, drop_last, seed, rank, world_size)

    def state_dict(self) -> dict:
        """Where training stands, saved in checkpoints: a resumed run draws the batches and
        augmentations an uninterrupted run would have (on one device; under DDP every rank resumes
        with rank 0's augmentation generator)."""
        if self.trainer is None or not self.splits:
            return {}
        batches_done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = self.trainer.current_epoch
        return {
            "epoch": epoch,
            "batch": batches_done,
            "batch_size": self.batch_size,
            "augment_rng": self.augment_rng.get_state(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self.resume_epoch, self.resume_batch = state_dict.get("epoch", 0), state_dict["batch"]
            self.resume_batch_size = state_dict.get("batch_size")
            self.augment_rng.set_state(state_dict["augment_rng"])

    def _continue_with_another_batch_size(self) -> None:
        # The epoch's order is the same permutation at any batch size: go on from the first whole batch of the
        # images not yet seen, and say so, since the images of a partial batch are seen again.
        seen = self.resume_batch * self.resume_batch_size
        self.resume_batch = seen // self.batch_size
        again = seen - self.resume_batch * self.batch_size
        warnings.warn(
            f"the checkpoint stopped epoch {self.resume_epoch} after {seen} images (batches of "
            f"{self.resume_batch_size}); with data.batch_size {self.batch_size} this resume goes on from batch "
            f"{self.resume_batch} of that epoch"
            + (f", so its last {again} images are seen again" if again else "")
            + ". The schedule keeps the checkpoint's length in steps"
        )

    def val_dataloader(self) -> "Batches":
        return self._batches("val", shuffle=False, drop_last=False)

    def test_dataloader(self) -> "Batches":
        return self._batches("test", shuffle=False, drop_last=False)

    def predict_dataloader(self) -> "Batches":
        self.predicted_indices = []
        return self._batches("predict" if "predict" in self.splits else "test", shuffle=False, drop_last=False)

    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the stored training images."""
        train = self.splits["train"]
        return train.image_shape if isinstance(train, Shards) else tuple(train[0].shape[1:])

    def plain_train_images(self, count: int) -> Tensor:
        """Up to ``count`` training images drawn with the run's seed, normalized but not augmented, on the
        training device: what a layer fitted from data (``ConvNet.fit_whitening``) is fitted to."""
        train = self.splits["train"]
        generator = torch.Generator().manual_seed(torch.initial_seed())
        chosen = torch.randperm(_length(train), generator=generator)[:count]
        if isinstance(train, Shards):
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            batch = tuple(part.to(device) for part in train.images(chosen.tolist()))
        else:
            images, labels = train
            chosen = chosen.to(images.device)
            batch = images[chosen], labels[chosen], chosen
        return self.prepare_batch(batch, augment=False)[0]

    def on_after_batch_transfer(
        self, batch: tuple[Tensor, Tensor, Tensor], dataloader_idx: int
    ) -> tuple[Tensor, Tensor]:
        training = self.trainer is not None and self.trainer.training
        if self.trainer is not None and self.trainer.predicting:  # streamed batches come in the workers' order
            self.predicted_indices.append(batch[2].cpu())
        return self.prepare_batch(batch, augment=training, epoch=self.trainer.current_epoch if training else 0)

    def prepare_batch(
        self, batch: tuple[Tensor, Tensor, Tensor], augment: bool, epoch: int = 0
    ) -> tuple[Tensor, Tensor]:
        """A uint8 ``(images, labels, indices)`` batch on its device -> augmented (if ``augment``, as in
        ``epoch``) and normalized float images, labels."""
        images, labels, indices = batch
        if augment and self.random_crop_scale is not None:
            size = self.crop_size or images.shape[-1]
            mirror = self._mirror(indices, epoch)
            images = random_resized_crop(images, size, self.random_crop_scale, mirror, self.augment_rng)
        else:
            if self.crop_size is not None:
                images = center_crop(images, self.crop_size)
            if augment and (self.crop_padding or self.flip != "none"):
                mirror = self._mirror(indices, epoch)
                images = random_shift_and_flip(images, self.crop_padding, mirror, self.augment_rng)
        images = normalize(images, self.mean, self.std)
        # Convolutions run faster on channels-last input, on CPUs and (with channels-last weights,
        # see ImageClassifier.setup) on GPUs.
        return images.contiguous(memory_format=torch.channels_last), labels

    def _mirror(self, indices: Tensor, epoch: int) -> Tensor | None:
        if self.flip == "random":
            return torch.rand(len(indices), device=indices.device, generator=self.augment_rng) < 0.5
        if self.flip == "alternating":
            return self.mirrored_first[indices] ^ (epoch % 2 == 1)
        return None

    def _hold_out(self, train: Split) -> tuple[Split, Split]:
        images, labels = train
        if self.val_size >= len(images):
            raise UsageError(
                f"data.val_size must be smaller than the training set ({len(images)} images), got {self.val_size}"
            )
        # A fixed generator, not the run's seed: every run validates on the same images.
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        val, kept = order[: self.val_size], order[self.val_size :]
        return (images[kept], labels[kept]), (images[val], labels[val])


def _to(split: Split | Shards, device: torch.device) -> Split | Shards:
    return split if isinstance(split, Shards) else (split[0].to(device), split[1].to(device))


def _length(split: Split | Shards) -> int:
    return len(split) if isinstance(split, Shards) else len(split[0])


def _channel_std_mean(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel std and mean of uint8 images, shaped (1, C, 1, 1) to broadcast over a batch."""
    # From each channel's histogram of its 256 levels: exact, and 5x faster than a float copy of the images.
    counts = torch.stack([torch.bincount(channel.flatten(), minlength=256) for channel in images.transpose(0, 1)])
    return std_mean_of_levels(counts)
