"""DDP for real: two CPU processes (gloo) through `python main.py`, launched by Lightning and by torchrun."""

import os
import re
import subprocess
import sys

import pytest
import torch
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities.rank_zero import rank_zero_only as pl_rank_zero_only

from conftest import QUIET, REPO, SYNTHETIC, scalars, write_image_folder
from project.cli import CLI

DDP = str(REPO / "configs" / "ddp.yaml")
# configs/synthetic.yaml runs batch 64 in one process; two processes of 32 make the same global batch.
TWO_CPU_PROCESSES = [
    "--config",
    DDP,
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "2",
    "--data.batch_size",
    "32",
]


def save_weights_per_rank(directory):
    return ["--trainer.callbacks+=tests.run_helpers.SaveWeightsPerRank", f"--trainer.callbacks.dirpath={directory}"]


def assert_ranks_agree(weights_dir):
    ranks = [torch.load(weights_dir / f"rank{rank}.pt") for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert ranks[0]["weights"].keys() == ranks[1]["weights"].keys()
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in ranks[0]["weights"])
    # Each rank draws its own half of the training set through the datamodule: disjoint, equal, complete.
    shards = [set(r["shard"].tolist()) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == ranks[0]["train_size"] // 2 and not shards[0] & shards[1]


def assert_written_once(workdir):
    [run] = (workdir / "logs" / "synthetic").iterdir()  # one run directory: rank 1 writes none
    assert run.name == "version_0" and (run / "config.yaml").is_file()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    best, last = sorted(p.name for p in (run / "checkpoints").iterdir())  # these two alone, once each
    assert re.fullmatch(r"best-epoch\d{3}-acc0\.\d{4}\.ckpt", best) and last == "last.ckpt"
    return run


def main_py(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "main.py"), "fit", "--config", SYNTHETIC, *TWO_CPU_PROCESSES, *QUIET, *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The DDP jobs of this file, started at once (each spends most of its time starting up and waiting on its
    other rank): name -> (its working directory, its CompletedProcess)."""
    workdirs = {name: tmp_path_factory.mktemp(name) for name in ("ddp", "fail0", "fail1", "torchrun", "images")}
    write_image_folder(workdirs["images"] / "images", classes=("cat", "dog"), per_class=40)
    commands = {
        "ddp": main_py("--trainer.log_every_n_steps", "1", *save_weights_per_rank(workdirs["ddp"] / "weights")),
        **{
            f"fail{rank}": main_py("--data", "tests.run_helpers.DataMissingOnOneRank", f"--data.failing_rank={rank}")
            for rank in (0, 1)
        },
        # torchrun starts every process itself and sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT;
        # Lightning detects that (TorchElasticEnvironment) and launches nothing more.
        "torchrun": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            *main_py("--trainer.max_epochs", "1", *save_weights_per_rank(workdirs["torchrun"] / "weights"))[1:],
        ],
        "images": main_py(
            "--trainer.max_epochs",
            "1",
            "--data",
            "ImageFolderDataModule",
            "--data.root",
            "images",
            "--data.val_size",
            "0",
            "--data.batch_size",
            "16",
            "--data.cache_dir",
            "cache",
            "--model.scheduler.warmup_steps",
            "1",
            *save_weights_per_rank(workdirs["images"] / "weights"),
        ),
    }
    started = {
        name: subprocess.Popen(command, cwd=workdirs[name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    finished = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)  # a job that hangs fails the tests
        finished[name] = workdirs[name], subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return finished


@pytest.fixture(scope="module")
def ddp_workdir(runs):
    workdir, result = runs["ddp"]
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_ddp_ranks_end_with_identical_weights_and_rank_0_writes_everything_once(ddp_workdir):
    assert_ranks_agree(ddp_workdir / "weights")
    run = assert_written_once(ddp_workdir)
    assert [value for _, value in scalars(run, "val/acc")][-1] > 0.6  # it learned, as one process does


def test_ddp_lr_at_every_step_equals_the_single_process_run_at_the_same_global_batch(ddp_workdir, run_dir):
    ddp_run = ddp_workdir / "logs" / "synthetic" / "version_0"
    for group in ("pg1", "pg2"):
        single, ddp = scalars(run_dir, f"lr-AdamW/{group}"), scalars(ddp_run, f"lr-AdamW/{group}")
        assert len(single) == 72 and ddp == single


@pytest.mark.parametrize("failing_rank", [0, 1])
def test_a_failing_rank_ends_the_whole_job_with_its_error(runs, failing_rank):
    _, result = runs[f"fail{failing_rank}"]  # the fixture's timeout fails the test if the job hangs
    assert result.returncode != 0
    assert f"error: (rank {failing_rank}) data folder missing on rank {failing_rank}" in result.stderr
    assert "Traceback" not in result.stderr


def test_torchrun_launches_the_same_cli(runs):
    workdir, result = runs["torchrun"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert_ranks_agree(workdir / "weights")
    assert_written_once(workdir)


SLURM_JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODELIST": "node1",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "0",
}


def test_slurm_script_is_valid_bash_and_runs_the_cli_with_the_jobs_geometry(tmp_path):
    script = REPO / "scripts" / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    fake_srun = tmp_path / "bin" / "srun"  # records what the script would launch on every node
    fake_srun.parent.mkdir()
    fake_srun.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    fake_srun.chmod(0o755)
    env = {
        **os.environ,
        **SLURM_JOB,
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_SUBMIT_DIR": str(REPO),
        "PATH": f"{fake_srun.parent}:{os.environ['PATH']}",
        "SRUN_ARGS": str(tmp_path / "args"),
    }
    subprocess.run(
        ["bash", str(script), "--config", "configs/cifar.yaml", "--data.batch_size", "128"],
        env=env,
        check=True,
        timeout=60,
    )
    args = (tmp_path / "args").read_text().split("\n")
    assert args[1:5] == ["main.py", "fit", "--config", "configs/cifar.yaml"]
    assert "configs/ddp.yaml" in args and args[args.index("--trainer.num_nodes") + 1] == "2"
    assert args[args.index("--trainer.devices") + 1] == "2"
    assert args[args.index("--trainer.logger.init_args.version") + 1] == "slurm-4242"  # a requeue logs in the same run


def test_lightning_detects_slurm_from_the_cli(monkeypatch):
    for name, value in SLURM_JOB.items():
        monkeypatch.setenv(name, value)
    # The Trainer sets this process's rank to the job's (1) for every later run in it: restored afterwards,
    # or the in-process runs of other tests would log nothing (rank 0 alone writes).
    for rank_zero_only in (utils_rank_zero_only, pl_rank_zero_only):
        monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    cli = CLI(args=["--config", SYNTHETIC, *TWO_CPU_PROCESSES], run=False)
    environment = cli.trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert (cli.trainer.world_size, cli.trainer.global_rank) == (2, 1)


def test_ddp_with_an_image_folder_decodes_once_and_trains(runs):
    workdir, result = runs["images"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name.split("-")[2] for p in (workdir / "cache").glob("*.pt")) == ["test", "train"]
    assert_ranks_agree(workdir / "weights")
