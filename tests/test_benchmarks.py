"""The GPU benchmark script runs end to end (here on the CPU, a few steps, on a folder the test makes)."""

import sys

from conftest import REPO, start_process, starts_early, write_image_folder


@starts_early
def flagship_benchmark(tmp_path_factory):
    """`python benchmarks/gpu_flagship.py` on a folder of 2 x 24 training and 2 x 24 test images, one seed, a tiny
    network for 2 steps: started with the session (its fit and test processes take a while), the finished process."""
    images = write_image_folder(tmp_path_factory.mktemp("benchmark") / "images", classes=("cat", "dog"), per_class=24)
    return start_process(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_flagship.py"),
            "--root",
            str(images),
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
        cwd=REPO,
    )


def test_gpu_flagship_benchmark_prints_train_time_process_time_and_tta_accuracy(flagship_benchmark):
    result = flagship_benchmark
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    [row] = [line for line in lines if line.split()[:1] == ["0"]]
    _seed, train, fit, fit_wall, test_wall, accuracy, *epochs = row.split()
    assert 0 < float(train) <= float(fit) < float(fit_wall) and float(test_wall) > 0
    assert epochs == [train]  # 2 steps: one epoch, cut short
    # test/acc of the run's 48 test images (24 a class), in percent: a whole number of them right.
    assert accuracy in {f"{100 * right / 48:.2f}%" for right in range(49)}
    [mean] = [line for line in lines if line.startswith("template mean: train")]
    assert mean.endswith(f"TTA accuracy {accuracy}")  # of one seed
