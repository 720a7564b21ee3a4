"""The HPARAMS tab of TensorBoard: the run's hyperparameters beside its latest validation accuracy."""

from pytorch_lightning import Callback, LightningModule, Trainer


class HparamsMetric(Callback):
    """Logs ``monitor`` again as ``hp_metric`` after each validation (not the sanity check).

    Lightning's ``TensorBoardLogger`` writes the module's hyperparameters when fit (or validate) starts, with one
    metric, ``hp_metric``, set to -1 (``default_hp_metric=True``). TensorBoard keeps the first hyperparameter
    record of a run and shows the latest value of its metrics, so the HPARAMS tab shows the run's latest
    ``val/acc``: the final one once the run ends, and a stopped run's too.

    Args:
        monitor: The logged metric that ``hp_metric`` repeats.
    """

    def __init__(self, monitor: str = "val/acc") -> None:
        self.monitor = monitor

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # callback_metrics computes this validation's epoch values when read; logging from here puts
        # hp_metric at the step Lightning logs val/acc at.
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            pl_module.log("hp_metric", value, sync_dist=True)  # equal on every rank: says so to Lightning under DDP
