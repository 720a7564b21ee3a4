"""An image folder streamed from LitData shards (``--data.streaming true``), decoded by DataLoader workers: a run
interrupted mid-epoch resumes exactly, predict names every image right, TensorBoard and export work as in memory,
and the shards are written once and rebuilt when a file changes.

One small folder and one set of `python main.py` runs (started two at a time) serve the tests: 4 classes of 12
images, 3 of each held out for test and 1 for validation, so 32 training images, 8 batches of 4 per epoch."""

import contextlib
import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_resume import assert_quiet

from conftest import QUIET, SYNTHETIC, run_mains, scalars, write_image_folder
from project.data.image_folder import ImageFolderDataModule
from project.data.shards import Shards, write_shards
from project.export import main as export_main
from project.models.classifier import ImageClassifier

# Every image of twin_a and twin_b is the same picture: validation holds one of each, and at least one of the two is
# misclassified, so every validation draws val/misclassified.
CLASSES = ("apple", "leaf", "twin_a", "twin_b")
COLOURS = {"apple": (200, 40, 40), "leaf": (40, 180, 60)}
PER_CLASS, TEST_PER_CLASS = 12, 3
SPLIT_SIZES = {"train": 32, "val": 4, "test": 12}
BATCH, STEPS_PER_EPOCH, EPOCHS = 4, 8, 2
STOP_AT = 11  # epoch 1 after 3 of its 8 batches: mid-epoch, and the next batch is the second worker's
DATA = ["--data.image_size", "32", "--data.batch_size", str(BATCH), "--data.test_size", "0.25"]
DATA += ["--data.streaming", "true", "--data.num_workers", "2"]


def fit_flags(root: Path, cache: Path) -> list[str]:
    return [
        *["fit", "--config", SYNTHETIC, "--data", "ImageFolderDataModule", "--data.root", str(root)],
        *DATA,
        *["--data.cache_dir", str(cache), "--trainer.logger.init_args.name", "photos"],
        *["--trainer.max_epochs", str(EPOCHS), "--model.scheduler.warmup_steps", "2", *QUIET],
    ]


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"main.py {' '.join(result.args)}:\n{result.stderr[-5000:]}"
    return result


def write_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    twin = Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8))
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            if name in COLOURS:
                noise = rng.normal(0, 25, (36, 40, 3))
                picture = Image.fromarray(np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8))
            else:
                picture = twin
            picture.save(root / name / f"{i}.png")
    return root


def shard_folders(cache: Path) -> dict[str, tuple[str, int, int]]:
    """Each split's shards folder in ``cache``: its name, inode and modification time."""
    folders = {}
    for folder in cache.glob("*.shards"):
        split = folder.name.split("-")[2]
        assert split not in folders, f"two shards folders of {split}: {folder.name}, {folders[split][0]}"
        folders[split] = (folder.name, folder.stat().st_ino, folder.stat().st_mtime_ns)
    return folders


def load(checkpoint: Path) -> dict:
    return torch.load(checkpoint, weights_only=True)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """The folder's shards, written once in this process; then, two at a time: an uninterrupted fit and the same
    fit stopped by SIGTERM at step 11; the stopped run resumed with ``--ckpt_path last``, and a predict with
    ``--ckpt_path last`` (the uninterrupted run's) on its streamed test split, in batches of 5 (3 batches, 2 workers)
    """
    work = tmp_path_factory.mktemp("streamed")
    root, cache = write_folder(work / "photos"), work / "cache"
    written = io.StringIO()
    data = ImageFolderDataModule(str(root), image_size=32, cache_dir=str(cache), test_size=0.25, streaming=True)
    with contextlib.redirect_stderr(written):
        data.prepare_data()
    shards = shard_folders(cache)
    (work / "uninterrupted").mkdir()
    (work / "interrupted").mkdir()
    stop = ["--trainer.callbacks+=tests.run_helpers.SignalAtStep", f"--trainer.callbacks.step={STOP_AT}"]
    full, stopped = run_mains(
        (work / "uninterrupted", fit_flags(root, cache)), (work / "interrupted", [*fit_flags(root, cache), *stop])
    )
    succeeded(full)
    run = work / "uninterrupted" / "logs" / "photos" / "version_0"
    at_stop = load(work / "interrupted" / "logs" / "photos" / "version_0" / "checkpoints" / "last.ckpt")
    predict = ["predict", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--data.batch_size", "5"]
    resumed, predicted = run_mains(
        (work / "interrupted", [*fit_flags(root, cache), "--ckpt_path", "last"]),
        (work / "uninterrupted", [*predict, *QUIET]),
    )
    return {
        "work": work,
        "cache": cache,
        "written": written.getvalue(),
        "shards": shards,
        "run": run,
        "full": full,
        "stopped": stopped,
        "at_stop": at_stop,
        "resumed": succeeded(resumed),
        "predicted": succeeded(predicted),
    }


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_runs_weights_bit_for_bit(streamed):
    stopped = streamed["stopped"]
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert f"Stopped at step {STOP_AT} (epoch 1)" in stopped.stderr
    at_stop = streamed["at_stop"]
    assert at_stop["global_step"] == STOP_AT
    # The datamodule's saved position: 3 batches into epoch 1, neither its start nor its end.
    assert at_stop["ImageFolderDataModule"]["batch"] == STOP_AT - STEPS_PER_EPOCH == 3
    assert "resuming from logs/photos/version_0/checkpoints/last.ckpt" in streamed["resumed"].stderr
    resumed_run = streamed["work"] / "interrupted" / "logs" / "photos" / "version_0"
    expected, got = (load(run / "checkpoints" / "last.ckpt") for run in (streamed["run"], resumed_run))
    assert expected["global_step"] == got["global_step"] == STEPS_PER_EPOCH * EPOCHS
    expected, got = expected["state_dict"], got["state_dict"]
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)  # bit-identical


