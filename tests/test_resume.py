"""Interrupt a real `python main.py fit` with a real signal, resume it, and get the uninterrupted run."""

import shutil
import warnings

import pytest
import torch

from conftest import QUIET, SYNTHETIC, run_in_process, run_main, run_mains, scalars

# configs/synthetic.yaml: 24 steps per epoch, warmup 10, 72 steps. Step 5 is mid-warmup and mid-epoch.
STOP_AT = 5
LOG_EVERY_STEP = ["--trainer.log_every_n_steps", "1"]


def stop_at(step, signal):
    return [
        "--trainer.callbacks+=tests.run_helpers.SignalAtStep",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.signal={signal}",
    ]


def load_weights(checkpoint):
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    """Runs stopped by a signal, started at once: name -> (working directory, CompletedProcess)."""
    runs = {
        "interrupted": [*LOG_EVERY_STEP, *stop_at(STOP_AT, "SIGTERM")],
        "ctrl_c": stop_at(3, "SIGINT"),
        "in_validation": ["--trainer.callbacks+=tests.run_helpers.SignalInValidation"],
        "in_sanity_check": ["--trainer.callbacks+=tests.run_helpers.SignalInSanityCheck"],
    }
    workdirs = {name: tmp_path_factory.mktemp(name) for name in runs}
    results = run_mains(*((workdirs[name], ["fit", "--config", SYNTHETIC, *QUIET, *runs[name]]) for name in runs))
    return {name: (workdirs[name], result) for name, result in zip(runs, results)}


