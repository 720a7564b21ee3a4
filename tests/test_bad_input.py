"""What a new user gets wrong, and what they see: one message naming the value and the fix, no traceback.

Run in this process through `project.cli.main` (what `python main.py` runs), the way a user would
type each mistake; tests/test_main.py runs a few of them as real subprocesses too. The README's
"Resume, interruptions and mistakes" shows the common ones and points here for the rest.
"""

import decimal
import errno
import sys

import pytest
import torch
from PIL import Image

import project.cli
from conftest import QUIET, SYNTHETIC

ON_A_CPU = pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is there")

FIT = [
    "fit",
    "--config",
    SYNTHETIC,
    *QUIET,
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--model.scheduler.warmup_steps",
    "1",
]


def run_cli(args, cwd, monkeypatch, capsys):
    """``python main.py ARGS`` in this process: (exit status, everything it printed to stderr)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["main.py", *args])
    with pytest.raises(SystemExit) as stopped:
        project.cli.main()
    code = stopped.value.code
    stderr = capsys.readouterr().err
    if isinstance(code, str):  # sys.exit("error: ...") prints it and exits with status 1
        code, stderr = 1, stderr + code
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    others = [line for line in stderr.splitlines() if not line.startswith(("error: ", "(", "Seed set to "))]
    assert len(errors) == 1 and not others, stderr  # one message, not a wall of text
    return code, stderr


def image_folder(root, corrupt=False, classes=("cat", "dog")):
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(root / split / name / f"{i}.png")
    if corrupt:
        (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    return root


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "configs/nope.yaml"], "File does not exist: '{cwd}/configs/nope.yaml'"),
        (["--trainer.max_epochs", "ten"], "error: trainer.max_epochs: Expected a int. Got value: ten"),
        (["--model.optimizer.lr", "nan"], "error: model.optimizer.lr: Expected a float. Got value: nan"),
        (
            ["--model.scheduler.warmup_steps", "1.5"],
            "error: model.scheduler.warmup_steps: Expected a int. Got value: 1.5",
        ),
        (["--model.scheduler", "StepLR"], "error: model.scheduler: the following arguments are required: step_size"),
        (["--model.widths", "[8]"], "error: model: Option 'widths' is not accepted"),
        (
            ["--model.scheduler.warmup_steps", "-5"],
            "warmup_steps must be a whole number of optimizer steps >= 0, got -5",
        ),
        (
            ["--model.scheduler.warmup_steps", "10", "--model.scheduler.total_steps", "5"],
            "total_steps must be >= 1 and >= warmup_steps (10), got 5",
        ),
        (["--model.scheduler.warmup_steps", "500"], "total_steps=2 is the trainer's estimated_stepping_batches"),
        (["--model.scheduler.min_lr_ratio", "1.5"], "min_lr_ratio must be a number in [0, 1], got 1.5"),
        (["--trainer.max_epochs", "-1", "--trainer.limit_train_batches", "1.0"], "total_steps must be finite, got inf"),
        (["--data", "ImageFolderDataModule", "--data.root", "missing"], "image folder {cwd}/missing does not exist"),
        (["--ckpt_path", "missing.ckpt"], "--ckpt_path missing.ckpt: no such file"),
        (["--trainer.logger", "WandbLogger"], "Requirement 'wandb"),
        (["--trainer.barebones", "true"], "--trainer.barebones true turns off the logger, checkpoints and callbacks"),
        pytest.param(
            ["--trainer.precision", "16-mixed"],
            "--trainer.precision 16-mixed: float16 autocast needs a GPU; on a CPU use --trainer.precision bf16-mixed",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there"),
        ),
        (["--data", "tests.run_helpers.NeedsAMissingPackage"], "No module named 'a_package_nobody_installed'"),
        (["--ckpt_path", "."], "--ckpt_path . is a folder; give a checkpoint file in it (it holds no .ckpt file)"),
        (["--ckpt_path", "notes.txt"], "--ckpt_path notes.txt is not a checkpoint"),
        (["--trainer.logger.init_args.save_dir", "notes.txt"], "notes.txt"),
        pytest.param(
            ["--trainer.accelerator", "gpu"],
            "--trainer.accelerator gpu: this machine has no GPU that torch can use",
            marks=ON_A_CPU,
        ),
        (["--trainer.logger", "false"], "--trainer.logger false: a run's directory (config.yaml, checkpoints"),
        (["--ckpt_path", "best"], "--ckpt_path best: pass the best checkpoint's path"),
        (["--trainer.num_nodes", "0"], "trainer: `num_nodes` must be a positive integer, but got 0."),
        (["--model.optimizer.lr", "-1"], "model.optimizer: Invalid learning rate: -1.0"),
        (["--model.label_smoothing", "2"], "model.label_smoothing must be in [0, 1], got 2.0"),
        (
            ["--model.network.widths", "[0,0,0]"],
            "ConvNet widths must be one or more channel counts >= 1, got [0, 0, 0]",
        ),
        (["--model.scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau"], "must include a monitor"),
        # Out of range, found when the config is read (tests/test_ranges.py tries every numeric setting).
        (
            ["--trainer.accumulate_grad_batches", "0"],
            "error: --trainer.accumulate_grad_batches must be >= 1 (batches per optimizer step), got 0",
        ),
        (
            ["--data.crop_padding", "40"],
            "error: data.crop_padding must be smaller than the images it shifts (32 pixels)",
        ),
        (["--data.image_size", "0"], "error: data.image_size must be >= 1 pixel, got 0"),
        (
            ["--checkpoint.monitor", "val/accc"],
            "error: checkpoint.monitor 'val/accc' is not a metric ImageClassifier logs; it logs: train/loss, "
            "val/loss, val/acc; or --checkpoint.monitor null",
        ),
        (["--seed_everything", "-1"], "error: --seed_everything must be a whole number in [0, 4294967295]"),
        pytest.param(
            ["--trainer.devices", "-1"],
            "error: --trainer.devices -1: on a CPU it counts processes and must be >= 1",
            marks=ON_A_CPU,
        ),
    ],
)
def test_a_mistake_is_one_clear_error(tmp_path, monkeypatch, capsys, args, message):
    (tmp_path / "notes.txt").write_text("not a checkpoint, not a folder")
    code, stderr = run_cli([*FIT, *args], tmp_path, monkeypatch, capsys)
    assert code != 0 and message.format(cwd=tmp_path) in stderr, stderr[-1500:]


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_refused(tmp_path, monkeypatch, capsys, subcommand):
    code, stderr = run_cli([subcommand, "--config", SYNTHETIC, *QUIET], tmp_path, monkeypatch, capsys)
    assert code != 0 and f"error: {subcommand} evaluates trained weights: pass --ckpt_path" in stderr
    assert not (tmp_path / "logs").exists()  # refused before anything ran
    code, stderr = run_cli(
        [subcommand, "--config", SYNTHETIC, *QUIET, "--ckpt_path", "last"], tmp_path, monkeypatch, capsys
    )
    assert code != 0 and "--ckpt_path last: no run under logs/synthetic/ has checkpoints/last.ckpt" in stderr


def test_a_misspelled_monitor_warns_at_the_first_step_and_stops_after_the_first_epoch(tmp_path, monkeypatch, capsys):
    # A module that does not say what it logs (a subclass that logs more, as this one, or your own): ImageClassifier
    # says so, and its misspelled monitor is refused before the first step (tests/test_ranges.py).
    own = ["--model", "tests.run_helpers.ModuleLoggingEpochAccuracy"]
    with pytest.warns(UserWarning, match="checkpoint.monitor 'val/accuracy' is not logged so far"):
        code, stderr = run_cli(
            [*FIT, *own, "--trainer.max_epochs", "3", "--checkpoint.monitor", "val/accuracy"],
            tmp_path,
            monkeypatch,
            capsys,
        )
    assert code != 0 and "checkpoint.monitor 'val/accuracy' is not a logged metric; the logged ones are: " in stderr
    assert "val/acc, val/loss (last.ckpt holds this epoch)" in stderr
    last = tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the first epoch (2 batches), not lost


def test_an_epoch_level_training_metric_can_be_monitored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "main.py",
            *FIT,
            "--trainer.max_epochs",
            "2",
            "--model",
            "tests.run_helpers.ModuleLoggingEpochAccuracy",
            "--checkpoint.monitor",
            "train/acc",
            "--checkpoint.filename",
            "best-{epoch}-{train/acc:.3f}",
        ],
    )
    with pytest.warns(UserWarning, match="is not logged so far"):  # it is only at the end of each epoch
        project.cli.main()
    assert list((tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints").glob("best-*"))  # chosen by train/acc


def test_checkpointing_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py", *FIT, "--trainer.enable_checkpointing", "false"])
    project.cli.main()
    run = tmp_path / "logs" / "synthetic" / "version_0"
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()


def test_a_bug_in_the_users_own_module_keeps_its_traceback(tmp_path, monkeypatch):
    # A ValueError, like most of the template's own checks: told apart by type (UsageError), not by the class.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py", *FIT, "--model", "tests.run_helpers.ModuleWithABug"])
    with pytest.raises(ValueError, match="a bug in my training_step"):
        project.cli.main()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "--config broken.yaml holds no settings (it is empty)"),
        (
            "trainer:\n  max_epochs: 3\n   bad: [1\n",
            "--config broken.yaml is not valid YAML at line 3, column 7: mapping values are not allowed here",
        ),
        (
            "trainer:\n  max_epochs: 3\nmodel:\n  label_smoothing: 0.1\ntrainer:\n  max_steps: 5\n",
            "broken.yaml gives `trainer` twice (lines 1 and 5); YAML would keep only the last: merge the two",
        ),
        (
            "trainer:\n  max_epochs: 3\n  max_epochs: 4\n",
            "broken.yaml gives `max_epochs` twice (lines 2 and 3)",
        ),
    ],
)
def test_an_empty_or_broken_config_file_is_named(tmp_path, monkeypatch, capsys, content, message):
    (tmp_path / "broken.yaml").write_text(content)
    code, stderr = run_cli([*FIT, "--config", "broken.yaml"], tmp_path, monkeypatch, capsys)
    assert code != 0 and message in stderr, stderr[-1500:]


def test_an_unknown_config_key_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "typo.yaml").write_text("trainer:\n  max_epoch: 3\n")
    code, stderr = run_cli([*FIT, "--config", "typo.yaml"], tmp_path, monkeypatch, capsys)
    assert code != 0 and "does not accept option 'trainer.max_epoch'" in stderr


def test_a_bad_setting_is_reported_before_any_image_is_decoded(tmp_path, monkeypatch, capsys):
    image_folder(tmp_path / "images")
    for flags, message in [
        (["--model.scheduler.warmup_steps", "-5"], "warmup_steps must be a whole number"),
        (["--model.optimizer.lr", "-1"], "model.optimizer: Invalid learning rate: -1.0"),
    ]:
        code, stderr = run_cli(
            [*FIT, "--data", "ImageFolderDataModule", "--data.root", "images", "--data.cache_dir", "cache", *flags],
            tmp_path,
            monkeypatch,
            capsys,
        )
        assert code != 0 and message in stderr and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root.mkdir(), "{root} has no class folders: a classifier needs two or more"),
        (
            lambda root: (root / "train").mkdir(parents=True) or (root / "test").mkdir(),
            "{root}/train has no class folders",
        ),
        (lambda root: image_folder(root, corrupt=True), "{root}/train/cat/broken.png"),
        (
            lambda root: image_folder(root, classes=("cat",)),
            "{root}/train has only cat/: a classifier needs two or more",
        ),
    ],
)
def test_an_empty_or_broken_image_folder_is_named(tmp_path, monkeypatch, capsys, make, message):
    make(tmp_path / "images")
    args = [
        *FIT,
        "--data",
        "ImageFolderDataModule",
        "--data.root",
        "images",
        "--data.val_size",
        "0",
        "--data.cache_dir",
        "cache",
    ]
    code, stderr = run_cli(args, tmp_path, monkeypatch, capsys)
    assert code != 0 and message.format(root="images") in stderr, stderr[-1500:]


@pytest.fixture
def trained(tmp_path, monkeypatch, capsys):
    """A finished run in tmp_path: logs/synthetic/version_0/checkpoints/last.ckpt."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["main.py", *FIT])
    project.cli.main()
    capsys.readouterr()
    return tmp_path / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"


