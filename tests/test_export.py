"""`python -m project.export`, run through its `main`: its artifacts compute, from uint8 images, what the trained
LightningModule computes from the datamodule's normalized batch."""

import contextlib
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from project.data.synthetic import SyntheticDataModule
from project.export import ONNX_PACKAGES, main
from project.models.classifier import ImageClassifier

CAN_WRITE_ONNX = all(importlib.util.find_spec(name) for name in ONNX_PACKAGES)
BATCH_SIZES = (1, 5)  # the export traces a batch of 2: other sizes show the batch dimension is dynamic


def of_the_run(run_dir: Path, checkpoint: str | None = None) -> list[str]:
    """``--config`` and ``--ckpt_path`` of the trained run (its last.ckpt unless ``checkpoint`` is given)."""
    checkpoint = checkpoint or str(run_dir / "checkpoints" / "last.ckpt")
    return ["--config", str(run_dir / "config.yaml"), "--ckpt_path", checkpoint]


@pytest.fixture(scope="module")
def exported(run_dir, workdir):
    """The run's last.ckpt exported once, by the command's ``main`` in this process: ``model.pt2``, and
    ``model.onnx`` where the onnx packages are installed."""
    folder = workdir / "export"
    onnx = ["--onnx", str(folder / "model.onnx")] if CAN_WRITE_ONNX else []
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        monkeypatch.chdir(workdir)
        monkeypatch.setattr(sys, "argv", ["export", *of_the_run(run_dir), "--output", str(folder / "model.pt2"), *onnx])
        main()
    assert "uint8 images (N, 3, 32, 32) -> class probabilities (N, 10)" in printed.getvalue()
    return folder


@pytest.fixture(scope="module")
def images_and_expected(run_dir):
    """Test images as stored (uint8), and the LightningModule's probabilities for them normalized the data's way."""
    data = SyntheticDataModule(**yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["init_args"])
    data.setup("predict")
    model = ImageClassifier.load_from_checkpoint(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    ).eval()
    images = data.splits["test"][0][: max(BATCH_SIZES)]
    normalized, _ = data.prepare_batch((images, torch.zeros(len(images)), torch.arange(len(images))), augment=False)
    with torch.no_grad():
        return images, model(normalized).softmax(dim=-1)


def test_the_exported_program_gives_the_modules_probabilities_from_uint8_images(exported, images_and_expected):
    saved = torch.export.load(exported / "model.pt2")
    assert not saved.example_inputs[0][0].any()  # the artifact carries no images of the data set
    program = saved.module()
    images, expected = images_and_expected
    for size in BATCH_SIZES:
        torch.testing.assert_close(program(images[:size]), expected[:size], rtol=0, atol=1e-5)


def test_the_exported_program_runs_without_lightning_or_this_project(exported):
    blocked = "import sys; sys.modules.update(dict.fromkeys(['pytorch_lightning', 'lightning', 'project']))"
    run = (
        "import torch; program = torch.export.load(sys.argv[1]).module();"
        "print(tuple(program(torch.zeros(3, 3, 32, 32, dtype=torch.uint8)).shape))"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"{blocked}; {run}", str(exported / "model.pt2")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(3, 10)"


def test_the_onnx_file_gives_the_modules_probabilities_in_onnxruntime(exported, images_and_expected):
    if not CAN_WRITE_ONNX:
        pytest.skip(f"--onnx needs {' and '.join(ONNX_PACKAGES)}")
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"))
    images, expected = images_and_expected
    for size in BATCH_SIZES:
        [probabilities] = session.run(["probabilities"], {"images": images[:size].numpy()})
        torch.testing.assert_close(torch.from_numpy(probabilities), expected[:size], rtol=0, atol=1e-5)


def first_line_of_the_stop(monkeypatch, folder: Path, *args: str) -> str:
    """What `python -m project.export ARGS` exits with (its first line), run in this process in an empty ``folder``,
    which it must leave empty."""
    monkeypatch.chdir(folder)
    monkeypatch.delenv("TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["export", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    assert not list(folder.iterdir())
    return str(stop.value.code).splitlines()[0]


def test_a_missing_checkpoint_is_one_error_line(run_dir, monkeypatch, tmp_path):
    stop = first_line_of_the_stop(monkeypatch, tmp_path, *of_the_run(run_dir, "missing.ckpt"), "--output", "m.pt2")
    assert stop.startswith("error: --ckpt_path missing.ckpt: no such file.")


def test_onnx_without_its_packages_is_one_error_line(run_dir, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    args = [*of_the_run(run_dir), "--output", "model.pt2", "--onnx", "model.onnx"]
    assert first_line_of_the_stop(monkeypatch, tmp_path, *args) == (
        'error: --onnx model.onnx needs onnxscript, not installed here: pip install -e ".[onnx]", or leave out --onnx'
    )
