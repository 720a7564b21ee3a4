"""The real LightningCLI parser: overrides, short names, every config in configs/."""

from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from conftest import REPO, SYNTHETIC, run_in_process, write_image_folder
from project.cli import CLI
from project.optim.configure import configure_optimizers
from project.optim.warmup_cosine import WarmupCosine


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # logs/ of any run goes here
    monkeypatch.setattr("sys.argv", ["main.py"])  # the CLI reads args=..., not pytest's arguments


def parse(*args):
    return CLI(args=["--config", SYNTHETIC, *args], run=False)


def fit_briefly(cli):
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.trainer.lr_scheduler_configs[0].scheduler


def test_command_line_overrides_reach_the_instantiated_objects():
    cli = parse(
        "--model.optimizer.lr",
        "0.02",
        "--model.optimizer.weight_decay",
        "0.1",
        "--model.scheduler.warmup_steps",
        "3",
        "--model.scheduler.total_steps",
        "11",
        "--model.scheduler.start_factor",
        "0.25",
        "--model.scheduler.min_lr_ratio",
        "0.1",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "5",
        "--trainer.limit_val_batches",
        "1",
        "--data.batch_size",
        "32",
        "--data.train_size",
        "1024",
    )
    assert cli.trainer.max_epochs == 1
    assert cli.trainer.precision == "32-true"  # a CPU run stays in float32
    assert cli.datamodule.batch_size == 32
    scheduler = fit_briefly(cli)
    optimizer = scheduler.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert scheduler.base_lrs == [0.02, 0.02]
    assert isinstance(scheduler, WarmupCosine)
    assert (scheduler.warmup_steps, scheduler.total_steps) == (3, 11)
    assert (scheduler.start_factor, scheduler.min_lr_ratio) == (0.25, 0.1)
    assert scheduler.last_epoch == 5  # stepped once per optimizer step


def test_total_steps_defaults_to_the_trainer_estimate_and_a_configured_value_wins():
    limits = [
        "--model.scheduler.warmup_steps",
        "2",
        "--trainer.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
    ]
    assert fit_briefly(parse(*limits)).total_steps == 6
    assert fit_briefly(parse(*limits, "--model.scheduler.total_steps", "40")).total_steps == 40
    accumulated = fit_briefly(parse(*limits, "--trainer.accumulate_grad_batches", "2"))
    assert accumulated.total_steps == 4


def test_optimizer_and_scheduler_are_selectable_by_short_name():
    cli = parse(
        "--model.optimizer",
        "SGD",
        "--model.optimizer.lr",
        "0.05",
        "--model.optimizer.momentum",
        "0.9",
        "--model.scheduler",
        "CosineAnnealingLR",
        "--model.scheduler.T_max",
        "50",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    )
    scheduler = fit_briefly(cli)
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max == 50
    assert isinstance(scheduler.optimizer, torch.optim.SGD) and scheduler.optimizer.defaults["momentum"] == 0.9
    assert cli.trainer.lr_scheduler_configs[0].interval == "step"
    back = parse(
        "--model.scheduler",
        "CosineAnnealingLR",
        "--model.scheduler",
        "WarmupCosine",
        "--model.scheduler.warmup_steps",
        "4",
    )
    assert back.config.model.init_args.scheduler.class_path == "project.optim.warmup_cosine.WarmupCosine"


def test_the_number_of_classes_comes_from_the_data():
    cli = parse("--data.num_classes", "4")
    assert cli.model.network.head.out_features == 4
    assert cli.model.val_acc.num_classes == 4


RECIPES = sorted(str(p) for p in (REPO / "configs").glob("*.yaml") if p.name != "ddp.yaml")  # ddp.yaml is a preset


def needs(config: str) -> list[str]:
    """What a recipe needs besides itself: images.yaml a folder of images (and, offline, no weights to fetch)."""
    if Path(config).name != "images.yaml":
        return []
    root = write_image_folder(Path.cwd() / "photos", splits=("train",))
    return ["--data.root", str(root), "--model.network.weights", "null"]


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: Path(p).name)
def test_every_config_parses_and_instantiates(config):
    cli = CLI(args=["--config", config, *needs(config)], run=False)
    recipe = yaml.safe_load(Path(config).read_text())
    model = recipe["model"]["init_args"]
    # The classes the recipe names, built with its values.
    assert type(cli.model).__name__ == recipe["model"]["class_path"]
    assert type(cli.model.network).__name__ == model.get("network", {"class_path": "ConvNet"})["class_path"]  # default
    assert type(cli.datamodule).__name__ == recipe["data"]["class_path"]
    assert cli.datamodule.batch_size == recipe["data"].get("init_args", {}).get("batch_size", 64)
    assert cli.trainer.max_epochs == recipe["trainer"]["max_epochs"]
    assert cli.model.optimizer.keywords["lr"] == model["optimizer"]["init_args"]["lr"]
    assert cli.model.scheduler is not None


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: Path(p).name)
def test_the_ddp_preset_composes_with_every_recipe(config):
    cli = CLI(
        args=[
            "--config",
            config,
            "--config",
            str(REPO / "configs" / "ddp.yaml"),
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            *needs(config),
        ],
        run=False,
    )
    assert type(cli.trainer.strategy).__name__ == "DDPStrategy" and cli.trainer.num_devices == 2


class LinearProbe(LightningModule):
    """A user's own LightningModule: it gets the template's optimizer and scheduler wiring in one line."""

    def __init__(
        self,
        num_classes: int,
        optimizer: OptimizerCallable = torch.optim.SGD,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.linear = torch.nn.Linear(3 * 32 * 32, num_classes)
        self.optimizer, self.scheduler = optimizer, scheduler

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.linear(images.flatten(1)), labels)

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer, self.scheduler)