def test_a_checkpoint_of_another_model_is_refused(trained, monkeypatch, capsys):
    code, stderr = run_cli(
        ["test", "--config", SYNTHETIC, *QUIET, "--ckpt_path", str(trained), "--data.num_classes", "4"],
        trained.parents[4],
        monkeypatch,
        capsys,
    )
    assert code != 0 and "the checkpoint does not fit the configured model" in stderr and "head.weight" in stderr


def test_a_damaged_checkpoint_is_refused_before_anything_loads(trained, monkeypatch, capsys):
    data = bytearray(trained.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)  # 2,000 zeroed bytes inside the weights
    damaged = trained.with_name("damaged.ckpt")
    damaged.write_bytes(bytes(data))
    code, stderr = run_cli(
        ["validate", "--config", SYNTHETIC, *QUIET, "--ckpt_path", str(damaged)],
        trained.parents[4],
        monkeypatch,
        capsys,
    )
    assert code != 0 and f"--ckpt_path {damaged} is damaged" in stderr and "fails its checksum" in stderr


@pytest.mark.parametrize("config", [FIT[1:3], []])  # without --config, the run's config.yaml is looked for after
def test_a_plain_state_dict_is_not_a_lightning_checkpoint(tmp_path, monkeypatch, capsys, config):
    torch.save({"network.head.weight": torch.zeros(10, 32)}, tmp_path / "weights.pt")  # torch.save(model.state_dict())
    code, stderr = run_cli(["fit", *config, *FIT[3:], "--ckpt_path", "weights.pt"], tmp_path, monkeypatch, capsys)
    assert code != 0 and "--ckpt_path weights.pt is not a Lightning checkpoint" in stderr
    assert "pass --model.init_weights weights.pt instead" in stderr


