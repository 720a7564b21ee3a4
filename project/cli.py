"""The one place that knows data, model, optimizer, scheduler and trainer: LightningCLI and its defaults."""

import importlib
import inspect
import logging
import os
import pickle
import re
import sys
import warnings
from pathlib import Path

import torch
import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import EMAWeightAveraging, LearningRateMonitor, ThroughputMonitor  # noqa: F401
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins import TorchCheckpointIO

# Imported so that configs and flags can name these classes by their short names
# (`class_path: WarmupCosine`, `--data SyntheticDataModule`).
from project.callbacks.checkpoint import Checkpoint
from project.callbacks.finite_loss import StopOnNonFiniteLoss  # noqa: F401
from project.callbacks.freeze_body import FreezeBody  # noqa: F401
from project.callbacks.graceful_stop import GracefulStop  # noqa: F401
from project.callbacks.hparams_metric import HparamsMetric  # noqa: F401
from project.callbacks.lookahead import Lookahead  # noqa: F401
from project.callbacks.prediction_writer import PredictionWriter  # noqa: F401
from project.callbacks.run_directory import RunDirectory
from project.callbacks.tensorboard_pictures import TensorBoardPictures  # noqa: F401
from project.checkpoints import (
    AtomicCheckpointIO,
    ResumeReport,
    check_checkpoint_file,
    check_checkpoint_fits,
    checkpoint_step,
    newest_last_checkpoint,
    run_config,
    run_continued_by,
    warn_not_applied,
)
from project.data.cifar10 import CIFAR10DataModule  # noqa: F401
from project.data.image_folder import ImageFolderDataModule  # noqa: F401
from project.data.in_memory import InMemoryImageDataModule
from project.data.synthetic import SyntheticDataModule  # noqa: F401
from project.errors import UsageError, mistakes_as_one_line
from project.lightning_ranges import check_ranges
from project.models.classifier import ImageClassifier  # noqa: F401
from project.networks.convnet import ConvNet  # noqa: F401
from project.networks.pretrained import TimmNet, TorchvisionNet  # noqa: F401
from project.optim.muon_sgd import MuonSGD  # noqa: F401
from project.optim.warmup_cosine import WarmupCosine  # noqa: F401

# What Lightning and torch print on every run that concerns none of this template's users: an advertisement
# for Lightning's cloud logger, and a deprecation inside Lightning's own use of torch's pytree.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip: For seamless cloud logging")
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
# Evaluating or continuing a checkpoint in a new run directory is how this template works (README, Resume).
warnings.filterwarnings("ignore", message="The dirpath has changed from .* won't be reloaded")

