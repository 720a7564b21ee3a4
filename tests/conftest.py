import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC = str(REPO / "configs" / "synthetic.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def expected_lr(step: int, base: float, warmup: int, total: int, start_factor: float = 0.0, floor_ratio: float = 0.0):
    """The documented schedule, written out independently of the implementation."""
    floor = floor_ratio * base
    if step < warmup:
        return base * (start_factor + (1 - start_factor) * step / warmup)
    if step >= total:
        return floor
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def run_main(
    *args: str, cwd: Path, env: dict | None = None, check: bool = True, script: Path = REPO / "main.py"
) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in a fresh process, with ``cwd`` as the working directory (logs/ goes there)."""
    result = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"main.py {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def run_mains(*runs: tuple[Path, list[str]], env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """`python main.py ARGS` in ``cwd`` for each ``(cwd, ARGS)``, all at once, as ``run_main`` runs one: each
    process spends seconds starting up and waiting, which the others use. Exit statuses are the caller's to check."""
    started = [
        subprocess.Popen(
            [sys.executable, str(REPO / "main.py"), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cwd, args in runs
    ]
    results = []
    for (_, args), process in zip(runs, started):
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def run_in_process(monkeypatch, *args: str) -> None:
    """`python main.py ARGS` in this process (faster than a new one; the current directory is the caller's)."""
    import project.cli

    monkeypatch.setattr(sys, "argv", ["main.py", *args])
    project.cli.main()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def run_dir(workdir):
    """One `python main.py fit --config configs/synthetic.yaml` (run in this process), logging every step and
    testing its final weights, read by several tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(workdir)
        run_in_process(
            monkeypatch,
            "fit",
            "--config",
            SYNTHETIC,
            "--trainer.log_every_n_steps",
            "1",
            "--test_after_fit",
            "true",
            *QUIET,
        )
    return workdir / "logs" / "synthetic" / "version_0"


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every point of ``tag`` in the run's TensorBoard event files."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def write_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class=4, size=(32, 32), splits=("train", "test")):
    """``root/<split>/<class>/<i>.png``, each image one colour: class ``c``, image ``i`` is (40c, 10i mod 256, 200)."""
    for split in splits:
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", size, (40 * c, 10 * i % 256, 200)).save(root / split / name / f"{i}.png")
    return root
