"""What a run's TensorBoard shows: pictures, hyperparameters with the final accuracy, images per second."""

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pytest
import torch
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from matplotlib import font_manager
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard._utils import figure_to_image
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from conftest import QUIET, SYNTHETIC, run_in_process, scalars
from project.callbacks.tensorboard_pictures import TensorBoardPictures, _confusion_figure, _displayable
from project.data.synthetic import SyntheticDataModule

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


class Writer:
    """In place of the run's SummaryWriter: keeps what is added, each figure drawn as add_figure draws it."""

    def __init__(self):
        self.images, self.figures = {}, {}

    def add_image(self, tag, image, step):
        self.images[tag] = image

    def add_figure(self, tag, figure, step):
        figure_to_image(figure, close=False)  # add_figure's own drawing: fonts are looked up, glyphs warned of
        self.figures[tag] = figure


@pytest.fixture(scope="module")
def data():
    """Three classes of synthetic images: their uint8 validation images, and the datamodule that normalizes them."""
    data = SyntheticDataModule(num_classes=3, train_size=64, test_size=16, val_size=12, batch_size=6)
    data.setup("fit")
    return data


def validate(callback, data, predictions, names=("ant", "bee", "cat"), epochs=1):
    """The callback's hooks around validations of the data's two batches of 6 images, the network predicting
    ``predictions`` (12 class numbers); returns the writer and the batches' uint8 images and labels."""
    data.class_names = list(names)
    writer = Writer()
    callback.writer = writer
    trainer = SimpleNamespace(
        sanity_checking=False,
        training=False,
        datamodule=data,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=7)),
    )
    images, labels = data.splits["val"]
    batches = [(images[i : i + 6], labels[i : i + 6], torch.arange(i, i + 6)) for i in (0, 6)]
    for _ in range(epochs):
        callback.on_validation_epoch_start(trainer, None)
        for i, batch in enumerate(batches):
            normalized = data.prepare_batch(batch, augment=False)
            logits = 5 * torch.nn.functional.one_hot(predictions[6 * i : 6 * i + 6], len(names)).float()
            callback.on_validation_batch_end(trainer, None, logits, normalized, i)
        callback.on_validation_epoch_end(trainer, None)
    return writer, images, labels


def drawn_images(figure, count, size=32):
    """The images of the misclassified figure's grid (``_titled_images``: padding of a quarter of their size), as
    uint8 levels in float."""
    grid = torch.from_numpy(figure.axes[0].images[0].get_array()).permute(2, 0, 1)
    padding, columns = size // 4, math.ceil(math.sqrt(count))
    at = [divmod(i, columns) for i in range(count)]
    starts = [(padding + row * (size + padding), padding + column * (size + padding)) for row, column in at]
    return torch.stack([grid[:, y : y + size, x : x + size] for y, x in starts]) * 255


def test_the_misclassified_are_the_first_wrong_images_in_order_unnormalized_under_their_classes(data):
    labels = data.splits["val"][1]
    predictions = labels.clone()
    wrong = [1, 4, 6, 11]  # two in each batch; the first three are shown
    predictions[wrong] = (labels[wrong] + 1) % 3
    writer, images, _ = validate(TensorBoardPictures(misclassified=3), data, predictions)
    figure = writer.figures["val/misclassified"]
    names = ("ant", "bee", "cat")
    titles = [text.get_text() for text in figure.axes[0].texts]
    assert titles == [f"true: {names[labels[i]]}\npredicted: {names[predictions[i]]}" for i in wrong[:3]]
    # The originals, the data's normalization undone: float32 rounding away from the uint8 levels.
    torch.testing.assert_close(drawn_images(figure, 3), images[wrong[:3]].float(), rtol=0, atol=1e-3)


def test_the_first_training_batch_is_shown_unnormalized(data):
    images, labels = data.splits["val"]
    normalized, _ = data.prepare_batch((images, labels, torch.arange(len(images))), augment=False)
    callback, writer = TensorBoardPictures(grid_images=8), Writer()
    callback.writer = writer
    trainer = SimpleNamespace(
        datamodule=data, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(_batches_that_stepped=0))
    )
    callback.on_train_start(trainer, None)
    callback.on_train_batch_start(trainer, None, (normalized, labels), 0)
    expected = make_grid(images[:8].float() / 255)
    torch.testing.assert_close(writer.images["train/augmented_images"], expected, rtol=0, atol=1e-5)


