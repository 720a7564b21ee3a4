"""Reports each validation's ``val/acc`` to an Optuna trial and stops the run when the trial's pruner says so."""

from pathlib import Path

import optuna
from pytorch_lightning import Callback, LightningModule, Trainer

from project.errors import UsageError


class ReportToTrial(Callback):
    """Tells an Optuna trial how its run goes: where it logs, and ``val/acc`` after each validation.

    Optuna's own ``PyTorchLightningPruningCallback`` (in ``optuna-integration``) imports ``lightning.pytorch``
    and subclasses its ``Callback``: that is the other Lightning package, a second copy of Lightning whose
    classes are not ``pytorch_lightning``'s, which this project runs on. Hence this one, written against
    ``pytorch_lightning``.

    Its step for Optuna is the validation's number (0, 1, ...): the trials of a study validate at the
    same points even when the space changes the batch size. When the pruner says so, the trainer stops
    after this validation, as at ``max_epochs`` (``last.ckpt`` saved, the logger closed), and ``pruned``
    is set: the search then raises ``optuna.TrialPruned``.
    """

    monitor = "val/acc"

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.value: float | None = None
        self.validations = 0
        self.pruned = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trial.set_user_attr("run_dir", str(Path(trainer.log_dir)))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise UsageError(
                f"the search maximizes {self.monitor}, which this run does not log; the logged metrics "
                f"are: {', '.join(sorted(trainer.callback_metrics))}"
            )
        self.value = trainer.callback_metrics[self.monitor].item()
        self.trial.report(self.value, step=self.validations)
        self.validations += 1
        if self.trial.should_prune():
            self.pruned = trainer.should_stop = True
