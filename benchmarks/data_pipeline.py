"""Images per second over one training epoch: the template's loader vs the classic torchvision pipeline.

    python benchmarks/data_pipeline.py [--root IMAGE_FOLDER] [--batch-size 512]

Three pipelines over the same 50,000 CIFAR-shaped images, each timed over one epoch, including
augmentation and normalization:
- raw:      x[randperm] index slices, nothing else (the ceiling);
- template: TensorBatches + per-image random crop (pad 4) + flip + normalize, as training runs it;
- classic:  torchvision CIFAR10-style Dataset (PIL image per sample) + RandomCrop(32, padding=4) +
            RandomHorizontalFlip + ToTensor + Normalize, DataLoader(num_workers=2).
Images come from ``--root`` (an image folder, decoded once through the template's cache) or from
the synthetic dataset.
"""

import argparse
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from project.data.image_folder import ImageFolderDataModule
from project.data.synthetic import SyntheticDataModule


class ClassicCIFAR(Dataset):
    """What torchvision.datasets.CIFAR10.__getitem__ does: one PIL image per sample, then the transforms."""

    def __init__(self, images_hwc, labels, transform):
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def images_per_second(batches, count):
    start = time.perf_counter()
    for images, _ in batches:
        images.float().sum()  # touch the result so nothing stays lazy
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="an image folder (root/train/<class>/*); synthetic images if omitted")
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.root:
        data = ImageFolderDataModule(args.root, batch_size=args.batch_size, val_size=0)
    else:
        data = SyntheticDataModule(train_size=50000, test_size=16, val_size=0, batch_size=args.batch_size)
    data.setup("fit")
    images, labels = data.splits["train"]
    n = len(images) // args.batch_size * args.batch_size

    def raw():
        order = torch.randperm(len(images))
        return ((images[i], labels[i]) for i in order[:n].split(args.batch_size))

    def template():
        return (data.prepare_batch(batch, augment=True) for batch in data.train_dataloader())

    classic_transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ]
    )
    classic_set = ClassicCIFAR(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), classic_transform)
    classic = DataLoader(classic_set, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=2)

    results = {
        "raw": images_per_second(raw(), n),
        "template": images_per_second(template(), n),
        "classic": images_per_second(classic, n),
    }
    print(f"{'pipeline':<10}{'images/s':>12}{'vs classic':>12}")
    for name, rate in results.items():
        print(f"{name:<10}{rate:>12,.0f}{rate / results['classic']:>11.1f}x")


if __name__ == "__main__":
    main()
