"""A new user's whole path on their own photos: a folder of class folders (odd sizes, a sideways phone photo,
CMYK, 16-bit), fine-tuned from "pretrained" weights with configs/images.yaml, then test and predict."""

import csv
import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from test_export import run_readme_client

from conftest import REPO, run_in_process, start_runs, starts_early

IMAGES = str(REPO / "configs" / "images.yaml")
COLOURS = {"apple": (200, 40, 40), "leaf": (40, 180, 60), "sea": (30, 60, 200), "sand": (220, 200, 120)}
QUICK = ["--data.image_size", "48", "--data.batch_size", "8", "--trainer.max_epochs", "2"]
QUICK += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def photo(colour, size, rng):
    noise = rng.normal(0, 25, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))


def write_photos(root, rng, per_class=10):
    """Class folders only, each image of its own size between 40x30 and 96x72, and the awkward kinds."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (int(rng.integers(40, 97)), int(rng.integers(30, 73)))
            photo(colour, size, rng).save(root / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    # A phone photo stored sideways, with the EXIF tag that turns it upright (6: rotate 90 clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(COLOURS["apple"], (60, 80), rng).save(root / "apple" / "phone.jpg", exif=exif)
    photo(COLOURS["leaf"], (64, 48), rng).convert("CMYK").save(root / "leaf" / "cmyk.jpg")
    sixteen = np.array(photo(COLOURS["sand"], (50, 40), rng).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(sixteen).save(root / "sand" / "sixteen.png")  # a 16-bit grey PNG (mode I;16)
    return root


@starts_early
def fitted(tmp_path_factory):
    """`main.py fit --config configs/images.yaml --data.root photos` with "pretrained" ResNet-18 weights (a random
    state dict in torch hub's cache: no download), in its own directory; then `main.py predict` from the run's
    config on a nested folder of new photos, and the run's export (`model.pt2`, `model.onnx`): one after the other,
    as in this process, in one process started with the session."""
    work = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    write_photos(work / "photos", rng)
    new = work / "new" / "day1"
    new.mkdir(parents=True)
    for i, colour in enumerate(COLOURS.values()):
        photo(colour, (70 + i, 50), rng).save(new / f"{i}.jpg")
    with torch.random.fork_rng():  # the session's random state as it was
        torch.manual_seed(0)
        pretrained = torchvision.models.resnet18().state_dict()
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = work / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(pretrained, cache / os.path.basename(weights.url))
    run = work / "logs" / "photos" / "version_0"  # named after the folder
    checkpoint = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    finished = start_runs(
        ("project.cli", ["main.py", "fit", "--config", IMAGES, "--data.root", "photos",
                         "--model.network.name", "resnet18", *QUICK]),
        ("project.cli", ["main.py", "predict", *checkpoint, "--data.predict_dir", "new"]),
        ("project.export", ["export", *checkpoint, "--output", "model.pt2", "--onnx", "model.onnx"]),
        cwd=work,
        env={"TORCH_HOME": str(work / "torch")},
    )  # fmt: skip

    def done():
        result = finished()
        if result.returncode != 0:
            pytest.fail(f"fit, predict, export exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                        f"{result.stderr[-5000:]}")  # fmt: skip
        return work, run, pretrained

    return done


def test_images_yaml_fine_tunes_a_pretrained_body_on_a_folder_of_photos(fitted):
    _, run, pretrained = fitted
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "splits.csv").is_file()
    with open(run / "splits.csv", newline="") as file:
        splits = {row["image"]: row["split"] for row in csv.DictReader(file)}
    assert len(splits) == 43 and {"apple/phone.jpg", "leaf/cmyk.jpg", "sand/sixteen.png"} <= set(splits)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # The body started from the file and moved little (body LR 10x lower); the head is new, with 4 outputs.
    body = state["network.body.layer1.0.conv1.weight"]
    assert torch.allclose(body, pretrained["layer1.0.conv1.weight"], atol=0.01)
    assert not torch.allclose(body, torchvision.models.resnet18().state_dict()["layer1.0.conv1.weight"], atol=0.01)
    assert state["network.head.weight"].shape == (4, 512)
    config = (run / "config.yaml").read_text()
    assert "image_size: 48" in config and "crop_fraction: 0.875" in config  # 224 of 256 (resnet18's weights)


def test_predict_on_new_photos_then_the_exported_model_in_the_readme_client_agrees(fitted, tmp_path):
    """predict from the run's config on a nested folder of new photos; export; the README's onnxruntime client,
    run with torch, Lightning and this project blocked, gives predictions.csv's classes and probabilities."""
    work, _, _ = fitted
    [predictions] = (work / "logs" / "photos").glob("version_*/predictions.csv")
    with open(predictions, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["image"] for row in rows] == [f"day1/{i}.jpg" for i in range(4)]
    assert all(row["predicted"] in COLOURS and row["true"] == "" for row in rows)

    answers = run_readme_client(work / "model.onnx", [row["image"] for row in rows], work / "new", tmp_path)
    assert [(image, name) for image, name, _ in answers] == [(row["image"], row["predicted"]) for row in rows]
    for (image, _, probability), row in zip(answers, rows):
        assert float(probability) == pytest.approx(float(row["probability"]), abs=1e-4), image


def test_offline_without_the_weights_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / "photos", np.random.default_rng(0), per_class=2)
    with pytest.raises(SystemExit) as stop:
        run_in_process(monkeypatch, "fit", "--config", IMAGES, "--data.root", "photos")
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert str(stop.value).startswith(
        f"error: torchvision's ResNet50_Weights.IMAGENET1K_V2 weights are not in {expected} and could not be "
        "downloaded (<urlopen error no network in tests>): on a machine with network, fetch "
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth and copy it there, or pass "
        "--model.network.weights null to train from scratch\n"
    )
    assert not (tmp_path / "logs").exists()
