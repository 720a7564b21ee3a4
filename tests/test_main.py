"""`python main.py ...` run for real, the way a user runs it: in fresh processes where the process is what is
tested (exit status, what it prints), in this process where a run's results are."""

import csv

import pytest
import torch

from conftest import QUIET, REPO, SYNTHETIC, expected_lr, run_in_process, run_mains, scalars
from project.data.synthetic import SyntheticDataModule
from project.models.classifier import ImageClassifier

# configs/synthetic.yaml: 2048 - 512 validation images, batch 64 -> 24 steps per epoch, 3 epochs.
TOTAL_STEPS, WARMUP, LR = 72, 10, 0.01


def test_fit_writes_events_checkpoints_and_config_in_its_own_versioned_dir(run_dir):
    assert (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-*.ckpt"))) == 1


def test_tensorboard_has_one_lr_point_per_optimizer_step_equal_to_the_closed_form(run_dir):
    for group in ("pg1", "pg2"):  # weights with decay, biases and norm weights without
        points = scalars(run_dir, f"lr-AdamW/{group}")
        assert [step for step, _ in points] == list(range(TOTAL_STEPS))
        for step, lr in points:
            assert lr == pytest.approx(expected_lr(step, LR, WARMUP, TOTAL_STEPS), rel=1e-6, abs=1e-9)


def test_the_synthetic_config_really_learns(run_dir):
    accuracies = [value for _, value in scalars(run_dir, "val/acc")]
    assert len(accuracies) == 3 and accuracies[-1] > 0.6  # chance is 0.1


def test_test_and_predict_from_the_saved_checkpoint(run_dir, workdir, monkeypatch, capsys):
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    config = str(run_dir / "config.yaml")
    monkeypatch.chdir(workdir)
    run_in_process(monkeypatch, "test", "--config", config, "--ckpt_path", checkpoint, *QUIET)
    assert "test/acc" in capsys.readouterr().out
    # --test_after_fit tested the same final weights at the end of the fit, into the run's own TensorBoard.
    [tested] = [run for run in (workdir / "logs" / "synthetic").iterdir() if run != run_dir]
    assert scalars(run_dir, "test/acc") == [(72, scalars(tested, "test/acc")[0][1])]
    run_in_process(monkeypatch, "predict", "--config", config, "--ckpt_path", checkpoint, *QUIET)
    [predictions] = (workdir / "logs" / "synthetic").glob("version_*/predictions.csv")
    rows = list(csv.DictReader(predictions.open()))
    _, labels = SyntheticDataModule().load("test")  # the same seed gives the same images
    assert [row["image"] for row in rows] == [str(i) for i in range(512)]  # the synthetic test set, by index
    assert [row["true"] for row in rows] == [f"class_{label}" for label in labels.tolist()]
    assert sum(row["predicted"] == row["true"] for row in rows) > 0.6 * 512  # chance is 0.1
    # Each row: the checkpoint's class probabilities for that image, computed here (no TTA in this config).
    data = SyntheticDataModule()
    data.setup("test")
    images, labels = data.splits["test"]
    batch = data.prepare_batch((images, labels, torch.arange(len(images))), augment=False)
    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        probabilities = model(batch[0]).softmax(dim=-1)
    assert [row["predicted"] for row in rows] == [f"class_{i}" for i in probabilities.argmax(dim=-1).tolist()]
    written = torch.tensor([float(row["probability"]) for row in rows])
    torch.testing.assert_close(written, probabilities.max(dim=-1).values, rtol=0, atol=1e-5)


def test_the_saved_config_reproduces_the_run_in_a_new_version_dir(run_dir, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    run_in_process(monkeypatch, "fit", "--config", str(run_dir / "config.yaml"), *QUIET)
    versions = sorted((workdir / "logs" / "synthetic").glob("version_*/checkpoints/last.ckpt"))
    assert len(versions) == 2
    original, rerun = (torch.load(path, weights_only=True)["state_dict"] for path in versions)
    assert original.keys() == rerun.keys()
    assert all(torch.equal(original[key], rerun[key]) for key in original)


def test_help_and_print_config_show_the_scheduler(monkeypatch, capsys):
    def printed(*args: str) -> str:
        with pytest.raises(SystemExit) as exit:
            run_in_process(monkeypatch, *args)
        assert exit.value.code == 0
        return capsys.readouterr().out

    assert "fit" in printed("--help")
    assert "--model.scheduler.help" in printed("fit", "--help")
    help_text = printed("fit", "--config", SYNTHETIC, "--model.scheduler.help", "WarmupCosine")
    assert "--scheduler.warmup_steps" in help_text and "--scheduler.min_lr_ratio" in help_text
    config = printed("fit", "--config", str(REPO / "configs" / "cifar.yaml"), "--print_config")
    assert "WarmupCosine" in config and "warmup_steps" in config and "total_steps" in config


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory):
    """Real `python main.py` processes given a mistake each, started at once (offline: no proxy answers):
    name -> (working directory, CompletedProcess)."""
    workdirs = {name: tmp_path_factory.mktemp(name) for name in ("no_cifar", "bad_value", "wrong_type")}
    runs = {
        "no_cifar": [
            "--config",
            str(REPO / "configs" / "cifar.yaml"),
            "--data.data_dir",
            str(workdirs["no_cifar"] / "empty"),
        ],
        "bad_value": ["--config", SYNTHETIC, *QUIET, "--model.scheduler.warmup_steps", "500"],
        "wrong_type": ["--config", SYNTHETIC, "--model.optimizer.lr", "nan"],
    }
    offline = {name: "http://127.0.0.1:9" for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")}
    results = run_mains(*((workdirs[name], ["fit", *args]) for name, args in runs.items()), env=offline)
    return {name: (workdirs[name], result) for name, result in zip(runs, results)}


def test_cifar10_without_network_stops_with_one_clear_message(mistakes):
    tmp_path, result = mistakes["no_cifar"]
    data_dir = tmp_path / "empty"
    assert result.returncode != 0
    assert f"CIFAR-10 was not found in data_dir='{data_dir}'" in result.stderr
    assert "cifar-10-batches-py" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_value_is_one_clear_error(mistakes):
    # tests/test_bad_input.py tries every listed mistake in-process; this is the real `python main.py`.
    _, result = mistakes["bad_value"]
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith(
        "error: WarmupCosine: total_steps must be >= 1 and >= warmup_steps (500), "
        "got 72; total_steps counts the warmup (total_steps=72 is the trainer's "
        "estimated_stepping_batches, the run's length in optimizer steps)\n"
        "(set TRACEBACK=1 to see where it was raised)"
    )
    assert "Traceback" not in result.stderr


def test_a_value_of_the_wrong_type_is_one_line_naming_the_setting(mistakes, tmp_path, monkeypatch, capsys):
    # jsonargparse's own message is 19 nested lines here; TRACEBACK=1 still shows it.
    _, result = mistakes["wrong_type"]
    assert result.returncode == 2
    assert result.stderr == (
        "error: model.optimizer.lr: Expected a float. Got value: nan\n"
        "(main.py fit --help lists the settings; set TRACEBACK=1 for the parser's full message)\n"
    )
    monkeypatch.setenv("TRACEBACK", "1")
    with pytest.raises(SystemExit) as exit:
        run_in_process(monkeypatch, "fit", "--config", SYNTHETIC, "--model.optimizer.lr", "nan")
    assert exit.value.code == 2 and len(capsys.readouterr().err.splitlines()) > 10
