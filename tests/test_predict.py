"""`predict` on an image folder: each row of predictions.csv names its file, on test/ or on a folder of new images."""

import csv

from conftest import QUIET, SYNTHETIC, run_in_process, write_image_folder
from project.callbacks.prediction_writer import PredictionWriter

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
    rows = predictions(tmp_path / "logs" / "synthetic" / "version_1")
    assert [row["image"] for row in rows] == [f"test/{c}/{i}.png" for c in ("cat", "dog", "eel") for i in range(4)]
    assert [row["true"] for row in rows] == [c for c in ("cat", "dog", "eel") for _ in range(4)]
    assert {row["predicted"] for row in rows} <= {"cat", "dog", "eel"}

    run_in_process(monkeypatch, "predict", *predict, "--data.predict_dir", "new")
    rows = predictions(tmp_path / "logs" / "synthetic" / "version_2")
    assert [row["image"] for row in rows] == ["holiday/photo1.png", "holiday/photo2.png", "photo0.png"]
    assert [row["true"] for row in rows] == ["", "", ""]  # unlabeled
    assert all(row["predicted"] in {"cat", "dog", "eel"} and 0 < float(row["probability"]) <= 1 for row in rows)
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
