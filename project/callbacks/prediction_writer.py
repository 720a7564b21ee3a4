"""Writes ``predict`` results to ``predictions.csv`` in the run's log directory."""

import csv
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter

# The rows are named from the datamodule (image_names, predicted_indices), not from Lightning's batch indices.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices fetched from your dataloader")


class PredictionWriter(BasePredictionWriter):
    """One row per predicted image: ``image, predicted, probability, true``.

    ``image`` is the image's path (relative to the data root, or to ``predict_dir``) where the
    datamodule has ``image_names(split)``, else its index in the predict set. ``predicted`` and
    ``true`` are class names from the datamodule's ``class_names`` (else label numbers); ``true`` is
    empty for unlabeled images. Expects ``predict_step`` to return ``{"label", "probability",
    "target"}`` per batch (target -1: no label). Under DDP every rank predicts the whole predict set
    (the in-memory datamodules do not shard it) and rank 0 writes the file. A ``fast_dev_run`` writes none.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        directory = trainer.log_dir  # on every rank: it broadcasts, and a rank left out of it would wait forever
        if not trainer.is_global_zero or trainer.fast_dev_run:  # a dry run writes nothing
            return
        data = trainer.datamodule
        names = getattr(data, "class_names", None)
        images = data.image_names("predict") if hasattr(data, "image_names") else None
        # Streamed batches arrive in the workers' order, not the listing's: each batch's image indices say which.
        order = getattr(data, "predicted_indices", None)
        order = torch.cat(order).tolist() if order else None
        path = os.path.join(directory or ".", self.filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "predicted", "probability", "true"])
            index = 0
            for batch in predictions:
                for label, probability, target in zip(
                    *(batch[key].tolist() for key in ("label", "probability", "target"))
                ):
                    true = "" if target < 0 else names[target] if names else target
                    writer.writerow(
                        [
                            (images[order[index]] if order else images[index]) if images else index,
                            names[label] if names else label,
                            f"{probability:.6f}",
                            true,
                        ]
                    )
                    index += 1
        print(f"Wrote {index} predictions to {path}")
