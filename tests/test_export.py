"""`python -m project.export`, run through its `main`: its artifacts compute, from uint8 images, what the trained
LightningModule computes from the datamodule's normalized batch, and carry their contract (class names,
preprocessing), with which the README's client, given image files, gives `main.py predict`'s predictions."""

import contextlib
import copy
import csv
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import QUIET, REPO, SYNTHETIC, run_in_process
from project.data.augment import center_crop
from project.data.decode import decode_image
from project.data.synthetic import SyntheticDataModule
from project.export import CONTRACT_FILE, CONTRACT_KEY, ONNX_PACKAGES, main
from project.models.classifier import ImageClassifier
from project.models.tta import logits_with_tta

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
def module_and_images(run_dir):
    """The run's LightningModule (last.ckpt), and test images as stored (uint8) and normalized the data's way."""
    data = SyntheticDataModule(**yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["init_args"])
    data.setup("predict")
    model = ImageClassifier.load_from_checkpoint(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    ).eval()
    images = data.splits["test"][0][: max(BATCH_SIZES)]
    normalized, _ = data.prepare_batch((images, torch.zeros(len(images)), torch.arange(len(images))), augment=False)
    return model, images, normalized


@pytest.fixture(scope="module")
def images_and_expected(module_and_images):
    """Test images as stored (uint8), and the LightningModule's probabilities for them normalized the data's way."""
    model, images, normalized = module_and_images
    with torch.no_grad():
        return images, model(normalized).softmax(dim=-1)


@pytest.fixture(scope="module", params=[1, 2])
def exported_with_tta(request, run_dir, workdir):
    """The run's last.ckpt exported (``.pt2``) by the command's ``main`` with ``--model.tta_level`` 1, then 2;
    the level, the file and what export printed."""
    level, path = request.param, workdir / "export" / f"model-tta{request.param}.pt2"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        monkeypatch.chdir(workdir)
        args = [*of_the_run(run_dir), "--model.tta_level", str(level), "--output", str(path)]
        monkeypatch.setattr(sys, "argv", ["export", *args])
        main()
    return level, path, printed.getvalue()


def test_the_exported_program_gives_the_modules_probabilities_from_uint8_images(exported, images_and_expected):
    contract = {CONTRACT_FILE: ""}
    saved = torch.export.load(exported / "model.pt2", extra_files=contract)
    assert json.loads(contract[CONTRACT_FILE]) == {  # images already at 32x32: no resize or crop to name
        "class_names": [f"class_{i}" for i in range(10)],
        "input": "uint8 RGB (N, 3, 32, 32), 0-255",
        "input_size": [32, 32],
        "tta_level": 0,
        "output": "float32 class probabilities (N, 10), column i is class_names[i]",
    }
    assert not saved.example_inputs[0][0].any()  # the artifact carries no images of the data set
    program = saved.module()
    images, expected = images_and_expected
    for size in BATCH_SIZES:
        torch.testing.assert_close(program(images[:size]), expected[:size], rtol=0, atol=1e-5)


def test_the_program_exported_with_tta_gives_the_modules_tta_probabilities(exported_with_tta, module_and_images):
    level, path, printed = exported_with_tta
    model, images, normalized = module_and_images
    contract = {CONTRACT_FILE: ""}
    program = torch.export.load(path, extra_files=contract).module()
    assert json.loads(contract[CONTRACT_FILE])["tta_level"] == level
    assert f"note: exported with tta_level {level}; main.py predict with this checkpoint uses 0\n" in printed
    with torch.no_grad():
        expected = logits_with_tta(model.network, normalized, level).softmax(dim=-1)
        plain = model(normalized).softmax(dim=-1)
        at_level = copy.copy(model)  # the same network, predicting at this level
        at_level.tta_level = level
        predicted = at_level.predict_step((normalized, torch.zeros(len(images))), 0)
    for size in BATCH_SIZES:
        torch.testing.assert_close(program(images[:size]), expected[:size], rtol=0, atol=1e-5)
    probability, label = program(images).max(dim=-1)
    assert torch.equal(label, predicted["label"])
    torch.testing.assert_close(probability, predicted["probability"], rtol=0, atol=1e-5)
    # The mirrored and shifted copies change these probabilities by far more than the tolerance above.
    assert (expected - plain).abs().max() > 1e-3


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


