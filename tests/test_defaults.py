"""The CLI's defaults are visible and changeable: the callbacks a run has, and where its directory goes."""

from pathlib import Path

import pytest
import yaml
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from pytorch_lightning.utilities.rank_zero import rank_zero_only as pl_rank_zero_only
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import QUIET, REPO, SYNTHETIC, run_in_process
from project.cli import CLI
from project.errors import UsageError

DEFAULTS = [
    "pytorch_lightning.callbacks.LearningRateMonitor",
    "project.callbacks.prediction_writer.PredictionWriter",
    "project.callbacks.graceful_stop.GracefulStop",
    "project.callbacks.finite_loss.StopOnNonFiniteLoss",
    "project.callbacks.tensorboard_pictures.TensorBoardPictures",
    "project.callbacks.hparams_metric.HparamsMetric",
    "pytorch_lightning.callbacks.ThroughputMonitor",
]
# What the CLI itself adds to every trainer, whatever the list: Lightning's own, the checkpoints (`checkpoint.*`
# settings) and the run directory's report.
BUILT_IN = ["SaveConfigCallback", "TQDMProgressBar", "ModelSummary", "Checkpoint", "RunDirectory"]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["main.py"])


def callbacks(*args):
    cli = CLI(args=["--config", SYNTHETIC, *args], run=False)
    return [type(callback).__name__ for callback in cli.trainer.callbacks]


def saved_callbacks(config: Path) -> list[str]:
    return [callback["class_path"] for callback in yaml.safe_load(config.read_text())["trainer"]["callbacks"]]


def test_a_runs_config_lists_the_default_callbacks_that_ran(run_dir):
    assert saved_callbacks(run_dir / "config.yaml") == DEFAULTS
    images = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload().Tags()["images"]
    assert "train/augmented_images" in images  # TensorBoardPictures ran


def test_a_list_adds_to_the_defaults_with_a_plus_and_replaces_them_without():
    names = [path.rsplit(".", 1)[-1] for path in DEFAULTS]
    assert callbacks() == [*names, *BUILT_IN]
    assert callbacks("--trainer.callbacks+=Lookahead") == [*names, "Lookahead", *BUILT_IN]
    assert callbacks("--config", str(REPO / "configs" / "cifar_sgd.yaml"), "--data", "SyntheticDataModule") == [
        *names,
        "Lookahead",
        *BUILT_IN,
    ]
    assert callbacks("--trainer.callbacks", "[LearningRateMonitor]") == ["LearningRateMonitor", *BUILT_IN]
    assert callbacks("--trainer.callbacks", "[]") == BUILT_IN


def test_a_run_with_the_list_replaced_runs_and_records_only_that_list(monkeypatch, tmp_path):
    run_in_process(
        monkeypatch,
        "fit",
        "--config",
        SYNTHETIC,
        "--trainer.callbacks",
        "[{class_path: LearningRateMonitor}]",
        "--trainer.max_steps",
        "2",
        "--model.scheduler.init_args.warmup_steps",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        *QUIET,
    )
    run = tmp_path / "logs" / "synthetic" / "version_0"
    assert saved_callbacks(run / "config.yaml") == ["pytorch_lightning.callbacks.LearningRateMonitor"]
    tags = EventAccumulator(str(run), size_guidance={"images": 0}).Reload().Tags()
    assert tags["images"] == [] and {"train/loss", "lr-AdamW/pg1"} <= set(tags["scalars"])
    assert "train/device/samples_per_sec" not in tags["scalars"]  # ThroughputMonitor did not run either
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_default_root_dir_is_where_the_runs_go(tmp_path):
    cli = CLI(args=["--config", SYNTHETIC, "--trainer.default_root_dir", "runs"], run=False)
    run = Path("runs") / "synthetic" / "version_0"
    assert Path(cli.trainer.logger.log_dir) == run
    assert Path(cli.trainer.default_root_dir) == run  # what Lightning itself writes (hpc_ckpt) goes into the run
    assert not (tmp_path / "logs").exists()


def test_default_root_dir_and_another_save_dir_are_one_error():
    with pytest.raises(UsageError, match="--trainer.default_root_dir runs and --trainer.logger.save_dir elsewhere"):
        CLI(
            args=["--config", SYNTHETIC, "--trainer.default_root_dir=runs", "--trainer.logger.save_dir=elsewhere"],
            run=False,
        )


def test_a_requeued_slurm_job_finds_its_hpc_checkpoint_in_its_run(monkeypatch):
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NODELIST": "node1"}
    for name, value in {**job, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(name, value)
    for rank_zero_only in (utils_rank_zero_only, pl_rank_zero_only):  # the Trainer sets the job's rank
        monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    version = ["--trainer.logger.init_args.version", "slurm-4242"]  # as scripts/slurm.sbatch gives it
    first = CLI(args=["--config", SYNTHETIC, *version], run=False).trainer
    saved = Path(first._checkpoint_connector.hpc_save_path(first.default_root_dir))  # where SIGUSR1 saves
    assert saved == Path("logs", "synthetic", "slurm-4242", "hpc_ckpt_1.ckpt")
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"")
    requeued = CLI(args=["--config", SYNTHETIC, *version], run=False).trainer
    assert Path(requeued._checkpoint_connector._hpc_resume_path) == saved