def close(loader) -> None:
    """Ends a loader's persistent workers now. LitData's do not exit on torch's shutdown signal: dropping such a
    loader in a running process waits 5 s for each before killing it. This takes torch's kill path without the wait."""
    if loader._iterator is not None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.01)
            loader._iterator._shutdown_workers()


def epochs_of(shards: Shards, passes: int, start: tuple[int, int] | None = None) -> list[list[list[int]]]:
    """The image indices of each batch of ``passes`` passes of one training loader (started at ``start``)."""
    loader = shards.batches(BATCH, shuffle=True, drop_last=True, seed=0)
    try:
        if start is not None:
            loader.start_at(*start)
        return [[batch[2].tolist() for batch in loader] for _ in range(passes)]
    finally:
        close(loader)


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory) -> Path:
    """32 tiny images written as shards, as a training split of 8 batches of 4."""
    work = tmp_path_factory.mktemp("shards")
    root = write_image_folder(work / "images", classes=("a", "b", "c", "d"), per_class=8, size=(8, 8), splits=("x",))
    files = sorted(str(path) for path in root.glob("x/*/*.png"))
    with contextlib.redirect_stderr(io.StringIO()):  # the labels play no part here
        write_shards(work / "train.shards", files, [0] * len(files), side=8, seed=0, label="train")
    return work / "train.shards"


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_each_epoch_has_its_own_order_and_start_at_gives_the_rest_of_an_epoch(train_shards, workers):
    shards = Shards(str(train_shards), workers)
    first, second = epochs_of(shards, passes=2)
    assert len(first) == len(second) == STEPS_PER_EPOCH
    for epoch in (first, second):  # every training image once per epoch
        assert sorted(index for batch in epoch for index in batch) == list(range(BATCH * STEPS_PER_EPOCH))
    assert first != second
    for epoch, batch in ((0, 3), (1, 0), (1, 2), (1, 3)):  # with 2 workers, the next batch is either worker's
        [rest] = epochs_of(shards, passes=1, start=(epoch, batch))
        assert rest == (first, second)[epoch][batch:], (epoch, batch)


