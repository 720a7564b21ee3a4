"""A run's directory: what a checkpoint alone continues, what a dry run or a failed run leaves, what is printed."""

import re
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import QUIET, SYNTHETIC, run_in_process, scalars

SHORT = [
    *QUIET,
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--model.scheduler.warmup_steps",
    "1",
]
RUN = "logs/synthetic/version_0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run stopped by max_steps at step 2 (mid-epoch): <dir>/logs/synthetic/version_0."""
    workdir = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(workdir)
        run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *SHORT, "--trainer.max_steps", "2")
    return workdir / "logs"


@pytest.fixture
def in_copy(trained, tmp_path, monkeypatch):
    """A working directory of its own holding a copy of the trained run."""
    shutil.copytree(trained, tmp_path / "logs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root):
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def fails(monkeypatch, *args):
    with pytest.raises(SystemExit) as stopped:
        run_in_process(monkeypatch, *args)
    assert stopped.value.code not in (0, None)


@pytest.mark.parametrize("form, elsewhere", [("--ckpt_path=PATH", False), ("--ckpt_path PATH", True)])
def test_a_run_continues_from_its_checkpoint_alone(in_copy, monkeypatch, form, elsewhere):
    checkpoint = in_copy / RUN / "checkpoints" / "last.ckpt"
    flag = form.replace("PATH", str(checkpoint)).split(" ")
    if elsewhere:  # from another working directory, naming the run's logs folder by its full path
        (in_copy / "elsewhere").mkdir()
        monkeypatch.chdir(in_copy / "elsewhere")
        flag += ["--trainer.logger.init_args.save_dir", str(in_copy / "logs")]
    run_in_process(monkeypatch, "fit", *flag, "--trainer.max_steps", "3")  # no --config: the run's config.yaml
    assert sorted(p.name for p in (in_copy / "logs" / "synthetic").iterdir()) == ["version_0"]  # the same run
    # Its last.ckpt replaced, not joined by last-v1.ckpt (Lightning's ModelCheckpoint, given a directory written
    # otherwise than the checkpoint's, would keep last.ckpt); the best of its first validation (step 3) beside it.
    assert [p.name[:14] for p in sorted(checkpoint.parent.iterdir())] == ["best-epoch000-", "last.ckpt"]
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    assert not elsewhere or not list((in_copy / "elsewhere").iterdir())  # nothing written where it was run
    resumed = (in_copy / RUN / "config-resumed-at-step2.yaml").read_text()
    assert "limit_train_batches: 3" in resumed and "max_steps: 3" in resumed  # the run's settings, the flag on top


def test_validate_takes_the_runs_config_from_beside_its_checkpoint(in_copy, monkeypatch):
    checkpoint = in_copy / RUN / "checkpoints" / "last.ckpt"
    run_in_process(monkeypatch, "validate", "--ckpt_path", str(checkpoint), "--trainer.limit_val_batches", "2")
    validated = in_copy / "logs" / "synthetic" / "version_1"
    assert len(scalars(validated, "val/acc")) == 1
    assert "limit_val_batches: 2" in (validated / "config.yaml").read_text()


def test_fast_dev_run_writes_nothing(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, "--trainer.fast_dev_run", "true")
    assert files(tmp_path) == {}  # Lightning 2.6 alone writes ./checkpoints/last.ckpt
    checkpoint = str(trained / "synthetic" / "version_0" / "checkpoints" / "last.ckpt")
    run_in_process(monkeypatch, "predict", "--ckpt_path", checkpoint, *QUIET, "--trainer.fast_dev_run", "true")
    assert files(tmp_path) == {}  # no predictions.csv


def test_overfit_batches_is_a_run_of_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--trainer.overfit_batches", "2", "--trainer.max_epochs", "1"]
    run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, *args)
    written = files(tmp_path)
    assert written and all(name.startswith(f"{RUN}/") for name in written), sorted(written)
    assert f"{RUN}/checkpoints/last.ckpt" in written and f"{RUN}/config.yaml" in written


@pytest.mark.parametrize(
    "flags, beside",
    [
        (["--model.scheduler.warmup_steps", "500"], True),  # fails in configure_optimizers, after config.yaml
        (["--model.scheduler.warmup_steps", "500"], False),  # longer than the run
    ],
)
def test_a_run_that_fails_before_its_first_step_leaves_no_directory(trained, tmp_path, monkeypatch, flags, beside):
    if beside:
        shutil.copytree(trained, tmp_path / "logs")
    before = files(tmp_path)
    monkeypatch.chdir(tmp_path)
    fails(monkeypatch, "fit", "--config", SYNTHETIC, *SHORT, "--trainer.max_steps", "2", *flags)
    assert files(tmp_path) == before  # an existing run beside it untouched, and nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == (["logs"] if beside else [])


def test_a_resumed_run_that_fails_keeps_its_directory(in_copy, monkeypatch):
    before = files(in_copy)
    checkpoint = str(in_copy / RUN / "checkpoints" / "last.ckpt")
    fails(monkeypatch, "fit", "--ckpt_path", checkpoint, "--data.val_size", "100000")  # refused in setup
    after = files(in_copy)
    assert {name: after[name] for name in before} == before  # only its config-resumed-at-step2.yaml is new


def test_a_fit_prints_its_run_directory_and_checkpoints(tmp_path, monkeypatch, capsys):
    args = ["fit", "--config", SYNTHETIC, *SHORT, "--trainer.max_steps", "3"]
    monkeypatch.chdir(tmp_path)
    run_in_process(monkeypatch, *args)
    lines = capsys.readouterr().out.splitlines()
    assert lines.count(f"run directory: {RUN}") == 1
    [saved] = [line for line in lines if line.startswith("saved ")]
    best = rf"best by val/acc \((0\.\d{{4}})\): {RUN}/checkpoints/best-epoch000-acc\1\.ckpt"
    assert re.fullmatch(rf"saved {RUN}/checkpoints/last\.ckpt; {best}", saved), saved
    assert lines.index(f"run directory: {RUN}") < lines.index(saved)
    # Interrupted: GracefulStop names the checkpoint it saved, once.
    interrupt = ["--trainer.callbacks+=tests.run_helpers.SignalAtStep", "--trainer.callbacks.step=1"]
    with pytest.raises(SystemExit) as stop:
        run_in_process(monkeypatch, *args, *interrupt)
    assert stop.value.code == 128 + 15
    run, printed = "logs/synthetic/version_1", capsys.readouterr()
    assert printed.out.splitlines().count(f"run directory: {run}") == 1
    assert not [line for line in printed.out.splitlines() if line.startswith("saved ")]
    assert printed.err.count(f"saved {run}/checkpoints/last.ckpt") == 1


def test_hp_metric_ends_on_the_final_validation_accuracy_after_the_test(run_dir):
    # --test_after_fit: the test must not log the hyperparameters again, with Lightning's hp_metric -1.
    final_accuracy = scalars(run_dir, "val/acc")[-1]
    assert scalars(run_dir, "hp_metric")[-1] == final_accuracy and final_accuracy[1] != -1
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = HParamsPluginData.FromString(content).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == ["hp_metric", "test/acc"]
    assert len(scalars(run_dir, "test/acc")) == 1  # listed in the tab, logged once