CLASSES = ("ant", "bee", "cat")


def noisy_image(rng, size: tuple[int, int], label: int, mode: str = "RGB") -> Image.Image:
    """Noise tinted by its class ``label``'s channel: learnable in a few steps, and every pixel differs."""
    width, height = size
    pixels = rng.integers(0, 128, (height, width, 3), dtype=np.uint8)
    pixels[..., label] += 120
    return Image.fromarray(pixels).convert(mode)


def write_varied_image_folder(root: Path, per_class: int = 16) -> Path:
    """``root/<class>/<i>.jpg|png``: sizes between 20x15 and 60x45, landscape and portrait."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (int(rng.integers(20, 61)), int(rng.integers(15, 46)))
            image = noisy_image(rng, size[::-1] if i % 3 == 0 else size, label)
            image.save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def write_new_images(folder: Path) -> Path:
    """Unlabeled images in nested folders, each a case of decoding: a JPEG large enough to be decoded at half
    scale (draft), a PNG over 6 times the resized side (reduced by a box filter first: reducing_gap), one turned
    by its EXIF orientation, a grayscale one, one smaller than the crop (upscaled)."""
    rng = np.random.default_rng(1)
    (folder / "a" / "b").mkdir(parents=True)
    noisy_image(rng, (120, 90), 0).save(folder / "a" / "large.jpg")
    turned = Image.Exif()
    turned[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    noisy_image(rng, (50, 30), 1).save(folder / "a" / "turned.jpg", exif=turned)
    noisy_image(rng, (33, 47), 2, "L").save(folder / "a" / "b" / "gray.jpg")
    noisy_image(rng, (20, 15), 1).save(folder / "small.png")
    noisy_image(rng, (45, 60), 2).save(folder / "a" / "b" / "tall.png")
    noisy_image(rng, (60, 45), 0).save(folder / "wide.jpg")
    noisy_image(rng, (240, 300), 1).save(folder / "a" / "huge.png")
    return folder


def readme_client() -> str:
    """The README's client code block (the one that starts with ``# client.py``), as written."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    [client] = [block for block in blocks if block.startswith("# client.py")]
    return client


