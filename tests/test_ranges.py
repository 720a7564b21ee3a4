"""Every numeric setting is range-checked when the config is read, before any work.

The settings tried are not listed here: they are the numeric leaves of the effective config (configs/synthetic.yaml
with the template's own callbacks added, and an ImageFolderDataModule config), so a setting added later is tried
too. Each is set out of range, to -1 (-2 where it is -1 already) and, where it is a whole number >= 1, to 0, and the
config is built as the CLI builds it: each value must be refused with one message that names the setting, or be
one of MEANINGFUL, the values that mean something, which must be accepted.
"""

import importlib
import re
import sys
import types
import typing
from typing import Any

import pytest
import torch
from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.demos.boring_classes import BoringModel

from conftest import QUIET, SYNTHETIC, run_in_process, write_image_folder
from project.callbacks.checkpoint import Checkpoint
from project.callbacks.hparams_metric import HparamsMetric
from project.cli import CLI
from project.data.cifar10 import CIFAR10DataModule
from project.data.image_folder import ImageFolderDataModule
from project.data.synthetic import SyntheticDataModule
from project.errors import UsageError, mistake_in
from project.lightning_ranges import TRAINER_RANGES, check_ranges
from project.models.classifier import ImageClassifier
from project.networks.convnet import ConvNet
from project.networks.pretrained import TimmNet, TorchvisionNet
from project.optim.warmup_cosine import WarmupCosine
from run_helpers import ModuleLoggingEpochAccuracy

# Out-of-range values that mean something, by setting (as its flag names it, without init_args).
MEANINGFUL = {
    ("trainer.max_epochs", -1): "no limit",
    ("trainer.num_sanity_val_steps", -1): "the whole validation set",
    ("trainer.log_every_n_steps", 0): "no logging within an epoch",
    ("trainer.logger.version", -1): "a run directory's name, version_-1",
    ("trainer.logger.max_queue", -1): "TensorBoard's writer: no limit to its queue",
    ("trainer.logger.max_queue", 0): "TensorBoard's writer: no limit to its queue",
    ("trainer.logger.flush_secs", -1): "TensorBoard's writer: a flush at every write",
    ("trainer.logger.flush_secs", 0): "TensorBoard's writer: a flush at every write",
    ("trainer.callbacks.FreezeBody.epochs", 0): "freezes nothing",
    ("model.scheduler.warmup_steps", 0): "no warmup",
    ("data.seed", -1): "any whole number seeds torch's generator",
    ("data.split_seed", -1): "any whole number seeds torch's generator",
    ("data.val_size", 0): "validation on the test split",
    ("data.crop_padding", 0): "no shift",
    ("checkpoint.save_top_k", -1): "every checkpoint",
    ("checkpoint.save_top_k", 0): "no best checkpoint, last.ckpt only",
}
if torch.cuda.is_available():
    MEANINGFUL[("trainer.devices", -1)] = "every GPU"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(name, CLI, its config)`` for each config walked, built once (the parser is the slow part): instantiating
    a changed config again is what the CLI does after parsing it."""
    tmp = tmp_path_factory.mktemp("ranges")
    root = write_image_folder(tmp / "photos", splits=("train",))
    configs = {
        "synthetic": ["--trainer.callbacks+=Lookahead", "--trainer.callbacks+=FreezeBody"],
        "image folder": ["--data", "ImageFolderDataModule", "--data.root", str(root), "--data.cache_dir", "cache"],
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp)
        monkeypatch.setattr(sys, "argv", ["main.py"])
        clis = [(name, CLI(args=["--config", SYNTHETIC, *args], run=False)) for name, args in configs.items()]
        yield [(name, cli, cli.config.clone()) for name, cli in clis]


def takes_a_number(annotation: Any) -> bool:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return any(member in (int, float) for member in (typing.get_args(annotation) if union else (annotation,)))


def number_types(cls: type) -> dict[str, bool]:
    """``{parameter: whole}`` for each parameter of ``cls`` whose type takes a number (whole: it takes an int)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # a type named only for type checkers: its numbers are judged by their values
        return {}
    return {name: int in typing.get_args(hint) or hint is int for name, hint in hints.items() if takes_a_number(hint)}


GROUPS = {"trainer": Trainer, "checkpoint": Checkpoint}  # the config's groups of a class's arguments (no class_path)


