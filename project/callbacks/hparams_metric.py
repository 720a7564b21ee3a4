"""The HPARAMS tab of TensorBoard: the run's hyperparameters beside its final validation and test accuracy."""

from lightning_fabric.utilities.logger import _convert_params, _flatten_dict
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams


class HparamsMetric(Callback):
    """Logs ``monitor`` again as ``hp_metric`` after each validation (not the sanity check), and lists
    ``test_metric`` beside it in the HPARAMS tab.

    Lightning's ``TensorBoardLogger`` writes the module's hyperparameters when fit, validate or test starts, with
    one metric, ``hp_metric``, set to -1 (``default_hp_metric=True``). TensorBoard takes the columns of the HPARAMS
    tab from the first hyperparameter record of a run and shows the latest value of each metric, so:

    - when fit starts, this writes the first record, naming ``hp_metric`` and ``test_metric`` (Lightning's own
      record follows, with the hyperparameters' values), so that a test's accuracy appears beside the validation's;
    - ``hp_metric`` repeats ``monitor`` after each validation: the tab shows the run's latest ``val/acc``, the
      final one once the run ends, and a stopped run's too;
    - a test (or validation) run by the same trainer after its fit (``--test_after_fit``) does not log the
      hyperparameters again: Lightning would log ``hp_metric`` -1 once more, and the tab would show that.

    Args:
        monitor: The logged metric that ``hp_metric`` repeats.
        test_metric: The logged test metric listed beside it (None: none).
    """

    metrics_logged_in_fit = ("hp_metric",)  # what a checkpoint may monitor besides the module's (checkpoint.py)

    def __init__(self, monitor: str = "val/acc", test_metric: str | None = "test/acc") -> None:
        self.monitor, self.test_metric = monitor, test_metric
        self._fitted_logger = None
        self._autolog_hparams: bool | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" and trainer.logger is not None and trainer.logger is self._fitted_logger:
            self._autolog_hparams, trainer.enable_autolog_hparams = trainer.enable_autolog_hparams, False

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._autolog_hparams is not None:
            trainer.enable_autolog_hparams, self._autolog_hparams = self._autolog_hparams, None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning logs the hyperparameters right after this hook.
        self._fitted_logger = trainer.logger
        logger = trainer.logger
        if not (isinstance(logger, TensorBoardLogger) and trainer.is_global_zero and trainer.enable_autolog_hparams):
            return
        params = _logged_hyperparameters(trainer, pl_module)
        if params is not None and self.test_metric:
            # The way TensorBoardLogger.log_hyperparams writes them, without logging a value of the metrics.
            params = logger._sanitize_params(_flatten_dict(_convert_params(params)))
            experiment, _, _ = hparams(params, {"hp_metric": -1, self.test_metric: -1})
            logger.experiment._get_file_writer().add_summary(experiment)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # callback_metrics computes this validation's epoch values when read; logging from here puts
        # hp_metric at the step Lightning logs val/acc at.
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            pl_module.log("hp_metric", value, sync_dist=True)  # equal on every rank: says so to Lightning under DDP


def _logged_hyperparameters(trainer: Trainer, pl_module: LightningModule) -> dict | None:
    """The hyperparameters Lightning logs when fit starts (``pytorch_lightning.loggers.utilities._log_hyperparams``):
    the module's and the datamodule's saved ones, if any."""
    datamodule = trainer.datamodule
    module_params = pl_module.hparams_initial if pl_module._log_hyperparams else None
    data_params = datamodule.hparams_initial if datamodule is not None and datamodule._log_hyperparams else None
    if module_params is None and data_params is None:
        return None
    return {
        key: value for key, value in {**(module_params or {}), **(data_params or {})}.items() if key != "_class_path"
    }
