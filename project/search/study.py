"""A study in its own folder: checks the space against the CLI, runs the trials one by one, writes what it found."""

import contextlib
import io
from argparse import Namespace
from pathlib import Path

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, distribution_to_json
from optuna.trial import TrialState

from project.cli import leaves
from project.errors import UsageError, mistake_in
from project.search.space import as_flags, check_settings, load_space, setting
from project.search.summary import report, write_summary
from project.search.trial import parse, run_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def search(options: Namespace, pruner: optuna.pruners.BasePruner | None = None) -> None:
    """Run ``options.trials`` finished trials in ``options.study_dir``, counting those a previous call finished."""
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
    for _ in range(options.trials - sum(trial.state in FINISHED for trial in study.trials)):
        trial = study.ask(space)
        try:
            value = run_trial(trial, [*base, *as_flags(trial.params), *logger])
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except BaseException as err:  # an interruption too: the trial is over, not running
            study.tell(trial, state=TrialState.FAIL)
            mistake = mistake_in(err) if isinstance(err, Exception) else None
            if mistake is not None:
                raise UsageError(f"trial {trial.number} ({' '.join(as_flags(trial.params))}): {mistake}") from err
            raise
        else:
            study.tell(trial, value)
        finally:
            write_summary(study, options.study_dir)
    report(study, options.study_dir)


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
            reason = (printed.getvalue().splitlines() or ["refused"])[0].removeprefix("error: ")
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