def numeric_leaves(value: Any, keys: tuple = (), name: str = "", whole: bool | None = None):
    """``(keys, name, value, whole)`` of each number in a config, and of each setting whose type takes one
    (``whole``: an int; else a float)."""
    if isinstance(value, Namespace):
        if "class_path" in value:
            module, _, class_name = value.class_path.rpartition(".")
            cls = getattr(importlib.import_module(module), class_name)
            children, keys = value.get("init_args") or Namespace(), (*keys, "init_args")
        else:
            cls, children = GROUPS.get(name), value
        numbers = number_types(cls) if cls is not None else {}
        for key in vars(children):
            yield from numeric_leaves(children[key], (*keys, key), f"{name}.{key}".lstrip("."), numbers.get(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            label = (
                f"{name}.{item.class_path.rsplit('.', 1)[-1]}" if isinstance(item, Namespace) else f"{name}[{index}]"
            )
            yield from numeric_leaves(item, (*keys, index), label)
    elif whole is not None:
        yield keys, name, value, whole
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield keys, name, value, isinstance(value, int)


def replaced(container: Any, keys: tuple, value: Any) -> Any:
    if not keys:
        return value
    if isinstance(container, Namespace):
        container[keys[0]] = replaced(container[keys[0]], keys[1:], value)
        return container
    items = list(container)
    items[keys[0]] = replaced(items[keys[0]], keys[1:], value)
    return type(container)(items)


def refusal(cli: CLI, config: Namespace) -> str | None:
    """What ``main.py`` would say of ``config``: the one-line mistake it stops on before any work, or None if
    the config builds. Anything else (a traceback) fails the test."""
    try:
        check_ranges(config)  # what the CLI runs on the config it has read (cli.py, parse_arguments)
        cli.config = config
        cli.before_instantiate_classes()
        cli.instantiate_classes()
    except Exception as err:
        mistake = mistake_in(err)
        if mistake is None:
            raise
        return str(mistake)
    try:
        cli.parser.validate(config)  # a type with constraints: the parser refuses it (main.py parses first)
    except (TypeError, ValueError) as err:  # main.py's parser prints one line of it, after the setting's name
        return " ".join(str(err).split())
    return None


def test_out_of_range_values_are_refused_or_mean_something(built):
    tried, wrong = set(), []
    for config_name, cli, base in built:
        linked = {action.target[0] for action in cli.parser._links_group._group_actions}  # set from another
        for keys, name, value, whole in numeric_leaves(base):
            if ".".join(str(key) for key in keys) in linked:
                continue
            bad = [-2 if value == -1 else -1] if whole else [-2.0 if value == -1 else -1.0]
            if whole and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                bad.append(0)
            for number in bad:
                if (name, value, number) in tried:  # the same setting in both configs
                    continue
                tried.add((name, value, number))
                try:
                    message = refusal(cli, replaced(base.clone(), keys, number))
                except Exception as err:
                    wrong.append(f"{name} {number} ({config_name}): {type(err).__name__} {err}"[:300])
                    continue
                setting = name.rsplit(".", 1)[-1].split("[")[0]
                parent = name.rsplit(".", 1)[0] if name.count(".") > 1 else setting  # a class's, e.g. model.optimizer
                if message is None and (name, number) not in MEANINGFUL:
                    wrong.append(f"{name} {number} ({config_name}): accepted")
                elif message is not None and (name, number) in MEANINGFUL:
                    wrong.append(
                        f"{name} {number} ({config_name}) means {MEANINGFUL[name, number]}, refused: {message}"
                    )
                elif message is not None and (setting not in message and parent not in message or "\n" in message):
                    wrong.append(f"{name} {number} ({config_name}): a message that does not name it: {message!r}")
    assert len(tried) > 80 and not wrong, "\n".join(wrong)
    assert {(name, number) for name, _, number in tried} >= set(MEANINGFUL)  # none stale


@pytest.mark.parametrize(
    "setting, value, message",
    [  # values the walk above does not try, which Lightning would take
        ("trainer.max_steps", 0, "--trainer.max_steps must be >= 1, or -1 for no limit, got 0"),
        ("trainer.val_check_interval", 0, "--trainer.val_check_interval must be a whole number of batches >= 1, "),
        ("trainer.val_check_interval", 0.0, "--trainer.val_check_interval must be"),
        ("trainer.devices", "-2", "--trainer.devices must be >= 1, or -1 for every GPU, got -2"),
        ("trainer.num_sanity_val_steps", -2, "--trainer.num_sanity_val_steps must be >= 0, or -1 for the whole"),
        ("seed_everything", 2**32, "--seed_everything must be a whole number in [0, 4294967295]"),
    ],
)
def test_a_value_lightning_would_take_and_fail_on_later_is_refused(built, setting, value, message):
    config = built[0][2].clone()
    config[setting] = value
    with pytest.raises(UsageError, match=re.escape(message)):
        check_ranges(config)


def test_every_numeric_trainer_setting_has_a_range():
    numeric = {name for name, hint in typing.get_type_hints(Trainer.__init__).items() if takes_a_number(hint)}
    assert numeric == set(TRAINER_RANGES)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: SyntheticDataModule(crop_padding=32),
            r"data.crop_padding must be smaller than .* \(32 pixels\), got 32",
        ),
        (lambda: SyntheticDataModule(image_size=8, crop_padding=8), r"\(8 pixels\), got 8"),
        (lambda: SyntheticDataModule(val_size=100, train_size=100), r"val_size must be smaller than .*100 images"),
        (lambda: SyntheticDataModule(num_classes=1), r"data.num_classes must be >= 2 .*, got 1"),
        (lambda: SyntheticDataModule(image_size=0, crop_padding=0), r"data.image_size must be >= 1 pixel, got 0"),
        (lambda: CIFAR10DataModule(crop_padding=40), r"data.crop_padding must be smaller than .* \(32 pixels\)"),
        (lambda: CIFAR10DataModule(val_size=50_000), r"val_size must be smaller than the training set \(50000"),
        (lambda: ImageClassifier(num_classes=1), r"model.num_classes must be >= 2"),
        (lambda: ConvNet(num_classes=0), r"ConvNet num_classes must be >= 1, got 0"),
        (lambda: TorchvisionNet(num_classes=0, weights=None), r"TorchvisionNet num_classes must be >= 1, got 0"),
        (lambda: TimmNet(num_classes=0), r"TimmNet num_classes must be >= 1, got 0"),
        (
            lambda: WarmupCosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), total_steps=9, last_epoch=3),
            r"last_epoch 3 continues a schedule that this optimizer has not run",
        ),
        (
            lambda: WarmupCosine(torch.optim.SGD([torch.zeros(1, requires_grad=True)]), total_steps=9, last_epoch=-2),
            r"last_epoch must be >= -1 \(-1: a new schedule\), got -2",
        ),
    ],
)
def test_what_the_walk_does_not_try_is_checked_when_built(build, message):
    with pytest.raises(UsageError, match=message):
        build()


