"""The LightningModule for image classification: loss, metrics and what to log. The network is swappable."""

import copy
from collections.abc import Callable

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from project.errors import UsageError
from project.models.init_weights import load_init_weights
from project.models.tta import logits_with_tta
from project.networks.convnet import ConvNet
from project.optim.configure import check_settings, configure_optimizers
from project.optim.warmup_cosine import WarmupCosine

WHITENING_IMAGES = 5000  # airbench94 fits its whitening layer to the patches of 5,000 training images


class ImageClassifier(LightningModule):
    """Cross-entropy training of ``network(num_classes=...)``; accuracy on validation and test.

    ``network``, ``optimizer`` and ``scheduler`` are callables the CLI builds from the config
    (``class_path`` + ``init_args``): the network gets ``num_classes`` (linked from the data), the
    optimizer the parameter groups, the scheduler the optimizer. A network with a ``fit_whitening``
    method (``ConvNet``) is fitted to plain training images when fit starts (``on_fit_start``).

    Args:
        network: Builds the network from the number of classes, given as ``num_classes=``: a ``ConvNet``, your
            own ``nn.Module``, or a torchvision model function (``torchvision.models.resnet18``, from scratch).
        num_classes: Set from the datamodule by the CLI.
        optimizer: Builds the optimizer from two parameter groups (see ``project.optim.configure``).
        scheduler: Builds the LR scheduler, stepped once per optimizer step; null for a constant LR.
        label_smoothing: Of the cross-entropy loss; airbench94 uses 0.2.
        bias_lr_scale: LR multiplier for biases and norm weights; airbench94 gives BatchNorm biases 64.
        bias_weight_decay: Decay biases and norm weights too, as strongly per step as the weights.
        body_lr_scale: LR multiplier for the network's parameters outside its ``head`` when they start trained
            (a network with ``pretrained`` true, or ``init_weights``): below 1, the body changes less than the new
            head (fine-tuning). A network trained from scratch trains at the full LR throughout.
        init_weights: Start from these weights: a run's checkpoint or a saved state dict (``load_init_weights``);
            a head of another shape is initialized anew. A new run: new optimizer, schedule and run directory.
        tta_level: Test-time augmentation for test and predict: 0 none, 1 mirror, 2 mirror and 1-pixel shifts.
        compile: Compile the network with ``torch.compile`` (the first steps take longer; later ones run faster
            on a GPU). The state dict keeps its keys, so checkpoints load either way.
    """

    # What a fit logs (training_step, validation_step): the checkpoint callback checks its monitor against it
    # before the first step (project/callbacks/checkpoint.py). A subclass that logs others says so with its own.
    metrics_logged_in_fit = ("train/loss", "val/loss", "val/acc")

    def __init__(
        self,
        network: Callable[[int], nn.Module] = ConvNet,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = WarmupCosine,
        label_smoothing: float = 0.0,
        bias_lr_scale: float = 1.0,
        bias_weight_decay: bool = False,
        body_lr_scale: float = 1.0,
        init_weights: str | None = None,
        tta_level: int = 0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if tta_level not in (0, 1, 2):
            raise UsageError(f"model.tta_level must be 0, 1 or 2, got {tta_level}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise UsageError(f"model.label_smoothing must be in [0, 1], got {label_smoothing}")
        if num_classes < 2:
            raise UsageError(f"model.num_classes must be >= 2 (a classifier needs two or more), got {num_classes}")
        if bias_lr_scale <= 0:
            raise UsageError(f"model.bias_lr_scale must be > 0, got {bias_lr_scale}")
        if body_lr_scale < 0:
            raise UsageError(f"model.body_lr_scale must be >= 0, got {body_lr_scale}")
        check_settings(optimizer, scheduler)
        self.save_hyperparameters()
        self.network = network(num_classes=num_classes)  # by keyword: torchvision models take weights first
        self.optimizer, self.scheduler = optimizer, scheduler
        self.bias_lr_scale, self.bias_weight_decay, self.tta_level = bias_lr_scale, bias_weight_decay, tta_level
        self.body_lr_scale, self.init_weights = body_lr_scale, init_weights
        self.compile_network = compile
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def __deepcopy__(self, memo: dict) -> "ImageClassifier":
        # A copy (EMAWeightAveraging's average) copies the weights and settings and shares the optimizer and
        # scheduler factories: jsonargparse's hold the CLI, and through it the trainer and its logger's open files.
        for factory in (self.optimizer, self.scheduler):
            memo[id(factory)] = factory
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return copied

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def setup(self, stage: str) -> None:
        # cuDNN's convolutions are fastest on channels-last tensors; moving to the GPU keeps the layout.
        if self.trainer.strategy.root_device.type == "cuda":
            self.network.to(memory_format=torch.channels_last)
        if self.compile_network:
            self.network.compile()  # in place: unlike torch.compile(network), keeps the state dict's keys

    def on_fit_start(self) -> None:
        # After a resume's checkpoint is restored (trainer.ckpt_path is known here): a resumed run keeps its own.
        if self.init_weights is not None and self.trainer.ckpt_path is None:
            load_init_weights(self.network, self.init_weights)
        # A layer fitted from data (ConvNet's whitening) is fitted here: once, before the sanity check
        # and the first step, outside the autocast of the training step. A run resumed from a
        # checkpoint has its filters restored by now and keeps them.
        if not hasattr(self.network, "fit_whitening") or self.network.whitening_fitted:
            return
        self.network.fit_whitening(self._plain_training_images(WHITENING_IMAGES))
        if self.trainer.world_size > 1:  # eigh may differ in its last bits between devices: rank 0's for all
            state = self.trainer.strategy.broadcast({k: v.cpu() for k, v in self.network.state_dict().items()})
            self.network.load_state_dict(state)

    def _plain_training_images(self, count: int) -> Tensor:
        data = self.trainer.datamodule
        if hasattr(data, "plain_train_images"):  # InMemoryImageDataModule: random images, not augmented
            return data.plain_train_images(count)
        if data is None:
            raise UsageError(
                "ImageClassifier fits the network's whitening layer to training images from the "
                "datamodule: pass one (trainer.fit(model, datamodule=...)), not bare dataloaders"
            )
        return next(iter(data.train_dataloader()))[0][:count].to(self.device)  # its first batch, as it comes

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = self.loss(self(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val", self.val_acc)  # the logits, for callbacks (TensorBoardPictures)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        images, targets = batch
        probabilities = logits_with_tta(self.network, images, self.tta_level).softmax(dim=-1)
        probability, label = probabilities.max(dim=-1)
        return {"label": label, "probability": probability, "target": targets}  # target -1: unlabeled

    def configure_optimizers(self):
        trained_body = self.init_weights is not None or getattr(self.network, "pretrained", False)
        body_lr_scale = self.body_lr_scale if trained_body else 1.0
        return configure_optimizers(
            self, self.optimizer, self.scheduler, self.bias_lr_scale, self.bias_weight_decay, body_lr_scale
        )

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy) -> Tensor:
        images, labels = batch
        # Validation picks checkpoints and runs every epoch: no TTA there, to keep it cheap.
        logits = logits_with_tta(self.network, images, self.tta_level if stage == "test" else 0)
        accuracy(logits, labels)
        # Under DDP every rank evaluates the whole set: syncing averages equal values, and says so to Lightning.
        self.log(f"{stage}/loss", self.loss(logits, labels), sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)
        return logits