@pytest.fixture(scope="module")
def interrupted(signalled):
    """A run stopped by SIGTERM at step 5, and a copy of its checkpoint outside the run (resuming a copy
    starts a new run directory; resuming the run's own last.ckpt continues the run)."""
    workdir, result = signalled["interrupted"]
    shutil.copy(workdir / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt", workdir / "step5.ckpt")
    return workdir, result


def test_sigterm_saves_a_resumable_checkpoint_and_says_how_to_resume(interrupted):
    workdir, result = interrupted
    run = "logs/synthetic/version_0"  # relative to where the user ran it
    assert result.returncode == 143, result.stderr[-2000:]
    assert f"Stopped at step {STOP_AT} (epoch 0)" in result.stderr
    assert (
        f"Resume with: python main.py fit --config {run}/config.yaml --ckpt_path {run}/checkpoints/last.ckpt"
        in result.stderr
    )
    assert torch.load(workdir / run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STOP_AT
    assert_quiet(result)


# What Lightning and torch print that concerns no user of the template (each seen on every such run before).
NOISE = ["Tip: For seamless cloud logging", "LeafSpec", "`weights_only` was not set", "exists and is not empty"]
NOISE += ["The dirpath has changed", "Couldn't infer the batch indices"]


def assert_quiet(result):
    printed = result.stdout + result.stderr
    assert not [noise for noise in NOISE if noise in printed], printed[-3000:]


def test_resuming_with_ckpt_path_last_continues_the_same_run_exactly_like_the_uninterrupted_run(interrupted, run_dir):
    workdir, _ = interrupted
    run = workdir / "logs" / "synthetic" / "version_0"
    config = (run / "config.yaml").read_bytes()
    result = run_main("fit", "--config", SYNTHETIC, *LOG_EVERY_STEP, *QUIET, "--ckpt_path", "last", cwd=workdir)
    assert "resuming from logs/synthetic/version_0/checkpoints/last.ckpt" in result.stderr
    assert_quiet(result)
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # the same run, no new version
    assert (run / "config.yaml").read_bytes() == config and (run / f"config-resumed-at-step{STOP_AT}.yaml").is_file()
    for group in ("pg1", "pg2"):
        # One curve per tag: the first process's steps, then the resumed one's, each step once.
        assert scalars(run, f"lr-AdamW/{group}") == scalars(run_dir, f"lr-AdamW/{group}")
    expected, got = load_weights(run_dir / "checkpoints" / "last.ckpt"), load_weights(run / "checkpoints" / "last.ckpt")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)  # bit-identical
    assert [s for s, _ in scalars(run, "val/acc")] == [s for s, _ in scalars(run_dir, "val/acc")]
    # The uninterrupted run's checkpoint files, by name: last.ckpt replaced (no last-v1.ckpt), the same best.
    names = checkpoint_names(run)
    assert names == checkpoint_names(run_dir) and [name[:15] for name in names] == ["best-epoch002-a", "last.ckpt"]


def checkpoint_names(run) -> list[str]:
    return sorted(path.name for path in (run / "checkpoints").iterdir())


def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(signalled):
    tmp_path, result = signalled["ctrl_c"]
    assert result.returncode == 143 and "Stopped at step 3 (epoch 0)" in result.stderr
    assert "KeyboardInterrupt" not in result.stderr
    checkpoint = tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3


def test_sigterm_during_validation_stops_there_with_a_checkpoint(signalled):
    tmp_path, result = signalled["in_validation"]
    assert result.returncode == 143 and "Stopped at step 24 (epoch 0)" in result.stderr  # the first validation
    checkpoint = tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 24


def test_sigterm_during_the_sanity_check_stops_before_the_first_step_with_a_checkpoint(signalled):
    tmp_path, result = signalled["in_sanity_check"]
    assert result.returncode == 143 and "Stopped at step 0 (epoch 0)" in result.stderr
    checkpoint = tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 0


def resume_warnings(workdir, monkeypatch, *flags: str) -> list[str]:
    """Resume the interrupted run's copy in this process: the warnings it gave about the checkpoint's settings."""
    monkeypatch.chdir(workdir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, "--ckpt_path", "step5.ckpt", *flags)
    return [str(w.message) for w in caught if "the checkpoint's settings are kept" in str(w.message)]


def test_configured_values_that_resuming_does_not_apply_are_named_in_a_warning(interrupted, monkeypatch):
    workdir, _ = interrupted
    [warning] = resume_warnings(
        workdir,
        monkeypatch,
        "--trainer.max_epochs",
        "1",
        "--model.scheduler.warmup_steps",
        "4",
        "--model.optimizer.lr",
        "0.02",
        "--model.optimizer.weight_decay",
        "0.1",
    )
    # The model's settings come from the checkpoint (LightningCLI), the schedule's length from the trainer:
    # one warning names them all.
    assert "values given for this run that are not applied: " in warning
    assert "model.scheduler.warmup_steps 4 (kept: 10)" in warning
    assert "model.optimizer.lr 0.02 (kept: 0.01)" in warning
    assert "model.optimizer.weight_decay 0.1 (kept: 0.05)" in warning
    assert "WarmupCosine total_steps 24 (kept: 72)" in warning


def test_extending_a_run_says_that_the_added_steps_run_at_the_floor(interrupted, monkeypatch):
    workdir, _ = interrupted
    [warning] = resume_warnings(workdir, monkeypatch, "--trainer.max_epochs", "4")
    assert (
        "WarmupCosine total_steps 96 (kept: 72). The schedule ends at step 72: the 24 steps this run adds after it "
        "run at its final LR (the floor: min_lr_ratio 0.0 x the base LR)."
    ) in warning


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:  # a one-line error, not an exception with its traceback
        run_in_process(
            monkeypatch,
            "fit",
            "--config",
            SYNTHETIC,
            *QUIET,
            # No best checkpoint: Lightning's ModelCheckpoint then writes no last.ckpt at an epoch's end (it
            # writes one beside a top-k save), and a run that fails never reaches the end of training.
            "--checkpoint.save_top_k",
            "0",
            "--trainer.callbacks+=tests.run_helpers.PoisonWeightsAtStep",
            "--trainer.callbacks.step=30",
        )
    assert exit.value.code.startswith("error: the training loss is nan at step 31 (epoch 1")
    checkpoints = tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*")) == ["last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == 24  # the end of epoch 0, before the NaN
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_last_ckpt_is_the_final_step_and_a_run_extended_from_it_continues_exactly(tmp_path, monkeypatch):
    # Best by the highest val/loss is epoch 0, and max_steps 30 stops mid-epoch 1: Lightning's own
    # ModelCheckpoint would leave last.ckpt at step 24. The schedule's length is fixed, so that the
    # extended run and the uninterrupted one follow the same schedule. In this process: the stops
    # here are by max_steps, not by a signal. A run whose best is not its end, branched from a checkpoint that
    # it does not overwrite, tells which weights --test_after_fit tests.
    flags = [
        "--config",
        SYNTHETIC,
        *QUIET,
        "--checkpoint.monitor",
        "val/loss",
        "--checkpoint.mode",
        "max",
        "--model.scheduler.total_steps",
        "40",
    ]
    for folder in ("stopped", "uninterrupted", "tested"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "stopped")
    run_in_process(monkeypatch, "fit", *flags, "--trainer.max_steps", "30")
    checkpoints = tmp_path / "stopped" / "logs" / "synthetic" / "version_0" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 30
    assert [p.name[:17] for p in checkpoints.glob("best-*")] == ["best-epoch000-acc"]
    [best] = checkpoints.glob("best-*")
    run_in_process(monkeypatch, "fit", *flags, "--trainer.max_steps", "40", "--ckpt_path", "last")
    assert sorted(p.name for p in checkpoints.iterdir()) == [best.name, "last.ckpt"]  # no last-v1.ckpt
    monkeypatch.chdir(tmp_path / "uninterrupted")
    run_in_process(monkeypatch, "fit", *flags, "--trainer.max_steps", "40")
    extended = load_weights(checkpoints / "last.ckpt")
    expected = load_weights(
        tmp_path / "uninterrupted" / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    )
    assert all(torch.equal(expected[k], extended[k]) for k in expected)  # bit-identical
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1  # step 40 is in epoch 1, not 2
    # Resuming an older checkpoint of the run branches into a new run: the run's newer last.ckpt stays.
    final = (checkpoints / "last.ckpt").read_bytes()
    monkeypatch.chdir(tmp_path / "stopped")
    branch = ["--trainer.max_steps", "26", "--ckpt_path", str(best), "--test_after_fit", "true", *LOG_EVERY_STEP]
    run_in_process(monkeypatch, "fit", *flags, *branch)
    assert (checkpoints / "last.ckpt").read_bytes() == final
    branched = checkpoints.parents[1] / "version_1"
    assert torch.load(branched / "checkpoints" / "last.ckpt")["global_step"] == 26
    # Its steps 24 and 25 are logged at those steps, as an uninterrupted run logs them (Lightning 2.6 alone
    # restarts a checkpoint of an epoch's end one step late: 25 and 26, and the test at 27).
    assert [step for step, _ in scalars(branched, "lr-AdamW/pg1")] == [24, 25]
    # --test_after_fit tested the branch's final weights (step 26), not the best nor the resumed checkpoint
    # (both step 24): the figures of `test` on its last.ckpt.
    monkeypatch.chdir(tmp_path / "tested")
    run_in_process(monkeypatch, "test", "--ckpt_path", str(branched / "checkpoints" / "last.ckpt"), *QUIET)
    for figure in ("test/loss", "test/acc"):
        [(_, tested)] = scalars(tmp_path / "tested" / "logs" / "synthetic" / "version_0", figure)
        assert scalars(branched, figure) == [(26, tested)], figure


def test_ckpt_path_last_starts_the_run_when_there_is_none_yet(tmp_path, monkeypatch, capsys):
    # So that one command line can be resubmitted after any crash or preemption.
    monkeypatch.chdir(tmp_path)
    run_in_process(
        monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, "--trainer.max_steps", "12", "--ckpt_path", "last"
    )
    assert "--ckpt_path last: no run under logs/synthetic/ yet; starting one" in capsys.readouterr().err
    assert torch.load(tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 12


def test_a_resume_whose_max_time_is_spent_says_why_it_trains_nothing(interrupted, monkeypatch):
    workdir, _ = interrupted
    monkeypatch.chdir(workdir)
    spent = ["--ckpt_path", "step5.ckpt", "--trainer.max_time", "00:00:00:00"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, *spent)
    notes = [str(w.message) for w in caught if "max_time" in str(w.message)]
    assert len(notes) == 1 and "this resume trains no step" in notes[0], notes
    assert "of its 0:00:00" in notes[0]