def test_a_checkpoint_without_its_runs_config_needs_config(tmp_path, monkeypatch, capsys):
    checkpoint = {"state_dict": {}, "global_step": 0, "pytorch-lightning_version": "2.6.0"}
    torch.save(checkpoint, tmp_path / "copied.ckpt")  # a copy, away from its run's config.yaml
    code, stderr = run_cli(["test", *QUIET, "--ckpt_path", "copied.ckpt"], tmp_path, monkeypatch, capsys)
    assert code != 0 and "--ckpt_path copied.ckpt without --config: its run directory has no config.yaml" in stderr
    assert "pass --config" in stderr


def test_a_checkpoint_that_would_run_code_is_not_loaded(tmp_path, monkeypatch, capsys):
    torch.save({"state_dict": {}, "payload": Image.new("RGB", (1, 1))}, tmp_path / "downloaded.ckpt")  # any class
    code, stderr = run_cli([*FIT, "--ckpt_path", "downloaded.ckpt"], tmp_path, monkeypatch, capsys)
    assert (
        code != 0
        and "holds more than weights (objects of other classes) and was not loaded" in stderr
        and "--weights_only false" in stderr
    )


def test_a_checkpoint_with_objects_loads_with_weights_only_false(trained, monkeypatch, capsys):
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = decimal.Decimal("1.5")  # any class torch does not load by default
    torch.save(checkpoint, trained.with_name("with_objects.ckpt"))
    args = ["validate", "--config", SYNTHETIC, *QUIET, "--ckpt_path", str(trained.with_name("with_objects.ckpt"))]
    code, stderr = run_cli(args, trained.parents[4], monkeypatch, capsys)
    assert code != 0 and "holds more than weights" in stderr
    monkeypatch.setattr(sys, "argv", ["main.py", *args, "--weights_only", "false"])
    with pytest.warns(UserWarning, match="the model is built from this config"):
        project.cli.main()  # a trusted checkpoint: it loads and validates