BATCH_COUNTS_OR_FRACTIONS = {f"trainer.limit_{stage}_batches" for stage in ("train", "val", "test", "predict")}
DEFAULT_SAVE_DIR = "logs"  # where the runs go: logs/<name>/version_<n>/
DEFAULT_RUN_NAME = "default"  # the logger's name when a config sets none; an image folder's run takes its name
# The default of --trainer.callbacks, so that --print_config and every run's config.yaml list what runs:
# `--trainer.callbacks+=Lookahead` (`callbacks+:` in a config) adds one, a whole list replaces them.
# (LightningCLI's trainer_defaults would add them to any list given, and config.yaml would not show them.)
DEFAULT_CALLBACKS = [
    {"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "step"}},
    {"class_path": "PredictionWriter"},
    {"class_path": "GracefulStop"},
    {"class_path": "StopOnNonFiniteLoss"},
    {"class_path": "TensorBoardPictures"},
    {"class_path": "HparamsMetric"},
    {
        "class_path": "ThroughputMonitor",
        # A rate over the last 10 steps: the default window (100) is longer than short runs.
        "init_args": {"batch_size_fn": "project.callbacks.throughput.images_in_batch", "window_size": 10},
    },
]


class Parser(LightningArgumentParser):
    """LightningCLI's parser, whose errors are one line: the setting and the innermost reason.

    jsonargparse explains a bad value with one nested level per class and every type of a Union it
    tried (15-20 lines); TRACEBACK=1 shows that full message.
    """

    def print_usage(self, file=None) -> None:
        pass  # a mistake shows its error, not the 60-line usage first

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("TRACEBACK"):
            super().error(message, ex)  # jsonargparse's inner parsers raise, and it handles the error itself
        reason = ex
        while reason is not None and reason.__cause__ is not None:
            reason = reason.__cause__
        reason_text = (str(reason) if reason is not None else "").strip() or message
        reason_text = re.sub(r"<class '([\w.]+)'>", r"\1", reason_text.splitlines()[0])
        # Each nested level says `Parser key "<name>"`: together they are the setting's full name.
        setting = ".".join(dict.fromkeys(re.findall(r'Parser key "([^"]+)"', message)))
        line = f"{setting}: {reason_text}" if setting and not reason_text.startswith("Parser key") else reason_text
        prog = (getattr(ex, "subcommand_parser", None) or self).prog.replace(" [options]", "")
        sys.stderr.write(
            f"error: {line}\n({prog} --help lists the settings; set TRACEBACK=1 for the parser's full message)\n"
        )
        sys.exit(2)


class CLI(LightningCLI):
    """LightningCLI with the template's defaults.

    - Any LightningModule and LightningDataModule can be named by ``class_path``.
    - No ``--optimizer`` / ``--lr_scheduler`` at the top level: LightningCLI would step such a
      scheduler once per *epoch*, before the trainer can size it. Optimizer and scheduler are
      arguments of the model instead (``--model.optimizer``, ``--model.scheduler``).
    - Each run logs to its own ``logs/<name>/version_<n>/``: TensorBoard events, ``config.yaml``,
      ``checkpoints/last.ckpt`` and the best checkpoint by ``val/acc``.
    - On a GPU, ``bf16-mixed`` precision unless ``--trainer.precision`` says otherwise.
    - Checkpoints are written atomically, loaded with ``weights_only=True`` unless told otherwise,
      and ``--ckpt_path last`` means the newest ``last.ckpt`` of this logger name's runs (for fit: or a
      fresh start if there is none). Resuming a run's own ``last.ckpt`` continues in that run's directory
      (``project/checkpoints.py``).
    - Ctrl-C or SIGTERM saves a resumable checkpoint; a non-finite loss stops the run.
    """

    def __init__(self, args=None, run: bool = True) -> None:
        super().__init__(
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            trainer_defaults={
                "logger": {
                    "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": DEFAULT_RUN_NAME},
                },
            },
            # Each run has its own directory; a requeued SLURM job continues in its run's and rewrites its config.
            save_config_kwargs={"overwrite": True},
            parser_class=Parser,
            parser_kwargs={
                subcommand: {
                    "epilog": "Each part has its own help, e.g. `main.py fit --config configs/cifar.yaml "
                    "--model.scheduler.help WarmupCosine`; also --model.help ImageClassifier, "
                    "--model.optimizer.help SGD, --data.help CIFAR10DataModule."
                }
                for subcommand in ("fit", "validate", "test", "predict")
            },
            args=args,
            run=run,
        )

    def before_instantiate_classes(self) -> None:
        # With --ckpt_path, LightningCLI has replaced the model's settings by the checkpoint's: note
        # which of the values given for this run lost (a fit's ResumeReport adds the optimizer's and
        # the schedule's, and warns once).
        model = leaves(self.config[self.subcommand].model) if self.subcommand else {}
        self._model_not_applied = [
            f"model.{key} {value!r} (kept: {model[key]!r})"
            for key, value in getattr(self, "_model_as_given", {}).items()
            # num_classes: set from the data when both are built (the link below)
            if key in model and model[key] != value and key != "num_classes"
        ]
        if self.subcommand != "fit":
            warn_not_applied(self._model_not_applied)
        trainer = self.config[self.subcommand].trainer if self.subcommand else self.config.trainer
        if trainer.logger is False or trainer.logger == []:
            raise UsageError(
                "--trainer.logger false: a run's directory (config.yaml, checkpoints, predictions.csv) "
                "is its logger's logs/<name>/version_<n>/, so every run needs a logger; keep the default "
                "TensorBoard logger or name another, e.g. --trainer.logger "
                "pytorch_lightning.loggers.CSVLogger --trainer.logger.save_dir logs"
            )
        if trainer.barebones:  # Lightning would refuse the logger and callbacks, and name settings that are refused too
            raise UsageError(
                "--trainer.barebones true turns off the logger, checkpoints and callbacks that a run of this template "
                "is made of (its directory, last.ckpt, resume); leave it off. For the bare loop's speed, "
                "benchmarks/loop_overhead.py measures the template against bare Lightning"
            )
        apple_gpu = trainer.accelerator == "gpu" and torch.backends.mps.is_available()  # Lightning's "gpu" takes it
        if trainer.accelerator in ("gpu", "cuda") and not (torch.cuda.is_available() or apple_gpu):
            raise UsageError(
                f"--trainer.accelerator {trainer.accelerator}: this machine has no GPU that torch "
                "can use; use --trainer.accelerator auto (the default) or cpu"
            )
        # Unless configured, a GPU run autocasts to bfloat16 (about twice as fast for these convnets);
        # a CPU run stays in float32, where bfloat16 autocast is slower.
        gpu = trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        if trainer.precision is None and gpu and torch.cuda.is_bf16_supported():
            trainer.precision = "bf16-mixed"
        if str(trainer.precision) in ("16", "16-mixed") and not (gpu or apple_gpu or trainer.accelerator == "mps"):
            # Lightning would run bf16-mixed instead, while the run's config.yaml said 16-mixed.
            raise UsageError(
                f"--trainer.precision {trainer.precision}: float16 autocast needs a GPU; on a CPU use "
                "--trainer.precision bf16-mixed (or 32-true, the default here)"
            )

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        if config.get("enable_checkpointing") is False:  # Lightning refuses a checkpoint callback then
            callbacks = [callback for callback in callbacks if not isinstance(callback, Checkpoint)]
        # What Lightning writes in its default_root_dir (a SLURM requeue's hpc_ckpt_<n>.ckpt) goes into the run's
        # directory: a requeued job that logs into the same run (scripts/slurm.sbatch) finds it there.
        run = getattr(config.get("logger"), "log_dir", None)
        if run is not None:
            config["default_root_dir"] = run
        try:
            return super()._instantiate_trainer(config, callbacks)
        except ValueError as err:  # the Trainer refuses a combination of its settings
            raise UsageError(f"trainer: {err}") from err

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # unless a plugin of the config says otherwise
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        # Built now, before the trainer creates its run directory: it tells one this process created.
        self._run_directory = RunDirectory(trainer.logger)
        trainer.callbacks.append(self._run_directory)
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            # After Lightning has closed the logger: a run that failed before its first step leaves no directory.
            self._run_directory.remove_if_unused(self.trainer)
            raise

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        command_line = sys.argv[1:] if args is None else args
        if isinstance(command_line, list):
            command_line = _with_run_config(command_line)
            for path in _config_files(command_line):  # jsonargparse names neither an empty file nor where YAML breaks
                _check_config_file(path)
        if args is None and command_line != sys.argv[1:]:  # LightningCLI warns when given args beside sys.argv
            self.config = parser.parse_args(command_line)
        else:
            super().parse_arguments(parser, args if args is None else command_line)
        subcommand = self.config.get("subcommand")
        _runs_under_default_root_dir((self.config[subcommand] if subcommand else self.config).trainer)
        check_ranges(self.config[subcommand] if subcommand else self.config)  # before anything is built or seeded
        if self.config.get("subcommand"):
            config = self.config[self.config.subcommand]
            if self.config.subcommand != "fit" and config.ckpt_path is None:
                raise UsageError(
                    f"{self.config.subcommand} evaluates trained weights: pass --ckpt_path with a run's "
                    "checkpoint (logs/<name>/<version>/checkpoints/last.ckpt), or --ckpt_path last "
                    "for the newest run of the config's logger name"
                )
            _resolve_data_paths(config)
            if self.config.subcommand == "fit" and isinstance(command_line, list):
                _warn_inherited_settings(command_line, config.model)
            self._check_checkpoint_arguments(self.config.subcommand, config)
            self._model_as_given = leaves(config.model)

    def _check_checkpoint_arguments(self, subcommand: str, config) -> None:
        # Before LightningCLI reads the checkpoint's hyperparameters, so that these errors come first.
        if config.weights_only is None:
            config.weights_only = True  # a checkpoint is data: loading one must not run code (README, Trust)
        logger_args = getattr(config.trainer.logger, "init_args", None) or {}
        if config.ckpt_path == "last":
            newest = newest_last_checkpoint(logger_args, required=subcommand != "fit")
            config.ckpt_path = str(newest) if newest else None
        elif config.ckpt_path == "best":  # Lightning's "best" exists only in the process that trained
            raise UsageError(
                "--ckpt_path best: pass the best checkpoint's path, "
                "logs/<name>/<version>/checkpoints/best-*.ckpt, or --ckpt_path last"
            )
        elif config.ckpt_path is not None and config.ckpt_path != "hpc":
            check_checkpoint_file(Path(config.ckpt_path), config.weights_only)
        if subcommand == "fit" and config.ckpt_path not in (None, "hpc"):
            self._continue_run(config, Path(config.ckpt_path), logger_args)

    def _continue_run(self, config, checkpoint: Path, logger_args) -> None:
        # Resuming a run's last.ckpt logs into that run: its TensorBoard curves go on (points that the
        # stopped process logged after the checkpoint are dropped), its config.yaml is kept, and this
        # resume's config is saved beside it.
        run = run_continued_by(checkpoint, logger_args)
        if run is None:
            return
        step = checkpoint_step(checkpoint, config.weights_only)
        logger_args["version"] = run.name
        if config.trainer.logger.class_path.endswith(".TensorBoardLogger"):
            logger_args["purge_step"] = step  # passed on to TensorBoard's SummaryWriter
        self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"config-resumed-at-step{step}.yaml"}

    def _parse_ckpt_path(self) -> None:
        try:
            super()._parse_ckpt_path()  # LightningCLI reads the checkpoint's hyperparameters with weights_only=True
        except pickle.UnpicklingError:
            if self.config[self.config.subcommand].weights_only is not False:
                raise
            warnings.warn(
                "the checkpoint's hyperparameters hold objects that weights_only=True does not load: the "
                "model is built from this config, and the trusted checkpoint's weights are loaded into it"
            )

    def after_fit(self) -> None:
        if self.config.fit.test_after_fit:
            self.trainer.test(self.model, datamodule=self.datamodule)  # the model in memory: the final weights

    def _check_checkpoint_fits(self) -> None:
        self.connect_data_to_network()
        config = self.config[self.subcommand]
        if config.ckpt_path not in (None, "hpc"):
            check_checkpoint_fits(self.model, Path(config.ckpt_path), config.weights_only)

    before_validate = before_test = before_predict = _check_checkpoint_fits

    def connect_data_to_network(self) -> None:
        """Pretrained weights expect the normalization they were trained with: a network that says what it
        expects (``preprocessing``, as ``TorchvisionNet`` does) sets the data's mean and std."""
        preprocessing = getattr(getattr(self.model, "network", None), "preprocessing", None)
        data = self.datamodule
        if not preprocessing or not isinstance(data, InMemoryImageDataModule):
            return
        data.normalization = (preprocessing["mean"], preprocessing["std"])
        # Sizes the config leaves unset (ImageFolderDataModule's image_size, crop_fraction): the network's own,
        # written into the run's config.yaml.
        sizes = {
            "image_size": preprocessing["crop_size"],
            "crop_fraction": preprocessing["crop_size"] / preprocessing["resize_size"],
        }
        for key, value in sizes.items():
            if getattr(data, key, False) is None:
                setattr(data, key, value)
                (self.config[self.subcommand] if self.subcommand else self.config).data.init_args[key] = value

    def _record_splits(self) -> None:
        # A datamodule that splits its folder writes which image went where into the run directory, and the
        # run's config.yaml names that file: test, predict and a rerun then read the same splits.
        data = self.datamodule
        if getattr(data, "splits_file", False) is None and self.trainer.log_dir is not None:
            data.splits_file = Path(self.trainer.log_dir).resolve() / "splits.csv"
            self.config.fit.data.init_args.splits = str(data.splits_file)

    def before_fit(self) -> None:
        if isinstance(self.trainer.checkpoint_callback, Checkpoint):  # before the data is loaded (setup)
            self.trainer.checkpoint_callback.check_monitor(self.trainer, self.model)
        self._check_checkpoint_fits()
        self._record_splits()
        self.trainer.callbacks.append(ResumeReport(self._model_not_applied))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Lightning reads an int as a number of batches and a float as a fraction, but jsonargparse tries the
        # types of these settings' Union in annotation order, float first: `--trainer.limit_train_batches 1` (or
        # `1` in a config) became 1.0, the whole epoch. Int first keeps what was written. (jsonargparse has no
        # public way to retype an argument that LightningCLI added from the Trainer's signature.)
        for action in parser._actions:
            if action.dest in BATCH_COUNTS_OR_FRACTIONS:
                action._typehint = int | float | None
        # Every subcommand accepts it, so that a run's config.yaml can be given to validate/test/predict.
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit: when training ends, test its final weights in the same process (the figure "
            "lands in the run's TensorBoard and the printed summary); ignored by the others",
        )
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(
            {
                "trainer.callbacks": DEFAULT_CALLBACKS,
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                # A resumed run writes into its own directory: its last.ckpt is replaced, not joined by last-v1.ckpt.
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def _with_run_config(command_line: list[str]) -> list[str]:
    """``--ckpt_path <file>`` and no ``--config``: the command line with ``--config <run>/config.yaml`` (the
    checkpoint's run's config) right after the subcommand, so that the flags given apply on top of it."""
    subcommand = next((i for i, arg in enumerate(command_line) if arg in ("fit", "validate", "test", "predict")), None)
    if subcommand is None or any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in command_line):
        return command_line
    ckpt_path = next((value for flag, value in reversed(_flag_values(command_line)) if flag == "--ckpt_path"), None)
    if ckpt_path in (None, "", "null", "last", "best", "hpc"):  # "last" needs the config's logger name
        return command_line
    config = str(run_config(Path(ckpt_path)))
    return [*command_line[: subcommand + 1], "--config", config, *command_line[subcommand + 1 :]]


def _config_files(command_line: list[str]) -> list[str]:
    return [value for flag, value in _flag_values(command_line) if flag == "--config"]


class _UniqueKeys(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping, where plain YAML keeps the last without a word."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise UsageError(
                    f"--config {self.name} gives `{key}` twice (lines {lines[key]} and {line}); "
                    "YAML would keep only the last: merge the two"
                )
            lines[key] = line
        return super().construct_mapping(node, deep)


def _check_config_file(path: str) -> None:
    if not Path(path).is_file():
        return  # jsonargparse says so, with the full path
    try:
        with open(path) as file:
            content = yaml.load(file, _UniqueKeys)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"--config {path} is not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(content, dict):
        why = "it is empty" if content is None else "not a mapping"
        raise UsageError(
            f"--config {path} holds no settings ({why}): a config is YAML of `key: value` lines, "
            "e.g. `trainer:` then `  max_epochs: 3`"
        )


DATA_PATHS = ("root", "predict_dir", "splits", "cache_dir")  # a datamodule's settings that name files


def _resolve_data_paths(config) -> None:
    """Relative data paths become absolute, so that the run's saved config.yaml works from any directory; and a
    run of an image folder, under the default logger name, is named after the folder (logs/<folder>/...)."""
    init_args = getattr(config.data, "init_args", None) if config.get("data") else None
    if init_args is None:
        return
    for key in DATA_PATHS:
        value = init_args.get(key)
        if isinstance(value, str) and "://" not in value:
            init_args[key] = str(Path(value).expanduser().resolve())
    logger_args = getattr(config.trainer.logger, "init_args", None)
    if init_args.get("root") and logger_args is not None and logger_args.get("name") == DEFAULT_RUN_NAME:
        logger_args["name"] = Path(init_args["root"]).name


def _runs_under_default_root_dir(trainer) -> None:
    """``--trainer.default_root_dir``, Lightning's "default path for logs and weights", is where the run directories
    go: the logger's ``save_dir`` (``<default_root_dir>/<name>/version_<n>``)."""
    root = trainer.default_root_dir
    logger_args = getattr(trainer.logger, "init_args", None)
    if root is None or logger_args is None or "save_dir" not in logger_args:
        return
    if logger_args["save_dir"] not in (DEFAULT_SAVE_DIR, root):
        raise UsageError(
            f"--trainer.default_root_dir {root} and --trainer.logger.save_dir {logger_args['save_dir']} both say "
            "where the runs go; give one of them"
        )
    logger_args["save_dir"] = root


def _warn_inherited_settings(command_line: list[str], model) -> None:
    """One line where a recipe's values meet a class they were not chosen for: an optimizer class switched on the
    command line keeps the config's values for the settings both classes have (jsonargparse carries them over),
    and MuonSGD's LRs are tuned to ConvNet's head and logit scale."""
    init_args = getattr(model, "init_args", None)
    if init_args is None:
        return
    optimizer = init_args.get("optimizer")
    switched = [value for flag, value in _flag_values(command_line) if flag == "--model.optimizer"]
    if switched and getattr(optimizer, "class_path", None) and not switched[-1].lstrip().startswith("{"):
        given = {flag.split(".")[-1] for flag, _ in _flag_values(command_line) if flag.startswith("--model.optimizer.")}
        defaults = _defaults(optimizer.class_path)
        kept = {
            key: value
            for key, value in (optimizer.get("init_args") or {}).items()
            if key not in given and key in defaults and value != defaults[key]
        }
        if kept:
            values = ", ".join(f"{key} {value}" for key, value in kept.items())
            warnings.warn(
                f"--model.optimizer {switched[-1]} keeps the config's {values} (set for its former optimizer); "
                f"give them for the new one (e.g. --model.optimizer.lr), or start from a config made for it"
            )
    network = init_args.get("network")  # a class's Namespace, or a function (torchvision.models.resnet18)
    network = getattr(network, "class_path", None) or getattr(network, "__qualname__", "")
    if getattr(optimizer, "class_path", "").endswith("MuonSGD") and network and not network.endswith(".ConvNet"):
        warnings.warn(
            f"MuonSGD's settings in this config are tuned to ConvNet's head, not to {network.rsplit('.', 1)[-1]}: "
            "expect it to train poorly or diverge; for another network start from configs/images.yaml"
        )


def _flag_values(command_line: list[str]) -> list[tuple[str, str]]:
    """``(flag, value)`` for each ``--flag=value`` and each ``--flag value`` on the command line."""
    pairs = [tuple(arg.split("=", 1)) for arg in command_line if arg.startswith("--") and "=" in arg]
    return pairs + [(flag, value) for flag, value in zip(command_line, command_line[1:]) if flag.startswith("--")]


def _defaults(class_path: str) -> dict:
    module, _, name = class_path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def leaves(namespace) -> dict:
    """``{"init_args.optimizer.init_args.lr": 0.01, ...}`` for a nested config, "init_args." left out."""

    def walk(value, prefix):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, prefix if key == "init_args" else f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), value

    return dict(walk(namespace.as_dict() if hasattr(namespace, "as_dict") else namespace, ""))


def main() -> None:
    """Run the CLI; a user's mistake found after parsing ends with one line, not a traceback."""
    with mistakes_as_one_line():
        CLI()
