"""`python -m project.search`: an Optuna study whose trials are real runs of the synthetic config."""

import csv
import shutil
import sys

import pytest
import yaml

from conftest import QUIET, REPO, SYNTHETIC, scalars, start_process, starts_early
from project.cli import CLI

optuna = pytest.importorskip("optuna")  # an optional extra: pip install -e ".[search]"

# After the skip: the search imports Optuna.
from project.search.__main__ import main, parse_options  # noqa: E402
from project.search.study import search  # noqa: E402

SPACE = REPO / "configs" / "search" / "synthetic.yaml"
# Two epochs of four small batches: seconds per trial.
TINY = [
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_train_batches",
    "4",
    "--trainer.limit_val_batches",
    "2",
    "--data.batch_size",
    "16",
    "--data.train_size",
    "512",
    "--data.val_size",
    "128",
    "--data.test_size",
    "128",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.log_every_n_steps",
    "4",
    *QUIET,
]


def command(study_dir, trials=2, space=SPACE, *flags):
    return [
        "--config",
        SYNTHETIC,
        "--space",
        str(space),
        "--trials",
        str(trials),
        "--study_dir",
        str(study_dir),
        *TINY,
        *flags,
    ]


def trials_of(study_dir) -> list[dict]:
    with open(study_dir / "trials.csv") as file:
        return list(csv.DictReader(file))


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["main.py"])
    monkeypatch.delenv("TRACEBACK", raising=False)


@starts_early
def study(tmp_path_factory):
    """One search of two trials, `python -m project.search` started with the session: the study's folder, and what
    the command printed."""
    workdir = tmp_path_factory.mktemp("search")
    finished = start_process([sys.executable, "-m", "project.search", *command("study")], cwd=workdir)

    def done():
        result = finished()
        assert result.returncode == 0, result.stderr[-5000:]
        return workdir / "study", result.stdout

    return done


def test_two_trials_run_with_values_inside_the_space_and_the_summary_lists_them(study):
    study_dir, printed = study
    trials = trials_of(study_dir)
    assert [(row["number"], row["state"]) for row in trials] == [("0", "COMPLETE"), ("1", "COMPLETE")]
    for row in trials:
        assert 1e-3 <= float(row["model.optimizer.init_args.lr"]) <= 3e-2
        assert row["model.scheduler.init_args.warmup_steps"] == "0"  # the config's 10, made 0 by the space
        assert 0 <= float(row["model.scheduler.init_args.warmup_fraction"]) <= 0.3
        assert row["data.init_args.flip"] in {"random", "alternating"}
        # Its score: the last val/acc its own run logged.
        assert float(row["val/acc"]) == pytest.approx(scalars(study_dir.parent / row["run_dir"], "val/acc")[-1][1])
        config = yaml.safe_load((study_dir.parent / row["run_dir"] / "config.yaml").read_text())  # each its own run
        optimizer = config["model"]["init_args"]["optimizer"]["init_args"]
        assert optimizer["lr"] == float(row["model.optimizer.init_args.lr"])
        assert config["data"]["init_args"]["flip"] == row["data.init_args.flip"]
    assert f"all trials: {study_dir.name}/trials.csv" in printed


def test_the_best_config_is_the_best_trials_and_main_py_fit_accepts_it(study, capsys):
    study_dir, printed = study
    best = max(trials_of(study_dir), key=lambda row: float(row["val/acc"]))
    assert f"best config: {study_dir.name}/best.yaml" in printed
    with pytest.raises(SystemExit) as printed_config:  # `python main.py fit --config best.yaml --print_config`
        CLI(args=["fit", "--config", str(study_dir / "best.yaml"), "--print_config"])
    assert printed_config.value.code in (None, 0)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == float(best["model.optimizer.init_args.lr"])
    warmup = config["model"]["init_args"]["scheduler"]["init_args"]["warmup_fraction"]
    assert warmup == float(best["model.scheduler.init_args.warmup_fraction"])
    assert config["data"]["init_args"]["flip"] == best["data.init_args.flip"]


def test_the_same_command_continues_the_study_and_a_trial_its_pruner_stops_ends_as_pruned(study, tmp_path):
    shutil.copytree(study[0], tmp_path / "study")
    search(parse_options(command("study", 3)), pruner=optuna.pruners.ThresholdPruner(lower=1.1))  # val/acc < 1.1
    trials = trials_of(tmp_path / "study")
    assert trials[:2] == trials_of(study[0])
    assert (trials[2]["state"], trials[2]["run_dir"]) == ("PRUNED", "study/version_2")
    assert len(scalars(tmp_path / trials[2]["run_dir"], "val/acc")) == 1  # of max_epochs 2: stopped after the first
    with pytest.raises(SystemExit) as stopped:
        main(command("study", 4, SPACE, "--model.optimizer.weight_decay", "0.1"))
    assert str(stopped.value.code).startswith("error: --study_dir study holds a study of other flags")