def test_a_trusted_run_with_objects_in_its_checkpoint_resumes_with_weights_only_false(trained, monkeypatch):
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = decimal.Decimal("1.5")
    torch.save(checkpoint, trained)  # the run's own last.ckpt: resuming it continues the run
    monkeypatch.setattr(
        sys, "argv", ["main.py", *FIT, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--weights_only", "false"]
    )
    with pytest.warns(UserWarning, match="the model is built from this config"):
        project.cli.main()
    assert torch.load(trained, weights_only=False)["epoch"] == 1  # trained on, in the same run


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(trained, monkeypatch, capsys):
    before = trained.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("project.checkpoints.os.fsync", disk_full)
    # Resumed into its own run directory, with no best checkpoint to save first: the failing write is
    # the new last.ckpt over the old one.
    code, stderr = run_cli(
        [
            *FIT,
            "--ckpt_path",
            str(trained),
            "--trainer.max_epochs",
            "2",
            "--trainer.logger.init_args.version",
            "0",
            "--checkpoint.save_top_k",
            "0",
        ],
        trained.parents[4],
        monkeypatch,
        capsys,
    )
    assert code != 0 and "could not write checkpoint" in stderr and "No space left on device" in stderr
    assert trained.read_bytes() == before
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".")]  # no partial file left behind
