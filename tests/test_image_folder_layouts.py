"""Image folder layouts and splits: class folders only, train/ only, train/ + test/ (+ val/); stratified
held-out splits, recorded in the run directory and read back by test and a rerun; aspect ratio kept."""

import csv

import pytest
import torch
from PIL import Image

from conftest import QUIET, SYNTHETIC, run_in_process, start_fit, starts_early, write_image_folder
from project.data.image_folder import ImageFolderDataModule

CLASSES = ("ant", "bee", "cow")


def class_folders(root, per_class=(20, 10, 30)):
    """``root/<class>/<i>.png``: a root of class folders only, classes of different sizes."""
    for c, (name, count) in enumerate(zip(CLASSES, per_class)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 30), (80 * c, 5 * i % 256, 100)).save(root / name / f"{i}.png")
    return root


def names(data, split):
    return data.image_names(split)


def test_a_root_of_class_folders_is_split_by_stratified_fractions(tmp_path):
    root = class_folders(tmp_path / "photos")
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), val_size=0.1, test_size=0.2)
    assert data.class_names == list(CLASSES)
    train, val, test = (names(data, split) for split in ("train", "val", "test"))
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert len(train) + len(val) + len(test) == 60
    # Every class gives its share: 20% of 20, 10, 30 to test; then 10% of what is left to val.
    assert [sum(n.startswith(c) for n in test) for c in CLASSES] == [4, 2, 6]
    assert [sum(n.startswith(c) for n in val) for c in CLASSES] == [2, 1, 2]
    # The same seed gives the same split; another seed another.
    again = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), val_size=0.1, test_size=0.2)
    assert names(again, "test") == test
    other = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "c"), val_size=0.1, test_size=0.2, split_seed=1)
    assert names(other, "test") != test


def test_train_only_holds_out_test_and_val_and_given_folders_are_kept(tmp_path):
    root = write_image_folder(tmp_path / "only_train", per_class=10, splits=("train",))
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), val_size=3, test_size=0.1)
    test, val = names(data, "test"), names(data, "val")
    assert len(test) == 3 and all(n.startswith("train/") for n in test)  # one per class
    assert len(val) == 3 and not set(val) & set(test)
    root = write_image_folder(tmp_path / "all", per_class=4, splits=("train", "val", "test"))
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), val_size=0.5)
    assert all(n.startswith("val/") for n in names(data, "val")) and len(names(data, "train")) == 12


def test_held_out_sizes_that_leave_nothing_are_refused(tmp_path):
    root = class_folders(tmp_path / "photos", per_class=(2, 2, 2))
    with pytest.raises(ValueError, match="data.val_size 10 must be smaller than the 3 images"):
        ImageFolderDataModule(str(root), val_size=10, test_size=0.3).image_names("train")
    with pytest.raises(ValueError, match="has no test/ folder and data.test_size is 0"):
        ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "c"), test_size=0, val_size=0).prepare_data()
    with pytest.raises(ValueError, match=r"data.val_size must be a count of images or a fraction in \[0, 1\)"):
        ImageFolderDataModule(str(root), val_size=1.5)
    (tmp_path / "stray" / "test" / "ant").mkdir(parents=True)
    with pytest.raises(ValueError, match="has test/ but no train/"):
        ImageFolderDataModule(str(tmp_path / "stray"))


def test_images_keep_their_aspect_ratio_and_are_centre_cropped_for_evaluation(tmp_path):
    # A wide image: red left quarter, green middle half, blue right quarter. Resized to a 16-pixel
    # short side and centre-cropped, the sides are cut off; the evaluation crop (8) is all green.
    (tmp_path / "wide" / "a").mkdir(parents=True)
    (tmp_path / "wide" / "b").mkdir()
    image = Image.new("RGB", (64, 32), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 16, 32))
    image.paste((0, 0, 255), (48, 0, 64, 32))
    for name in ("a", "b"):
        for i in range(3):
            image.save(tmp_path / "wide" / name / f"{i}.png")
    data = ImageFolderDataModule(
        str(tmp_path / "wide"),
        image_size=8,
        crop_fraction=0.5,
        cache_dir=str(tmp_path / "cache"),
        test_size=1,
        val_size=0,
    )
    stored, _ = data.load("train")
    assert stored.shape[1:] == (3, 16, 16)  # the stored square: image_size / crop_fraction
    assert stored[0, :, 4:12, 4:12].float().mean(dim=(1, 2)).tolist() == pytest.approx([0, 255, 0], abs=2)
    data.setup("test")
    batch = (data.splits["test"][0], data.splits["test"][1], torch.arange(len(data.splits["test"][0])))
    images, _ = data.prepare_batch(batch, augment=False)
    assert images.shape[1:] == (3, 8, 8)
    green = (torch.tensor([0.0, 255.0, 0.0]).view(1, 3, 1, 1) - data.mean) / data.std
    assert torch.allclose(images, green.expand_as(images), atol=0.05)


@starts_early
def photos_fit(tmp_path_factory):
    """A folder of class folders (``photos``, 12 images a class) and `main.py fit` on it from the folder above, as in
    this process, in a process started with the session: that folder."""
    tmp_path = tmp_path_factory.mktemp("layouts")
    class_folders(tmp_path / "photos", per_class=(12, 12, 12))
    flags = ["--data", "ImageFolderDataModule", "--data.root", "photos", "--data.val_size", "0.2",
             "--model.scheduler.warmup_steps", "0", "--trainer.logger.name", "default"]  # fmt: skip
    fit = ["main.py", "fit", "--config", SYNTHETIC, *flags, "--data.batch_size", "8",
           "--trainer.max_steps", "2", *QUIET]  # fmt: skip
    return start_fit(fit, cwd=tmp_path)


def test_fit_records_the_split_in_the_run_and_test_and_a_rerun_read_it(photos_fit, monkeypatch):
    tmp_path = photos_fit
    root = tmp_path / "photos"
    run = tmp_path / "logs" / "photos" / "version_0"  # without a name of its own, named after the data folder
    with open(run / "splits.csv", newline="") as file:
        recorded = {row["image"]: row["split"] for row in csv.DictReader(file)}
    assert len(recorded) == 36 and sorted(set(recorded.values())) == ["test", "train", "val"]
    config = (run / "config.yaml").read_text()
    assert f"splits: {run / 'splits.csv'}" in config and f"root: {root}" in config  # absolute paths

    # Images added to the folder later stay out of a run that reads the recorded split.
    for name in CLASSES:
        Image.new("RGB", (40, 30), (1, 2, 3)).save(root / name / "added.png")
    data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), splits=str(run / "splits.csv"))
    with pytest.warns(UserWarning, match="3 images in .* are not in data.splits"):
        test = data.image_names("test")
    assert sorted(test) == sorted(image for image, split in recorded.items() if split == "test")

    # test with the run's own config (from another directory) reads the same split.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run_in_process(monkeypatch, "test", "--config", str(run / "config.yaml"),
                   "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), *QUIET)  # fmt: skip
    (root / "ant" / "0.png").unlink()
    with pytest.raises(ValueError, match=r"names 1 images that are not in .*photos \(e.g. ant/0.png\)"):
        data = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), splits=str(run / "splits.csv"))
        data.image_names("train")