def test_the_confusion_matrix_has_the_true_class_by_row_and_the_predicted_by_column(data):
    labels = data.splits["val"][1]
    predictions = labels.clone()
    predictions[labels == 0] = 2  # every ant taken for a cat: row 0 counts them in column 2, row 2 none in column 0
    writer, _, _ = validate(TensorBoardPictures(), data, predictions)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for true, predicted in zip(labels.tolist(), predictions.tolist()):
        expected[true, predicted] += 1
    assert expected[0, 2] > 0 and expected[2, 0] == 0 and not torch.equal(expected, expected.T)
    [matrix] = writer.figures["val/confusion_matrix"].axes
    assert (matrix.get_ylabel(), matrix.get_xlabel()) == ("True class", "Predicted class")
    assert [label.get_text() for label in matrix.get_yticklabels()] == ["ant", "bee", "cat"]
    assert [label.get_text() for label in matrix.get_xticklabels()] == ["ant", "bee", "cat"]
    assert torch.equal(torch.from_numpy(matrix.images[0].get_array().data).long(), expected)
    cells = {text.get_position(): text.get_text() for text in matrix.texts}  # (x: column, y: row)
    assert cells == {(column, row): str(expected[row, column].item()) for row in range(3) for column in range(3)}


@pytest.fixture
def matplotlibs_own_fonts(monkeypatch):
    """Only the fonts matplotlib ships (DejaVu, STIX, Computer Modern: no Chinese, Japanese or Korean) are installed,
    as on a machine without other fonts; ``font_manager.fontManager.addfont`` adds one for this test alone."""
    shipped = [font for font in font_manager.fontManager.ttflist if font.fname.startswith(matplotlib.get_data_path())]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", shipped)
    yield
    font_manager.fontManager._findfont_cached.cache_clear()  # nothing found with a test's font stays


def write_font(path: Path, characters: str, family: str) -> Path:
    """A TrueType font with a glyph (a square) for each of ``characters``, made here: no font is downloaded."""
    glyphs = {ord(c): f"uni{ord(c):04X}" for c in characters}
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder([".notdef", *glyphs.values()])
    builder.setupCharacterMap(glyphs)
    pen = TTGlyphPen(None)
    pen.moveTo((100, 0))
    for corner in ((100, 700), (900, 700), (900, 0)):
        pen.lineTo(corner)
    pen.closePath()
    square = pen.glyph()
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), **dict.fromkeys(glyphs.values(), square)})
    builder.setupHorizontalMetrics({name: (1000, 0) for name in [".notdef", *glyphs.values()]})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": family, "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.save(str(path))
    return path


CJK_NAMES = ("猫", "dog", "犬")


def about_fonts(caught) -> list[str]:
    """The warnings that name a font: the callback's, and matplotlib's of a character drawn without a glyph."""
    return [str(w.message) for w in caught if "font" in str(w.message)]


def test_class_names_that_no_installed_font_has_are_one_note_with_what_to_install(data, matplotlibs_own_fonts):
    labels = data.splits["val"][1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate(TensorBoardPictures(), data, (labels + 1) % 3, CJK_NAMES, epochs=2)
    # One line, at the first validation; none of matplotlib's per character ("Glyph 29483 ... missing from font").
    assert about_fonts(caught) == [
        "TensorBoardPictures: no installed font has every character of the class names '猫', '犬', so the pictures "
        "show them as boxes. Install a font that has them (Chinese, Japanese, Korean: Noto Sans CJK, e.g. apt "
        "install fonts-noto-cjk; other scripts: fonts-noto), then delete matplotlib's font cache "
        f"({matplotlib.get_cachedir()}/fontlist-*.json) so that it finds it"
    ]


def test_class_names_are_drawn_with_an_installed_font_that_has_their_characters(data, matplotlibs_own_fonts, tmp_path):
    font_manager.fontManager.addfont(str(write_font(tmp_path / "han.ttf", "猫犬", "Test Han Sans")))
    labels = data.splits["val"][1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer, _, _ = validate(TensorBoardPictures(), data, (labels + 1) % 3, CJK_NAMES)
    assert not about_fonts(caught)  # drawn: matplotlib warns of every character no font has
    matrix, misclassified = writer.figures["val/confusion_matrix"].axes[0], writer.figures["val/misclassified"].axes[0]
    names = [*matrix.get_xticklabels(), *matrix.get_yticklabels(), *misclassified.texts]
    assert {text.get_text() for text in matrix.get_xticklabels()} == set(CJK_NAMES)
    families = [*matplotlib.rcParams["font.family"], "Test Han Sans"]  # the default first, the font for the rest
    assert all(text.get_fontfamily() == families for text in names)
