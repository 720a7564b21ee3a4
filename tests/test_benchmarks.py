"""The GPU benchmark script runs end to end (here on the CPU, a few steps, on a folder the test makes)."""

import subprocess
import sys

from conftest import REPO, write_image_folder


def test_gpu_flagship_benchmark_prints_train_time_process_time_and_tta_accuracy(tmp_path):
    write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=24)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_flagship.py"),
            "--root",
            str(tmp_path / "images"),
            "--seeds",
            "0",
            "--",
            "--trainer.max_steps",
            "2",
            "--data.batch_size",
            "16",
            "--model.network.init_args.widths",
            "[8, 8, 8]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    [row] = [line for line in lines if line.split()[:1] == ["0"]]
    _seed, train, fit, fit_wall, test_wall, accuracy, *epochs = row.split()
    assert 0 < float(train) <= float(fit) < float(fit_wall) and float(test_wall) > 0
    assert epochs == [train]  # 2 steps: one epoch, cut short
    assert 0 <= float(accuracy.rstrip("%")) <= 100
    assert any(line.startswith("template mean: train") for line in lines)
