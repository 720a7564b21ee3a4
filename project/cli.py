"""The one place that knows data, model, optimizer, scheduler and trainer: LightningCLI and its defaults."""

import os
import sys

import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

# Imported so that configs and flags can name these classes by their short names
# (`class_path: WarmupCosine`, `--data SyntheticDataModule`).
from project.callbacks.lookahead import Lookahead  # noqa: F401
from project.callbacks.prediction_writer import PredictionWriter
from project.data.cifar10 import CIFAR10DataModule  # noqa: F401
from project.data.image_folder import ImageFolderDataModule  # noqa: F401
from project.data.synthetic import SyntheticDataModule  # noqa: F401
from project.models.classifier import ImageClassifier  # noqa: F401
from project.networks.convnet import ConvNet  # noqa: F401
from project.optim.warmup_cosine import WarmupCosine  # noqa: F401


class CLI(LightningCLI):
    """LightningCLI with the template's defaults.

    - Any LightningModule and LightningDataModule can be named by ``class_path``.
    - No ``--optimizer`` / ``--lr_scheduler`` at the top level: LightningCLI would step such a
      scheduler once per *epoch*, before the trainer can size it. Optimizer and scheduler are
      arguments of the model instead (``--model.optimizer``, ``--model.scheduler``).
    - Each run logs to its own ``logs/<name>/version_<n>/``: TensorBoard events, ``config.yaml``,
      ``checkpoints/last.ckpt`` and the best checkpoint by ``val/acc``.
    - On a GPU, ``bf16-mixed`` precision unless ``--trainer.precision`` says otherwise.
    """

    def __init__(self, args=None, run: bool = True) -> None:
        super().__init__(
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            trainer_defaults={
                "logger": {
                    "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "logs", "name": "default"},
                },
                "callbacks": [LearningRateMonitor(logging_interval="step"), PredictionWriter()],
            },
            # Run directories are versioned; this only matters with `--trainer.logger false`.
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                subcommand: {"epilog": "Each part has its own help, e.g. `main.py fit --config configs/cifar.yaml "
                             "--model.scheduler.help WarmupCosine`; also --model.help ImageClassifier, "
                             "--model.optimizer.help SGD, --data.help CIFAR10DataModule."}
                for subcommand in ("fit", "validate", "test", "predict")
            },
            args=args,
            run=run,
        )

    def before_instantiate_classes(self) -> None:
        # Unless configured, a GPU run autocasts to bfloat16 (about twice as fast for these convnets);
        # a CPU run stays in float32, where bfloat16 autocast is slower.
        trainer = self.config[self.subcommand].trainer if self.subcommand else self.config.trainer
        gpu = trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        if trainer.precision is None and gpu and torch.cuda.is_bf16_supported():
            trainer.precision = "bf16-mixed"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def main() -> None:
    """Run the CLI; a user mistake found after parsing ends with its message, not a traceback."""
    try:
        CLI()
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("TRACEBACK"):
            raise
        sys.exit(f"error: {err}\n(set TRACEBACK=1 to see where it was raised)")
