"""airbench94's network: a compact, fast CIFAR-sized CNN as a plain nn.Module, usable without Lightning."""

import torch
from torch import Tensor, nn

from project.errors import UsageError


class ConvNet(nn.Module):
    """The network of airbench94 (Keller Jordan, 2024; arXiv 2404.00498), 94% on CIFAR-10 in 10 epochs.

    A fixed 2x2 patch-whitening convolution, then stages of conv -> max-pool -> BN -> GELU -> conv
    -> BN -> GELU, a global max-pool and a linear head. The whitening filters are the eigenvectors
    of the covariance of 2x2 patches: call ``fit_whitening`` once with plain training images before
    training (``ImageClassifier`` does, in ``on_fit_start``). They are kept in the state dict, so a
    checkpoint never refits them. ``forward`` only computes: no fitting, no branch on tensor values,
    so ``torch.compile(fullgraph=True)`` takes it whole.

    Args:
        num_classes: Outputs of the head.
        widths: Channels of each stage; each stage halves the resolution.
        in_channels: Channels of the input images.
        batchnorm_momentum: torch's BatchNorm momentum; airbench94 uses 0.4 (0.6 in its own convention).
    """

    def __init__(
        self,
        num_classes: int,
        widths: tuple[int, ...] = (64, 256, 256),
        in_channels: int = 3,
        batchnorm_momentum: float = 0.4,
    ) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise UsageError(f"ConvNet widths must be one or more channel counts >= 1, got {list(widths)}")
        if num_classes < 1:
            raise UsageError(f"ConvNet num_classes must be >= 1, got {num_classes}")
        if in_channels < 1:
            raise UsageError(f"ConvNet in_channels must be >= 1, got {in_channels}")
        if not 0.0 <= batchnorm_momentum <= 1.0:
            raise UsageError(f"ConvNet batchnorm_momentum must be in [0, 1], got {batchnorm_momentum}")
        whitened = 2 * in_channels * 2 * 2  # each 2x2 patch eigenvector, and its negative
        # Fitted, not trained. (airbench94 trains a bias here for 3 epochs; a bias-free layer keeps
        # the network free of epoch-dependent rules, and the 1-D parameters are all BatchNorm biases.)
        self.whiten = nn.Conv2d(in_channels, whitened, kernel_size=2, bias=False)
        self.whiten.weight.requires_grad_(False)
        self.register_buffer("whitening_fitted", torch.tensor(False))
        stages = [_Stage(w_in, w_out, batchnorm_momentum) for w_in, w_out in zip((whitened, *widths[:-1]), widths)]
        self.features = nn.Sequential(nn.GELU(), *stages, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        # airbench94 scales the logits by 1/9: large logits from a max-pooled head train unstably.
        self.logit_scale = 1 / 9

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(self.whiten(images))) * self.logit_scale

    @torch.no_grad()
    def fit_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from the 2x2 patches of ``images`` (normalized, N x C x H x W).

        Computed in float32 whatever autocast is active: the same images give the same filters under
        every precision (in bfloat16 the covariance would be off, and CUDA's ``eigh`` refuses it).
        """
        channels = images.shape[1]
        with torch.autocast(images.device.type, enabled=False):
            patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, channels * 4)
            covariance = patches.T @ patches / len(patches)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = eigenvectors.T.reshape(-1, channels, 2, 2) / torch.sqrt(eigenvalues + eps).view(-1, 1, 1, 1)
        self.whiten.weight.copy_(torch.cat((filters, -filters)))
        self.whitening_fitted.fill_(True)


class _Stage(nn.Sequential):
    def __init__(self, width_in: int, width_out: int, batchnorm_momentum: float) -> None:
        super().__init__(
            _conv(width_in, width_out),
            nn.MaxPool2d(2),
            _batchnorm(width_out, batchnorm_momentum),
            nn.GELU(),
            _conv(width_out, width_out),
            _batchnorm(width_out, batchnorm_momentum),
            nn.GELU(),
        )


def _conv(width_in: int, width_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(width_in, width_out, kernel_size=3, padding=1, bias=False)
    # airbench94: the first width_in filters start as the identity, so each stage starts near a pass-through.
    nn.init.dirac_(conv.weight.data[:width_in])
    return conv


def _batchnorm(width: int, momentum: float) -> nn.BatchNorm2d:
    # airbench94: no learned scale (the next conv can scale), only the shift; eps 1e-12.
    norm = nn.BatchNorm2d(width, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)
    return norm