def test_a_crop_padding_that_fits_is_accepted():
    SyntheticDataModule(image_size=8, crop_padding=7)
    CIFAR10DataModule(crop_padding=31)


def test_an_image_folders_crop_padding_is_checked_against_the_image_size_once_it_is_known(tmp_path):
    root = write_image_folder(tmp_path / "photos", splits=("train",))
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match=r"crop_padding must be smaller than the images it shifts \(16 pixels\)"):
        ImageFolderDataModule(str(root), image_size=16, crop_padding=16, cache_dir=str(cache))
    ImageFolderDataModule(str(root), image_size=16, crop_padding=16, random_crop_scale=(0.5, 1.0), cache_dir=str(cache))
    # Unset, the image size is the network's (set by the CLI before fit), else 32: checked before any decoding.
    data = ImageFolderDataModule(str(root), crop_padding=40, cache_dir=str(cache))
    for stage in (data.prepare_data, lambda: data.setup("fit")):
        with pytest.raises(UsageError, match=r"\(32 pixels\), got 40"):
            stage()
    assert not cache.exists()
    data.image_size = 64  # a network's preprocessing, as CLI.connect_data_to_network sets it
    data.prepare_data()
    assert cache.is_dir()


def test_a_monitor_is_checked_against_what_the_module_says_it_logs():
    trainer = types.SimpleNamespace(callbacks=[HparamsMetric()])
    classifier = ImageClassifier(network=lambda num_classes: ConvNet(num_classes, widths=(8,)))
    for monitor in (*ImageClassifier.metrics_logged_in_fit, "hp_metric", "epoch", "step", None):
        Checkpoint(monitor=monitor).check_monitor(trainer, classifier)
    with pytest.raises(UsageError, match=r"'val/accc' is not a metric ImageClassifier logs; it logs: train/loss, "):
        Checkpoint(monitor="val/accc").check_monitor(trainer, classifier)
    # A module that does not say, or a subclass that may log more (it does not inherit the list): checked after
    # the first epoch, as before (tests/test_bad_input.py).
    Checkpoint(monitor="val/accc").check_monitor(trainer, BoringModel())
    subclass = ModuleLoggingEpochAccuracy(network=lambda num_classes: ConvNet(num_classes, widths=(8,)))
    Checkpoint(monitor="train/acc").check_monitor(trainer, subclass)


def test_a_monitor_the_module_does_not_log_stops_the_run_before_its_first_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, *QUIET, "--checkpoint.monitor", "val/accc")
    assert str(stopped.value.code).startswith(
        "error: checkpoint.monitor 'val/accc' is not a metric ImageClassifier logs; it logs: train/loss, val/loss, "
        "val/acc; or --checkpoint.monitor null\n"
    )
    # Refused before the data is set up and the run directory is made: nothing was written.
    assert not (tmp_path / "logs").exists()
