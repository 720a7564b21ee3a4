"""A trial is a run of the project's own CLI: ``main.py fit`` with the trial's values as flags."""

import contextlib
import io
import sys
import warnings

import optuna

from project.cli import CLI
from project.errors import UsageError
from project.search.pruning import ReportToTrial

# sys.argv holds the search's own command line; each trial's is the CLI's args.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")


class TrialCLI(CLI):
    """The project's CLI, with the trial's reporting callback added to its ``fit``."""

    def __init__(self, args: list[str], report: ReportToTrial) -> None:
        self.report = report
        super().__init__(args=args)

    def before_fit(self) -> None:
        super().before_fit()
        # Lightning's DDP would start this whole search again in each new process.
        if self.trainer.num_devices * self.trainer.num_nodes > 1:
            raise UsageError(
                "a search runs each trial in one process on one device: pass --trainer.devices 1 "
                "(the trials run one after the other)"
            )
        self.trainer.callbacks.append(self.report)

    def parse_arguments(self, parser, args) -> None:
        # A drawn value the parser refuses is this trial's mistake, not the end of the search: the parser
        # prints its error line and exits, and that line becomes a UsageError.
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                super().parse_arguments(parser, args)
        except SystemExit as stop:
            if stop.code in (0, None):
                raise
            raise UsageError(refusal(printed.getvalue())) from None
        sys.stderr.write(printed.getvalue())  # the parser's warnings, if any


class ParseOnly(CLI):
    """The project's CLI parser alone: reads a command line as ``main.py fit`` would, and builds nothing."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def parse(args: list[str]):
    """The full config that ``main.py fit ARGS`` would run (``args`` without ``fit``)."""
    return ParseOnly(args=args, run=False).config


def refusal(printed: str) -> str:
    """The reason in the parser's printed ``error: <setting>: <reason>`` line."""
    errors = [line.removeprefix("error: ") for line in printed.splitlines() if line.startswith("error: ")]
    return errors[0] if errors else "the CLI refused the values"


def run_trial(trial: optuna.Trial, args: list[str]) -> float:
    """``main.py fit ARGS`` in this process; its last ``val/acc``, or ``optuna.TrialPruned``."""
    report = ReportToTrial(trial)
    TrialCLI(["fit", *args], report)
    if report.pruned:
        raise optuna.TrialPruned(f"pruned after validation {report.validations}")
    if report.value is None:
        raise UsageError(
            "the trial's run did not validate, and the search compares runs by val/acc: "
            "leave trainer.limit_val_batches above 0 and let the run reach its first validation"
        )
    return report.value
