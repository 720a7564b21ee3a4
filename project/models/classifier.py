"""The LightningModule for image classification: loss, metrics and what to log. The network is swappable."""

from typing import Callable, Optional

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from project.networks.convnet import ConvNet
from project.optim.configure import configure_optimizers
from project.optim.warmup_cosine import WarmupCosine


class ImageClassifier(LightningModule):
    """Cross-entropy training of ``network(num_classes)``; accuracy on validation and test.

    ``network``, ``optimizer`` and ``scheduler`` are callables the CLI builds from the config
    (``class_path`` + ``init_args``): the network gets ``num_classes`` (linked from the data), the
    optimizer the parameter groups, the scheduler the optimizer.
    """

    def __init__(
        self,
        network: Callable[[int], nn.Module] = ConvNet,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: Optional[LRSchedulerCallable] = WarmupCosine,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network = network(num_classes)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.val_acc = MulticlassAccuracy(num_classes)
        self.test_acc = MulticlassAccuracy(num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = self.loss(self(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        probabilities = self(batch[0]).softmax(dim=-1)
        confidence, label = probabilities.max(dim=-1)
        return {"label": label, "confidence": confidence}

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer, self.scheduler)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self(images)
        accuracy(logits, labels)
        self.log(f"{stage}/loss", self.loss(logits, labels))
        self.log(f"{stage}/acc", accuracy, prog_bar=True)