@pytest.fixture(scope="module")
def test_images(streamed):
    """Each image of the streamed test split by name: as stored in its shards (uint8), its class there, and the
    trained LightningModule's class probabilities for it, normalized as the run's data normalizes it."""
    run = streamed["run"]
    data = ImageFolderDataModule(**yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"])
    data.setup("predict")
    test = data.splits["test"]
    images, labels, indices = test.images(list(range(len(test))))
    model = ImageClassifier.load_from_checkpoint(
        run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    ).eval()
    with torch.no_grad():
        probabilities = model(data.prepare_batch((images, labels, indices), augment=False)[0]).softmax(dim=-1)
    names = data.image_names("test")  # indices are places in this listing
    found = zip(indices.tolist(), images, labels.tolist(), probabilities)
    return {names[index]: (image, CLASSES[label], p) for index, image, label, p in found}


def test_predict_on_a_streamed_split_names_each_image_with_its_own_label_and_prediction(streamed, test_images):
    assert len(test_images) == len(CLASSES) * TEST_PER_CLASS
    assert all(true == name.split("/")[0] for name, (_, true, _) in test_images.items())  # the shards' labels
    [predictions] = streamed["run"].parent.glob("version_*/predictions.csv")
    with open(predictions, newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["image"] for row in rows) == sorted(test_images)  # each test image once
    assert [row["true"] for row in rows] == [row["image"].split("/")[0] for row in rows]  # its class folder
    for row in rows:  # the model's prediction for the image of that name
        _, _, probabilities = test_images[row["image"]]
        assert row["predicted"] == CLASSES[probabilities.argmax()], row
        assert float(row["probability"]) == pytest.approx(probabilities.max().item(), abs=1e-5), row


def test_the_streamed_run_draws_its_pictures_and_exports(streamed, test_images, capsys):
    run = streamed["run"]
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["train/augmented_images", "val/confusion_matrix", "val/misclassified"]
    [grid] = events.Images("train/augmented_images")
    assert (grid.step, grid.width, grid.height) == (0, BATCH * 34 + 2, 34 + 2)  # one row: the first batch
    validations = [step for step, _ in scalars(run, "val/acc")]
    assert len(validations) == EPOCHS
    for tag in ("val/confusion_matrix", "val/misclassified"):
        assert [image.step for image in events.Images(tag)] == validations, tag

    checkpoint = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    output = streamed["work"] / "model.pt2"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(streamed["work"] / "uninterrupted")
        monkeypatch.setattr(sys, "argv", ["export", *checkpoint, "--output", str(output)])
        export_main()
    assert "uint8 images (N, 3, 32, 32) -> class probabilities (N, 4)" in capsys.readouterr().out
    # From the streamed test images as stored: the module's probabilities, with the run's normalization inside.
    images = torch.stack([image for image, _, _ in test_images.values()])
    expected = torch.stack([probabilities for _, _, probabilities in test_images.values()])
    torch.testing.assert_close(torch.export.load(output).module()(images), expected, rtol=0, atol=1e-5)


def test_the_runs_print_none_of_lightnings_noise_and_predict_says_which_checkpoint_it_uses(streamed):
    for run in ("full", "stopped", "resumed", "predicted"):
        assert_quiet(streamed[run])
    assert "--ckpt_path last: using logs/photos/version_0/checkpoints/last.ckpt" in streamed["predicted"].stderr
    assert "resuming" not in streamed["predicted"].stderr


def test_the_runs_read_the_shards_written_once(streamed):
    assert sorted(streamed["shards"]) == ["test", "train", "val"]
    # Each split once, to its end: "writing the train split as shards: 32/32 images (575/s) into <folder>".
    done = re.findall(r"writing the (\w+) split as shards: (\d+)/\2 images \S+ into \S+/(\S+)\n", streamed["written"])
    assert done == [(split, str(count), streamed["shards"][split][0]) for split, count in SPLIT_SIZES.items()]
    assert shard_folders(streamed["cache"]) == streamed["shards"]  # the same folders, never rewritten
    for run in ("full", "stopped", "resumed", "predicted"):
        assert "writing the" not in streamed[run].stderr, run
    assert sorted(os.listdir(streamed["cache"])) == sorted(name for name, _, _ in streamed["shards"].values())


def test_a_changed_or_added_image_rebuilds_its_splits_shards_and_removes_the_stale_ones(tmp_path, capsys):
    root, cache = write_image_folder(tmp_path / "images", per_class=3), tmp_path / "cache"

    def prepare() -> tuple[dict, str]:
        data = ImageFolderDataModule(str(root), image_size=8, cache_dir=str(cache), val_size=0, streaming=True)
        data.prepare_data()
        return shard_folders(cache), capsys.readouterr().err

    first, written = prepare()
    assert sorted(first) == ["test", "train"] and "writing the train split" in written
    again, written = prepare()
    assert again == first and "writing the" not in written

    stat = os.stat(root / "train" / "cat" / "0.png")
    os.utime(root / "train" / "cat" / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    touched, written = prepare()
    assert "writing the train split" in written and "writing the test split" not in written
    assert touched["train"][0] != first["train"][0] and touched["test"] == first["test"]
    assert not (cache / first["train"][0]).exists()

    Image.new("RGB", (32, 32), (0, 0, 0)).save(root / "test" / "dog" / "3.png")  # added
    added, written = prepare()
    assert "writing the test split" in written and "writing the train split" not in written
    assert added["test"][0] != first["test"][0] and added["train"] == touched["train"]
    assert len(Shards(str(cache / added["test"][0]), workers=0)) == 3 * 3 + 1
    assert sorted(os.listdir(cache)) == sorted(name for name, _, _ in added.values())


def test_a_write_that_fails_leaves_no_shards_behind(tmp_path):
    write_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=6)
    (tmp_path / "images" / "train" / "dog" / "broken.png").write_bytes(b"not an image")
    data = ImageFolderDataModule(
        root=str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"), val_size=0, streaming=True
    )
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        data.prepare_data()
    assert not [path for path in (tmp_path / "cache").iterdir() if "-train-" in path.name]  # no folder, no .tmp
