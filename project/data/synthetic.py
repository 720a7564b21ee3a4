"""A learnable dataset made from a seed: no files, no network. Used by the tests and for smoke runs."""

import torch
import torch.nn.functional as F
from torch import Tensor

from project.data.in_memory import Flip, InMemoryImageDataModule
from project.errors import UsageError


class SyntheticDataModule(InMemoryImageDataModule):
    """CIFAR-shaped images: each class is a smooth random colour pattern, each image that pattern plus noise.

    The same ``seed`` gives the same images; train and test images are drawn independently from
    the same class patterns, so test accuracy measures generalization to new noise.
    """

    def __init__(
        self,
        num_classes: int = 10,
        train_size: int = 2048,
        test_size: int = 512,
        image_size: int = 32,
        noise: float = 0.35,
        seed: int = 0,
        batch_size: int = 64,
        val_size: int = 512,
        crop_padding: int = 4,
        flip: Flip = "random",
    ) -> None:
        super().__init__(batch_size=batch_size, val_size=val_size, crop_padding=crop_padding, flip=flip)
        if num_classes < 2:
            raise UsageError(f"data.num_classes must be >= 2 (a classifier needs two or more), got {num_classes}")
        for name, size in (("train_size", train_size), ("test_size", test_size)):
            if size < 1:
                raise UsageError(f"data.{name} must be >= 1 image, got {size}")
        if val_size >= train_size:
            raise UsageError(
                f"data.val_size must be smaller than the training set ({train_size} images), got {val_size}"
            )
        if image_size < 1:
            raise UsageError(f"data.image_size must be >= 1 pixel, got {image_size}")
        self._check_crop_padding(image_size)
        if noise < 0:
            raise UsageError(f"data.noise must be >= 0 (the std of the noise added to each image), got {noise}")
        self.class_names = [f"class_{i}" for i in range(num_classes)]
        self.train_size, self.test_size, self.image_size = train_size, test_size, image_size
        self.noise, self.seed = noise, seed

    def load(self, split: str) -> tuple[Tensor, Tensor] | None:
        if split not in ("train", "test"):
            return None
        generator = torch.Generator().manual_seed(self.seed)
        # 4x4 colour grids blown up to the image size: coarse enough to survive a 4-pixel crop shift.
        grids = torch.rand(self.num_classes, 3, 4, 4, generator=generator)
        patterns = F.interpolate(grids, size=self.image_size, mode="bilinear", align_corners=False)
        generator.manual_seed(self.seed + (1 if split == "train" else 2))
        size = self.train_size if split == "train" else self.test_size
        labels = torch.randint(0, self.num_classes, (size,), generator=generator)
        noise = self.noise * torch.randn(size, 3, self.image_size, self.image_size, generator=generator)
        images = (patterns[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return images, labels
