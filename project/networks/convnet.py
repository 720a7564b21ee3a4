"""A compact, fast CIFAR-sized CNN: a plain nn.Module, usable without Lightning."""

from torch import Tensor, nn


class ConvNet(nn.Module):
    """VGG-style network after airbench94 (Keller Jordan): a stem, then stages that halve the resolution.

    Each stage is conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU; a global max-pool and a
    linear layer make the logits. Works for any image size of at least ``2 ** len(widths)`` pixels.
    """

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (64, 256, 256), in_channels: int = 3) -> None:
        super().__init__()
        stem_width = widths[0] // 2
        layers = [_conv_bn_gelu(in_channels, stem_width)]
        for width_in, width_out in zip((stem_width, *widths[:-1]), widths):
            layers += [
                nn.Conv2d(width_in, width_out, kernel_size=3, padding=1, bias=False),
                nn.MaxPool2d(2),
                *_bn_gelu(width_out),
                _conv_bn_gelu(width_out, width_out),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        # airbench94 scales the logits by 1/9: large logits from a max-pooled head train unstably.
        self.logit_scale = 1 / 9

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images)) * self.logit_scale


def _bn_gelu(width: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(width), nn.GELU()]


def _conv_bn_gelu(width_in: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(width_in, width_out, kernel_size=3, padding=1, bias=False), *_bn_gelu(width_out))