def run_readme_client(model: Path, images: list[str], cwd: Path, tmp_path: Path) -> list[list[str]]:
    """The README's client as a script, with torch, Lightning and this project blocked: ``[image, class, p]`` each."""
    (tmp_path / "client.py").write_text(readme_client())
    blocked = "import runpy, sys; sys.modules.update(dict.fromkeys(['torch', 'pytorch_lightning', 'project']))"
    result = subprocess.run(
        [sys.executable, "-c", f"{blocked}; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"]
        + [str(tmp_path / "client.py"), str(model), *images],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.split(" ") for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def image_folder_run(tmp_path_factory):
    """A tiny run on an image folder with TTA level 2 (``main.py fit``), its ``main.py predict`` over a folder of
    new images (``predictions.csv``) and its export with ``--onnx``, all in this process; and what export printed."""
    if not CAN_WRITE_ONNX:
        pytest.skip(f"--onnx needs {' and '.join(ONNX_PACKAGES)}")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("images")
    root, new = write_varied_image_folder(folder / "root"), write_new_images(folder / "new")
    run, export = folder / "logs" / "images" / "version_0", folder / "export"
    checkpoint = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(folder)
        run_in_process(
            monkeypatch,
            *["fit", "--config", SYNTHETIC, "--data", "ImageFolderDataModule", "--data.root", str(root)],
            *["--data.image_size", "32", "--data.crop_fraction", "0.875", "--data.batch_size", "8"],
            *["--data.val_size", "0.2", "--data.test_size", "0.2", "--model.tta_level", "2"],
            *["--trainer.max_steps", "3", "--model.scheduler.warmup_steps", "1"],
            *["--trainer.logger.init_args.name", "images", *QUIET],
        )
        run_in_process(monkeypatch, "predict", *checkpoint, "--data.predict_dir", str(new), *QUIET)
        monkeypatch.setattr(sys, "argv", ["export", *checkpoint, "--output", str(export / "model.pt2")])
        monkeypatch.setattr(sys, "argv", [*sys.argv, "--onnx", str(export / "model.onnx")])
        with contextlib.redirect_stdout(printed):
            main()
    with open(run.parent / "version_1" / "predictions.csv", newline="") as file:
        predictions = list(csv.DictReader(file))
    return {"root": root, "new": new, "export": export, "predictions": predictions, "printed": printed.getvalue()}


EXPECTED_CONTRACT = {
    "class_names": list(CLASSES),
    "input": "uint8 RGB (N, 3, 32, 32), 0-255",
    "input_size": [32, 32],
    "resize": 37,  # round(32 / 0.875)
    "crop": 32,
    "interpolation": "bilinear",
    "tta_level": 2,
    "output": "float32 class probabilities (N, 3), column i is class_names[i]",
}


@pytest.fixture(scope="module")
def image_folder_program(image_folder_run):
    """The run's exported ``.pt2``, loaded once: its module and the contract read back from the archive."""
    contract = {CONTRACT_FILE: ""}  # torch.export.load fills in the extra files named
    program = torch.export.load(image_folder_run["export"] / "model.pt2", extra_files=contract)
    return program.module(), json.loads(contract[CONTRACT_FILE])


def test_both_files_carry_the_contract_and_export_prints_it(image_folder_run, image_folder_program):
    import onnx

    metadata = {prop.key: prop.value for prop in onnx.load(image_folder_run["export"] / "model.onnx").metadata_props}
    assert json.loads(metadata[CONTRACT_KEY]) == EXPECTED_CONTRACT
    assert EXPECTED_CONTRACT["class_names"] == sorted(path.name for path in image_folder_run["root"].iterdir())
    assert image_folder_program[1] == EXPECTED_CONTRACT
    printed = image_folder_run["printed"]
    assert 'class names: ["ant", "bee", "cat"]\n' in printed
    assert "preprocessing: resize the short side to 37 (bilinear), take the centre 32x32 square" in printed
    assert "note:" not in printed  # exported at the tta_level predict uses


def test_the_readme_client_gives_predicts_predictions_on_every_image(image_folder_run, tmp_path):
    """The README's client, run as a script with torch, Lightning and this project blocked, over the new images."""
    predictions = image_folder_run["predictions"]
    assert len(predictions) == 7 and all(row["true"] == "" for row in predictions)
    images = [row["image"] for row in predictions]
    answers = run_readme_client(image_folder_run["export"] / "model.onnx", images, image_folder_run["new"], tmp_path)
    assert [(image, name) for image, name, _ in answers] == [(row["image"], row["predicted"]) for row in predictions]
    for (image, _, probability), row in zip(answers, predictions):
        assert float(probability) == pytest.approx(float(row["probability"]), abs=1e-4), image


def test_the_readme_clients_pixels_are_the_data_paths(image_folder_run):
    """Bit for bit what predict's data path gives the network: the image folder's decode, then its centre crop."""
    client: dict = {"__name__": "client"}
    exec(readme_client(), client)  # defines pixels(); runs nothing
    for path in sorted(image_folder_run["new"].rglob("*.*")):
        decoded = decode_image(str(path), 37).transpose(2, 0, 1)
        assert np.array_equal(client["pixels"](str(path), 37, 32), center_crop(decoded, 32)), path.name


def test_onnx_and_the_program_agree_with_tta(image_folder_run, image_folder_program):
    """ONNX gives the ``.pt2`` program's probabilities at tta_level 2 (six forward passes inside, the mirrored and
    shifted copies), as at 0 above; that a program's TTA is the module's is tested on the synthetic run
    (``test_the_program_exported_with_tta_gives_the_modules_tta_probabilities``)."""
    import onnxruntime

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=generator)
    program, _ = image_folder_program
    session = onnxruntime.InferenceSession(str(image_folder_run["export"] / "model.onnx"))
    [probabilities] = session.run(None, {"images": images.numpy()})
    expected = program(images)
    torch.testing.assert_close(torch.from_numpy(probabilities), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(program(images[:1]), expected[:1], rtol=0, atol=1e-5)