def test_a_users_own_lightning_module_gets_the_same_wiring():
    cli = CLI(
        args=[
            "--model",
            "test_cli.LinearProbe",
            "--model.optimizer",
            "SGD",
            "--model.optimizer.lr",
            "0.1",
            "--model.scheduler",
            "WarmupCosine",
            "--model.scheduler.warmup_steps",
            "2",
            "--data",
            "SyntheticDataModule",
            "--data.num_classes",
            "3",
            "--data.train_size",
            "512",
            "--data.val_size",
            "0",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "4",
            "--trainer.limit_val_batches",
            "0",
            "--checkpoint.monitor",
            "null",
        ],
        run=False,
    )
    assert cli.model.linear.out_features == 3
    scheduler = fit_briefly(cli)
    assert isinstance(scheduler, WarmupCosine) and scheduler.total_steps == 8 and scheduler.last_epoch == 8
    assert cli.trainer.lr_scheduler_configs[0].interval == "step"


@pytest.mark.parametrize(
    "flags, steps",
    [
        (["--trainer.fast_dev_run", "true"], 1),
        (["--trainer.overfit_batches", "2", "--trainer.max_epochs", "2"], 4),  # 2 batches in each of 2 epochs
    ],
)
def test_lightnings_debugging_flags_run_without_the_schedule(flags, steps):
    cli = parse(*flags, "--trainer.enable_progress_bar", "false")
    with pytest.warns(UserWarning, match=rf"trainer.{flags[0][10:]} is set: this debugging run skips the LR schedule"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == steps and not cli.trainer.lr_scheduler_configs
    assert all(group["lr"] == 0.01 for group in cli.trainer.optimizers[0].param_groups)  # the base LR throughout


def test_bf16_mixed_is_the_default_where_torch_sees_a_gpu_and_an_explicit_precision_is_kept(monkeypatch):
    # The CLI's choice only: Lightning counts CUDA devices itself, finds none here and runs on the CPU.
    with monkeypatch.context() as gpu:
        gpu.setattr(torch.cuda, "is_available", lambda: True)
        gpu.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
        assert parse().trainer.precision == "bf16-mixed"
        assert parse("--trainer.precision", "32-true").trainer.precision == "32-true"
    assert parse().trainer.precision == "32-true"  # a CPU run stays in float32


def test_a_torchvision_model_plugs_in_by_name_and_trains_from_scratch_offline():
    import torchvision

    cli = parse(
        "--model.network",
        "torchvision.models.resnet18",
        "--trainer.max_steps",
        "2",
        "--model.scheduler",
        "null",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    )
    network = cli.model.network
    assert isinstance(network, torchvision.models.ResNet) and network.fc.out_features == 10
    cli.trainer.fit(cli.model, cli.datamodule)  # no weights asked for: nothing to download
    assert cli.trainer.global_step == 2


CIFAR = str(REPO / "configs" / "cifar.yaml")
ONE_STEP = ["--data", "SyntheticDataModule", "--data.batch_size", "16", "--trainer.fast_dev_run", "true"]


def test_an_optimizer_switched_on_the_command_line_says_which_values_it_keeps(monkeypatch):
    small = ["--model.network.widths", "[8,8]", *ONE_STEP]
    with pytest.warns(UserWarning, match=r"--model.optimizer AdamW keeps the config's lr 1.66, weight_decay 0.0024 "):
        run_in_process(monkeypatch, "fit", "--config", CIFAR, "--model.optimizer", "AdamW", *small)
    with pytest.warns(UserWarning, match=r"--model.optimizer AdamW keeps the config's weight_decay 0.0024 \("):
        run_in_process(monkeypatch, "fit", "--config", CIFAR, "--model.optimizer", "AdamW",
                       "--model.optimizer.lr", "1e-3", *small)  # fmt: skip


def test_muonsgds_recipe_on_another_network_is_one_warning(monkeypatch):
    network = ["--model.network", "TorchvisionNet", "--model.network.name", "resnet18"]
    with pytest.warns(UserWarning, match="MuonSGD's settings in this config are tuned to ConvNet's head, not to "):
        run_in_process(monkeypatch, "fit", "--config", CIFAR, *network, "--model.network.weights", "null", *ONE_STEP)


def test_freeze_body_is_added_by_its_short_name():
    cli = parse("--trainer.callbacks+=FreezeBody", "--trainer.callbacks.epochs", "2")
    [freeze] = [callback for callback in cli.trainer.callbacks if type(callback).__name__ == "FreezeBody"]
    assert freeze.epochs == 2


def test_a_whole_number_of_batches_is_a_count_not_the_whole_epoch(tmp_path):
    # Lightning: an int is a number of batches, a float a fraction; `1` used to reach it as 1.0, every batch.
    (tmp_path / "limits.yaml").write_text("trainer:\n  limit_val_batches: 2\n")
    cli = parse("--config", str(tmp_path / "limits.yaml"), "--trainer.limit_train_batches", "1",
                "--trainer.limit_test_batches", "0.5", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar",
                "false", "--model.scheduler.warmup_steps", "0")  # fmt: skip
    trainer = cli.trainer
    assert (trainer.limit_train_batches, trainer.limit_val_batches, trainer.limit_test_batches) == (1, 2, 0.5)
    assert type(trainer.limit_train_batches) is int and type(trainer.limit_test_batches) is float
    trainer.fit(cli.model, cli.datamodule)
    assert trainer.global_step == 2  # one batch in each of the two epochs (24 without the limit)
    assert trainer.num_val_batches == [2]
