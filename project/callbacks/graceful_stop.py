"""Ctrl-C or SIGTERM during fit: finish the step, save a resumable checkpoint, say how to resume."""

import os
import shlex
import signal
import sys
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities.exceptions import SIGTERMException


class GracefulStop(Callback):
    """Turns an interruption into a checkpoint at a step boundary and a resume command.

    Lightning already stops at the next batch boundary on SIGTERM (raising ``SIGTERMException``).
    This makes the first Ctrl-C do the same (a second one stops at once, without a checkpoint),
    saves that boundary as ``checkpoints/last.ckpt`` of the run, and prints the command that
    resumes it. Resuming from it continues exactly (see ``InMemoryImageDataModule.state_dict``).
    """

    def __init__(self) -> None:
        self._previous_sigint_handler = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._previous_sigint_handler = signal.signal(signal.SIGINT, self._stop_at_next_step)

    def _stop_at_next_step(self, signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handling: stop at the next batch boundary

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.fast_dev_run:
            return  # a failure: keep the last good checkpoint rather than save this state; a dry run saves nothing
        directory = Path(trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else trainer.log_dir or ".")
        path = directory / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # all of the state: a resume continues from it
        if trainer.is_global_zero:
            config = Path(trainer.log_dir or ".") / "config.yaml"
            print(
                f"\nStopped at step {trainer.global_step} (epoch {trainer.current_epoch}); saved {path}.\n"
                f"Resume with: python main.py fit --config {shlex.quote(str(config))} "
                f"--ckpt_path {shlex.quote(str(path))}",
                file=sys.stderr,
            )

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous_sigint_handler is not None:
            signal.signal(signal.SIGINT, self._previous_sigint_handler)
            self._previous_sigint_handler = None
