"""`predict` on an image folder: each row of predictions.csv names its file, on test/ or on a folder of new images."""

import csv

import pytest
import torch
import yaml

from conftest import QUIET, SYNTHETIC, run_in_process, write_image_folder
from project.callbacks.prediction_writer import PredictionWriter
from project.data.image_folder import ImageFolderDataModule
from project.models.classifier import ImageClassifier

TINY_FIT = [
    "fit",
    "--config",
    SYNTHETIC,
    *QUIET,
    "--data",
    "ImageFolderDataModule",
    "--data.root",
    "images",
    "--data.val_size",
    "0",
    "--data.batch_size",
    "4",
    "--trainer.max_steps",
    "3",
    "--model.scheduler.warmup_steps",
    "1",
]


def predictions(run_dir):
    return list(csv.DictReader((run_dir / "predictions.csv").open()))


def test_predictions_name_each_image_and_its_true_class(tmp_path, monkeypatch, recwarn):
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "images")  # 3 classes x 4 images per split
    (tmp_path / "new" / "holiday").mkdir(parents=True)
    write_image_folder(tmp_path / "unused", size=(50, 20), splits=("x",))
    for i, source in enumerate(sorted((tmp_path / "unused" / "x").rglob("*.png"))[:3]):
        source.rename(tmp_path / "new" / ("holiday" if i else "") / f"photo{i}.png")  # any size, any depth
    run_in_process(monkeypatch, *TINY_FIT)
    checkpoint = "logs/synthetic/version_0/checkpoints/last.ckpt"
    predict = [*TINY_FIT[1:], "--ckpt_path", checkpoint]
    predict[predict.index("--trainer.max_steps") : predict.index("--trainer.max_steps") + 2] = []

    run_in_process(monkeypatch, "predict", *predict)
    tested = predictions(tmp_path / "logs" / "synthetic" / "version_1")
    assert [row["image"] for row in tested] == [f"test/{c}/{i}.png" for c in ("cat", "dog", "eel") for i in range(4)]
    assert [row["true"] for row in tested] == [c for c in ("cat", "dog", "eel") for _ in range(4)]
    # Each row: the checkpoint's class probabilities for its image, computed here from the run's data.
    data = ImageFolderDataModule(
        **yaml.safe_load((tmp_path / "logs/synthetic/version_0/config.yaml").read_text())["data"]["init_args"]
    )
    data.setup("predict")
    images, labels = data.splits["test"]
    normalized, _ = data.prepare_batch((images, labels, torch.arange(len(images))), augment=False)
    model = ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    with torch.no_grad():
        probability, label = model(normalized).softmax(dim=-1).max(dim=-1)
    assert [row["predicted"] for row in tested] == [data.class_names[i] for i in label.tolist()]
    assert [float(row["probability"]) for row in tested] == pytest.approx(probability.tolist(), abs=1e-6)

    run_in_process(monkeypatch, "predict", *predict, "--data.predict_dir", "new")
    rows = predictions(tmp_path / "logs" / "synthetic" / "version_2")
    assert [row["image"] for row in rows] == ["holiday/photo1.png", "holiday/photo2.png", "photo0.png"]
    assert [row["true"] for row in rows] == ["", "", ""]  # unlabeled
    # photo<i> is test/cat/<i>.png's one colour at another size: the same input once resized, the same prediction.
    same = [tested[1], tested[2], tested[0]]
    assert len({row["probability"] for row in same}) == 3  # (each its own: a mix-up of names would show)
    assert [(row["predicted"], row["probability"]) for row in rows] == [
        (r["predicted"], r["probability"]) for r in same
    ]
    # num_classes comes from the data, as in the checkpoint: nothing given was overruled.
    assert not [w for w in recwarn if "not applied" in str(w.message)]


def test_every_rank_takes_part_in_finding_the_run_directory():
    # trainer.log_dir broadcasts from rank 0 under DDP: a rank that skipped it would leave rank 0 waiting forever.
    class Rank1Trainer:
        is_global_zero, fast_dev_run, asked = False, False, 0

        @property
        def log_dir(self):
            self.asked += 1
            return "logs/run"

    trainer = Rank1Trainer()
    PredictionWriter().write_on_epoch_end(trainer, None, [], [])
    assert trainer.asked == 1
