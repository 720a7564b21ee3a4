"""What a run's TensorBoard shows: pictures, hyperparameters with the final accuracy, images per second."""

import warnings

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torchmetrics.classification import MulticlassConfusionMatrix

from conftest import QUIET, SYNTHETIC, run_in_process, scalars
from project.callbacks.tensorboard_pictures import _confusion_figure, _displayable

TRAIN_STEPS_PER_EPOCH, EPOCHS = 6, 2
THROUGHPUT_WINDOW = 10  # the CLI's ThroughputMonitor: a rate once 10 steps are in its window


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short fit through the CLI (in this process), with its default callbacks, logging every step."""
    cwd = tmp_path_factory.mktemp("pictures")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(cwd)
        run_in_process(
            monkeypatch,
            "fit",
            "--config",
            SYNTHETIC,
            *QUIET,
            "--model.scheduler.warmup_steps",
            "2",
            "--trainer.max_epochs",
            str(EPOCHS),
            "--trainer.limit_train_batches",
            str(TRAIN_STEPS_PER_EPOCH),
            "--trainer.limit_val_batches",
            "2",
            "--trainer.log_every_n_steps",
            "1",
        )
    run_dir = cwd / "logs" / "synthetic" / "version_0"
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    return run_dir, events


def validation_steps(run_dir):
    return [step for step, _ in scalars(run_dir, "val/acc")]


def test_pictures_are_drawn_once_per_fit_and_once_per_validation_never_per_training_step(run):
    run_dir, events = run
    assert sorted(events.Tags()["images"]) == ["train/augmented_images", "val/confusion_matrix", "val/misclassified"]
    assert [image.step for image in events.Images("train/augmented_images")] == [0]
    assert len(validation_steps(run_dir)) == EPOCHS  # the sanity check draws nothing
    for tag in ("val/confusion_matrix", "val/misclassified"):
        assert [image.step for image in events.Images(tag)] == validation_steps(run_dir), tag


def test_the_grid_holds_the_64_images_of_the_first_training_batch(run):
    grid = run[1].Images("train/augmented_images")[0]
    # torchvision's make_grid of the 64 images of a batch: 8 x 8 images of 32 pixels, 2 pixels apart.
    assert (grid.width, grid.height) == (8 * 34 + 2, 8 * 34 + 2)


def test_hparams_tab_holds_the_hyperparameters_and_the_final_accuracy(run):
    run_dir, events = run
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [metric.name.tag for metric in experiment.metric_infos] == ["hp_metric", "test/acc"]
    hparams = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
    assert hparams["optimizer/init_args/lr"].number_value == 0.01
    assert hparams["scheduler/init_args/warmup_steps"].number_value == 2
    # TensorBoard shows a metric's latest value: -1 from Lightning at step 0, then val/acc after each validation.
    assert scalars(run_dir, "hp_metric") == [(0, -1.0), *scalars(run_dir, "val/acc")]


def test_throughput_monitor_logs_images_per_second(run):
    run_dir, _ = run
    samples = scalars(run_dir, "train/samples")
    assert [value for _, value in samples] == [64.0 * step for step in range(1, TRAIN_STEPS_PER_EPOCH * EPOCHS + 1)]
    rates = scalars(run_dir, "train/device/samples_per_sec")
    assert len(rates) == TRAIN_STEPS_PER_EPOCH * EPOCHS - THROUGHPUT_WINDOW + 1 and all(rate > 0 for _, rate in rates)


def test_images_of_an_unknown_normalization_are_stretched_to_the_unit_range():
    images = _displayable(torch.tensor([-2.0, 0.0, 6.0]).view(1, 1, 1, 3).expand(2, 3, 1, 3), datamodule=None)
    assert torch.equal(images, torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3).expand(2, 3, 1, 3))


@pytest.mark.parametrize("model", ["BoringModel", "DemoModel"])
def test_the_pictures_step_aside_with_one_note_for_lightnings_demo_classes(model, tmp_path, monkeypatch):
    # Their batches are (N, 32) tensors, not (images, labels): the README promises any module and datamodule.
    monkeypatch.chdir(tmp_path)
    demos = "pytorch_lightning.demos.boring_classes"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_in_process(
            monkeypatch,
            *["fit", "--model", f"{demos}.{model}", "--data", f"{demos}.BoringDataModule", *QUIET],
            *["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"],
            *["--checkpoint.monitor", "null", "--trainer.log_every_n_steps", "1"],
        )
    notes = [str(w.message) for w in caught if "TensorBoardPictures" in str(w.message)]
    assert notes == [
        "TensorBoardPictures draws an image classifier's batches, and the training batches are not "
        "(images (N, C, H, W), labels (N,)): no pictures"
    ]
    assert (tmp_path / "logs" / "default" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("classes", [10, 120])
def test_the_confusion_matrix_stays_readable_with_many_classes(classes):
    confusion = MulticlassConfusionMatrix(classes)
    confusion.update(torch.arange(500) % classes, torch.arange(500) * 7 % classes)
    names = [f"class_{i}" for i in range(classes)]
    figure = _confusion_figure(confusion, names)
    [matrix, *colour_bar] = figure.axes
    shown = [label.get_text() for label in matrix.get_xticklabels()]
    if classes == 10:  # every class named, its counts in the cells, no colour bar
        assert shown == names and len(matrix.texts) == 100 and not colour_bar
    else:  # 40 names at most, evenly spaced from the first; counts read from a colour bar
        assert 20 <= len(shown) <= 40 and shown[0] == "class_0" and set(shown) <= set(names)
        assert not matrix.texts and len(colour_bar) == 1
