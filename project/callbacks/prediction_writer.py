"""Writes ``predict`` results to ``predictions.csv`` in the run's log directory."""

import csv
import os
from typing import Any, Sequence

from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """One row per predicted image: its index in the predict set, the label, the class name and the confidence.

    Expects ``predict_step`` to return ``{"label": ..., "confidence": ...}`` per batch; class names
    come from the datamodule's ``class_names`` when it has them. Under DDP every rank predicts the
    whole predict set (the in-memory datamodules do not shard it) and rank 0 writes the file.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        if not trainer.is_global_zero:
            return
        names = getattr(trainer.datamodule, "class_names", None)
        path = os.path.join(trainer.log_dir or ".", self.filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["index", "label", "class_name", "confidence"])
            index = 0
            for batch in predictions:
                for label, confidence in zip(batch["label"].tolist(), batch["confidence"].tolist()):
                    writer.writerow([index, label, names[label] if names else "", f"{confidence:.6f}"])
                    index += 1
        print(f"Wrote {index} predictions to {path}")
