"""A study in its own folder: checks the space against the CLI, runs the trials one by one, writes what it found."""

import contextlib
import io
import sys
from argparse import Namespace
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json
from optuna.trial import TrialState

from project.cli import leaves
from project.errors import UsageError, mistake_in
from project.search.space import as_flags, check_settings, load_space, setting
from project.search.summary import report, write_summary
from project.search.trial import parse, refusal, run_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# While no trial of the study has finished, this many of a command's trials stopping on a mistake end it.
SHARED_AFTER = 3


def search(options: Namespace, pruner: optuna.pruners.BasePruner | None = None) -> None:
    """Run trials in ``options.study_dir`` until it holds ``options.trials`` finished ones, one try each.

    A previous call's finished (complete or pruned) trials count; a failed trial takes its place in this
    call's tries, and the same command runs another. Which mistakes end the study:

    - Before any trial: a mistake in the space (a key that is not a setting, a bad range, a bound or a
      choice the CLI refuses) or in the flags. One ``error:`` line.
    - A trial that stops on a mistake (``mistake_in``: a ``UsageError``, a value the CLI refuses, ...)
      is a FAIL in ``trials.csv``, its reason in the ``error`` column and printed, and the study goes
      on: the mistake may be in that trial's values alone, e.g. a warmup longer than the run.
    - Unless no trial of the study has finished and this call's first ``SHARED_AFTER`` trials (all of
      them if it runs fewer) stopped on mistakes: nothing has worked, so the mistake is taken as one
      every trial shares (in the config, the flags, or the space as a whole), and the study ends with
      one ``error:`` line. Once a trial has finished, the config and the space are known to work and
      a mistake is only ever its trial's.
    - A bug (any other exception) ends the study with its traceback; an interruption ends it too.
    """
    space = load_space(options.space)
    base = [arg for config in options.config for arg in ("--config", config)] + options.flags
    check_settings(space, list(leaves(parse(base))), options.space)
    given_twice = {setting(key) for key in space} & {setting(arg) for arg in options.flags if arg.startswith("--")}
    if given_twice:
        raise UsageError(
            f"{', '.join(sorted(given_twice))}: set by --space {options.space} and by a flag; drop one of them"
        )
    _check_values(space, base, options.space)
    study = _open_study(
        options.study_dir,
        {"flags": base, "space": {key: distribution_to_json(distribution) for key, distribution in space.items()}},
        pruner,
    )
    # The trials log like any run, to logs/<name>/version_<n>/ with the study's folder as logs/<name>/.
    logger = [
        "--trainer.logger.save_dir",
        str(options.study_dir.parent),
        "--trainer.logger.name",
        options.study_dir.name,
    ]
    attempts = options.trials - sum(trial.state in FINISHED for trial in study.trials)
    mistakes = []  # the numbers of this command's trials that stopped on a mistake
    for _ in range(attempts):
        trial = study.ask(space)
        flags = as_flags(trial.params)
        try:
            value = run_trial(trial, [*base, *flags, *logger])
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except BaseException as err:  # an interruption too: the trial is over, not running
            mistake = mistake_in(err) if isinstance(err, Exception) else None
            if mistake is None:  # a bug (with its traceback) or an interruption ends the study
                study.tell(trial, state=TrialState.FAIL)
                raise
            error = " ".join(str(mistake).split())  # one line
            trial.set_user_attr("error", error)
            study.tell(trial, state=TrialState.FAIL)
            mistakes.append(trial.number)
            reason = f"trial {trial.number} ({' '.join(flags)}): {error}"
            if len(mistakes) == min(SHARED_AFTER, attempts) and not _any_finished(study):
                raise UsageError(_shared(mistakes, reason, options.study_dir)) from err
            print(f"failed, the study goes on: {reason}", file=sys.stderr)
        else:
            study.tell(trial, value)
        finally:
            write_summary(study, options.study_dir)
    report(study, options.study_dir)


def _any_finished(study: optuna.Study) -> bool:
    return any(trial.state in FINISHED for trial in study.trials)


def _shared(numbers: list[int], reason: str, folder: Path) -> str:
    if len(numbers) == 1:
        return reason
    return (
        f"trials {numbers[0]}-{numbers[-1]} all stopped on a mistake and none has finished, as if every trial would: "
        f"{reason} (each one's reason is in {folder / 'trials.csv'}; if only some values of the space fail, narrow it)"
    )


def _check_values(space: dict[str, BaseDistribution], base: list[str], path: Path) -> None:
    # Every bound and every choice is parsed by the CLI before any trial runs, so that a value it refuses
    # is a mistake in the space, not a failed trial. The parser prints its error and exits: keep its line.
    values = {
        key: list(distribution.choices)
        if isinstance(distribution, CategoricalDistribution)
        else [distribution.low, distribution.high]
        for key, distribution in space.items()
    }
    for index in range(max(len(choices) for choices in values.values())):
        params = {key: choices[min(index, len(choices) - 1)] for key, choices in values.items()}
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                parse([*base, *as_flags(params)])
        except SystemExit:
            reason = refusal(printed.getvalue())
            raise UsageError(f"--space {path}: the CLI refuses a value of the space: {reason}") from None


def _open_study(folder: Path, command: dict, pruner: optuna.pruners.BasePruner | None) -> optuna.Study:
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name="search",
        storage=f"sqlite:///{folder / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        pruner=pruner,
    )
    if study.user_attrs.get("command", command) != command:
        raise UsageError(
            f"--study_dir {folder} holds a study of other flags or another space "
            f"({' '.join(study.user_attrs['command']['flags'])}); continue it with the same --config, "
            "--space and flags, or pass another --study_dir"
        )
    study.set_user_attr("command", command)
    # Seeded by the number of trials so far: a new study is reproducible, a continued one draws new values.
    study.sampler = optuna.samplers.TPESampler(seed=len(study.trials))
    return study