@pytest.mark.parametrize(
    "space, message",
    [
        (
            "model.optimizer.init_args.lrr: {low: 0.001, high: 0.1}",
            "model.optimizer.init_args.lrr is not a setting of this config (did you mean model.optimizer.lr?)",
        ),
        (
            "model.optimizer.init_args.lr: {low: 0.1, high: 0.001}",
            "model.optimizer.init_args.lr: `low <= high` must hold",
        ),
        ("model.optimizer.init_args.lr: {low: 0, high: 0.1, log: true}", "`low > 0` must hold for `log=True`"),
        ("model.optimizer.init_args.lr: {min: 0, max: 0.1}", "model.optimizer.init_args.lr: expected {low: <number>"),
        (
            "data.init_args.flip: {choices: [random, sideways]}",
            "the CLI refuses a value of the space: data.flip: Expected a typing.Literal",
        ),
        ("model.scheduler.init_args.warmup_steps: {low: 0.5, high: 3}", "model.scheduler.warmup_steps: Expected a int"),
        ("", "names no flags"),
    ],
)
def test_a_mistake_in_the_space_is_one_error_line_before_any_trial(space, message, tmp_path):
    (tmp_path / "space.yaml").write_text(space)
    with pytest.raises(SystemExit) as stopped:
        main(command("study", 1, tmp_path / "space.yaml"))
    assert str(stopped.value.code).startswith(f"error: --space {tmp_path / 'space.yaml'}")
    assert message in str(stopped.value.code)
    assert not (tmp_path / "study").exists()


# The command's ``main`` with the check of the space's values before any trial skipped.
UNCHECKED = """
import sys
import project.search.study
project.search.study._check_values = lambda *args: None
from project.search.__main__ import main
main(sys.argv[1:])
"""


@starts_early
def mistaken_trials(tmp_path_factory):
    """A search of four trials whose drawn values may be mistakes, run as by ``main`` in this process (but with the
    check of the space's values before any trial skipped) in a process started with the session: its folder, and the
    finished process."""
    # 4 optimizer steps a run: a warmup of 5-8 steps is too long. A flip of `sideways` is a value the
    # CLI refuses, drawn in a trial (the check of the space's choices before any trial is skipped).
    tmp_path = tmp_path_factory.mktemp("mistaken_trials")
    space = tmp_path / "space.yaml"
    space.write_text(
        "model.scheduler.init_args.warmup_steps: {low: 0, high: 8}\n"
        "data.init_args.flip: {choices: [random, alternating, sideways]}\n"
    )
    flags = command("study", 4, space, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1")
    finished = start_process([sys.executable, "-c", UNCHECKED, *flags], cwd=tmp_path, env={"TRACEBACK": None})
    return lambda: (tmp_path, finished())


def test_a_trial_whose_values_are_a_mistake_fails_and_the_study_goes_on(mistaken_trials):
    tmp_path, printed = mistaken_trials
    assert printed.returncode == 0, printed.stderr[-5000:]
    trials = trials_of(tmp_path / "study")
    assert len(trials) == 4
    for row in trials:
        warmup, flip = int(row["model.scheduler.init_args.warmup_steps"]), row["data.init_args.flip"]
        if flip == "sideways":
            assert row["state"] == "FAIL"
            assert row["error"].startswith("data.flip: Expected a typing.Literal[") and "sideways" in row["error"]
        elif warmup > 4:
            assert row["state"] == "FAIL"
            assert row["error"].startswith(f"WarmupCosine: total_steps must be >= 1 and >= warmup_steps ({warmup})")
        else:
            assert (row["state"], row["error"]) == ("COMPLETE", "")
        if row["state"] == "FAIL":
            assert f"failed, the study goes on: trial {row['number']} (--" in printed.stderr
    states = [row["state"] for row in trials]
    assert "COMPLETE" in states and {"data.flip", "WarmupCosine"} <= {row["error"].split(":")[0] for row in trials}
    assert f"4 trials ({states.count('COMPLETE')} complete, {states.count('FAIL')} fail)" in printed.stdout


@pytest.mark.parametrize(
    "space, flags, trials, message",
    [
        # WarmupCosine takes warmup_steps or warmup_fraction, and the config sets warmup_steps: 10.
        (
            "model.scheduler.init_args.warmup_fraction: {low: 0.0, high: 0.3}",
            [],
            5,
            "trials 0-2 all stopped on a mistake and none has finished, as if every trial would: trial 2 (--",
        ),
        (SPACE.read_text(), ["--trainer.devices", "2"], 1, "trial 0 (--"),
    ],
)
def test_a_mistake_every_trial_shares_ends_the_study_with_one_line(space, flags, trials, message, tmp_path):
    (tmp_path / "space.yaml").write_text(space)
    with pytest.raises(SystemExit) as stopped:
        main(command("study", trials, tmp_path / "space.yaml", *flags))
    assert str(stopped.value.code).startswith(f"error: {message}")
    reason = "not both" if not flags else "a search runs each trial in one process on one device"
    assert reason in str(stopped.value.code)
    assert len(str(stopped.value.code).splitlines()) == 2  # the error, then "(set TRACEBACK=1 to see where ...)"
    rows = trials_of(tmp_path / "study")
    assert [row["state"] for row in rows] == ["FAIL"] * min(trials, 3)
    assert all(reason in row["error"] for row in rows)
