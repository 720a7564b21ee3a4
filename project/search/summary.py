"""What a study found: ``trials.csv`` (every trial) and ``best.yaml`` (the best run's config), in its folder."""

import csv
import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState


def write_summary(study: optuna.Study, folder: Path) -> None:
    """Rewritten after each trial, so that a search stopped half-way still has both files."""
    keys = list(dict.fromkeys(key for trial in study.trials for key in trial.params))
    with open(folder / "trials.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "val/acc", *keys, "run_dir", "error"])
        for trial in study.trials:
            writer.writerow(
                [
                    trial.number,
                    trial.state.name,
                    "" if trial.value is None else trial.value,
                    *(trial.params.get(key, "") for key in keys),
                    trial.user_attrs.get("run_dir", ""),
                    trial.user_attrs.get("error", ""),  # why a trial stopped on a mistake
                ]
            )
    best = _best(study)
    if best is not None:
        shutil.copyfile(Path(best.user_attrs["run_dir"]) / "config.yaml", folder / "best.yaml")


def report(study: optuna.Study, folder: Path) -> None:
    """Prints where the study's files are."""
    states = [trial.state for trial in study.trials]
    counts = ", ".join(f"{states.count(state)} {state.name.lower()}" for state in TrialState if state in states)
    print(f"\n{len(states)} trials ({counts}) in {folder}")
    best = _best(study)
    if best is None:
        print("no trial completed, so there is no best config")
    else:
        print(
            f"best: trial {best.number}, val/acc {best.value:.4f}, run {best.user_attrs['run_dir']}\n"
            f"best config: {folder / 'best.yaml'}  (python main.py fit --config {folder / 'best.yaml'})"
        )
    print(f"all trials: {folder / 'trials.csv'}")


def _best(study: optuna.Study):
    complete = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    return max(complete, key=lambda trial: trial.value) if complete else None
