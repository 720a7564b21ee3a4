"""TensorBoard pictures of a run: what the network is fed, and what it gets wrong."""

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from functools import cache

import matplotlib
import torch
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from project.data.in_memory import InMemoryImageDataModule
from project.errors import UsageError

COUNTED_CLASSES = 20  # the confusion matrix writes its counts up to this many classes, and shows a colour bar past it
NAMED_CLASSES = 40  # and names every class up to this many
GLYPH_MISSING = r"Glyph \d+ .* missing from font"  # matplotlib's warning, once per character drawn without a glyph


class TensorBoardPictures(Callback):
    """Adds to the IMAGES tab of the run's TensorBoard logger:

    - ``train/augmented_images``: the first training batch of the fit as the network gets it (augmented), once;
    - ``val/confusion_matrix``: torchmetrics' confusion matrix plot (true class by row), after each validation;
    - ``val/misclassified``: the first ``misclassified`` wrong validation images, titled with the true and the
      predicted class, after each validation.

    Nothing is drawn per training step: the grid is drawn at the fit's first step, the rest once per validation
    (not in the sanity check), each at the step Lightning logs ``val/acc`` at. A validation batch costs an
    argmax and a confusion-matrix update on the device, plus, until ``misclassified`` images are found, one
    device sync to find them. Class names come from the datamodule's ``class_names`` when it has them. Needs
    ``validation_step`` to return the logits; only rank 0 draws.

    Class names in any script: where matplotlib's font lacks some of their characters (its default, DejaVu Sans,
    has no Chinese, Japanese or Korean), installed fonts that have them are drawn with as its fallbacks
    (``_fonts_for``); where no installed font has them, one warning names those classes and what to install,
    and they are drawn as boxes without matplotlib's warning per character.

    Args:
        grid_images: How many images of the first training batch the grid shows.
        misclassified: How many misclassified validation images to show.
    """

    def __init__(self, grid_images: int = 64, misclassified: int = 16) -> None:
        for name, count in (("grid_images", grid_images), ("misclassified", misclassified)):
            if count < 1:
                raise UsageError(f"TensorBoardPictures {name} must be >= 1, got {count}")
        self.grid_images, self.misclassified = grid_images, misclassified
        self.writer: SummaryWriter | None = None
        self.confusion: MulticlassConfusionMatrix | None = None
        self.wrong: list[tuple[Tensor, Tensor, Tensor]] = []  # (images, labels, predictions) of the first wrong ones
        self.grid_pending = False
        self.fonts: tuple[list[str] | None, list[str]] | None = None  # _fonts_for(the class names), once

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)
        if logger is None:
            if not trainer.fast_dev_run:  # a dry run logs nothing anyway
                warnings.warn(
                    "TensorBoardPictures draws into a TensorBoardLogger and the trainer has none: no pictures"
                )
        elif trainer.is_global_zero:
            self.writer = logger.experiment

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.grid_pending = self.writer is not None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if self.grid_pending:
            self.grid_pending = False
            if _images_and_labels(batch) is None:
                return self._step_aside("the training batches are not (images (N, C, H, W), labels (N,))")
            images = _displayable(batch[0][: self.grid_images], trainer.datamodule)
            self.writer.add_image("train/augmented_images", make_grid(images), _logging_step(trainer))

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.confusion is not None:
            self.confusion.reset()
        self.wrong = []

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.writer is None or trainer.sanity_checking:
            return
        if _images_and_labels(batch) is None:
            return self._step_aside("the validation batches are not (images (N, C, H, W), labels (N,))")
        images, labels = _images_and_labels(batch)
        if not isinstance(outputs, Tensor) or outputs.shape[:1] != labels.shape or outputs.dim() != 2:
            return self._step_aside("validation_step does not return the logits (N, classes)")
        predictions = outputs.argmax(dim=-1)
        if self.confusion is None:
            # Rank 0 alone counts, so no syncing (it would wait for ranks that never compute): under DDP the
            # in-memory datamodules give every rank the whole validation set, a sharded one shows rank 0's shard.
            # validate_args=False: argmax and the data's labels are valid by construction, and the checks sync.
            self.confusion = MulticlassConfusionMatrix(outputs.shape[-1], sync_on_compute=False, validate_args=False)
            self.confusion.to(outputs.device)
        self.confusion.update(predictions, labels)
        missing = self.misclassified - sum(len(found[0]) for found in self.wrong)
        if missing > 0:
            wrong = (predictions != labels).nonzero().squeeze(1)[:missing]
            self.wrong.append((images[wrong], labels[wrong], predictions[wrong]))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.writer is None or trainer.sanity_checking or not self.wrong:  # no batch validated
            return
        names = getattr(trainer.datamodule, "class_names", None) or [str(i) for i in range(self.confusion.num_classes)]
        step = _logging_step(trainer)
        with self._fonts_of(names):  # the figures are drawn inside add_figure
            self.writer.add_figure("val/confusion_matrix", _confusion_figure(self.confusion, names), step)
            images, labels, predictions = (torch.cat(parts) for parts in zip(*self.wrong))
            if len(images):
                figure = _titled_images(_displayable(images, trainer.datamodule), labels, predictions, names)
                self.writer.add_figure("val/misclassified", figure, step)

    @contextlib.contextmanager
    def _fonts_of(self, names: Sequence[str]) -> Iterator[None]:
        """Figures made and drawn in this context draw ``names`` with the installed fonts that have their
        characters; what none has is said once, here, and not again by matplotlib for every character."""
        if self.fonts is None:
            self.fonts = _fonts_for(tuple(names))
            _, unreadable = self.fonts
            if unreadable:
                shown = ", ".join(map(repr, unreadable[:5]))
                more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
                warnings.warn(
                    f"TensorBoardPictures: no installed font has every character of the class names {shown}{more}, "
                    "so the pictures show them as boxes. Install a font that has them (Chinese, Japanese, Korean: "
                    "Noto Sans CJK, e.g. apt install fonts-noto-cjk; other scripts: fonts-noto), then delete "
                    f"matplotlib's font cache ({matplotlib.get_cachedir()}/fontlist-*.json) so that it finds it"
                )
        families, unreadable = self.fonts
        with warnings.catch_warnings(), matplotlib.rc_context({"font.family": families} if families else None):
            if unreadable:
                warnings.filterwarnings("ignore", message=GLYPH_MISSING)
            yield

    def _step_aside(self, why: str) -> None:
        """This run is not an image classifier's: no pictures, said once."""
        warnings.warn(f"TensorBoardPictures draws an image classifier's batches, and {why}: no pictures")
        self.writer, self.grid_pending = None, False


def _images_and_labels(batch) -> tuple[Tensor, Tensor] | None:
    """A batch's images and labels, if it is ``(images (N, C, H, W) with 1 or 3 channels, labels (N,), ...)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        return None
    images, labels = batch[0], batch[1]
    if not (isinstance(images, Tensor) and isinstance(labels, Tensor)) or images.dim() != 4 or labels.dim() != 1:
        return None
    if images.shape[1] not in (1, 3) or len(images) != len(labels) or labels.is_floating_point():
        return None
    return images, labels


def _fonts_for(names: tuple[str, ...]) -> tuple[list[str] | None, list[str]]:
    """The ``font.family`` that draws ``names`` (None: matplotlib's own draws them all), and the names that some
    character of no installed font is in.

    The families are matplotlib's own followed by installed fonts that have characters they lack (matplotlib
    >= 3.6 draws each character with the first family that has it). Only names outside the default font cost
    more than a look-up: then each installed font is opened once for its character map (milliseconds each)."""
    wanted = frozenset(ord(c) for name in names for c in name if c.isprintable() and not c.isspace())
    families = list(matplotlib.rcParams["font.family"])
    default = [font_manager.findfont(font_manager.FontProperties(family=[family])) for family in families]
    missing = wanted - set().union(*(_has(path, 0, wanted) for path in default))
    if not missing:
        return None, []
    fallbacks = []
    # Sans-serif first, as matplotlib's default is; then by name, so that every run picks the same.
    fonts = sorted(font_manager.fontManager.ttflist, key=lambda font: ("Sans" not in font.name, font.name, font.fname))
    for font in fonts:
        # matplotlib's last resort (3.11: LastResortHE) "has" every character, as a box that names its block.
        if not missing or font.name in fallbacks or font.name.startswith("Last Resort"):
            continue
        found = _has(font.fname, getattr(font, "index", 0), frozenset(missing))
        if found:
            fallbacks.append(font.name)
            missing -= found
    unreadable = [name for name in names if missing & set(map(ord, name))]
    return (families + fallbacks if fallbacks else None), unreadable


@cache
def _has(path: str, index: int, characters: frozenset[int]) -> frozenset[int]:
    """Which of ``characters`` the font file ``path`` (its face ``index``) has glyphs for."""
    try:
        font = FT2Font(path, face_index=index) if index else FT2Font(path)
    except (OSError, RuntimeError):  # unreadable, or a format FreeType does not know
        return frozenset()
    return frozenset(c for c in characters if font.get_char_index(c))


def _logging_step(trainer: Trainer) -> int:
    # The step Lightning logs metrics at (its LearningRateMonitor uses it too): the pictures line up with val/acc.
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def _displayable(images: Tensor, datamodule: LightningDataModule | None) -> Tensor:
    """Normalized images -> RGB in [0, 1] on the CPU: the datamodule's normalization undone if it is known,
    else each image's range stretched to [0, 1]."""
    images = images.detach().float().cpu()
    if isinstance(datamodule, InMemoryImageDataModule):  # normalized uint8 levels: (x - mean) / std
        return (images * datamodule.std.cpu() + datamodule.mean.cpu()).div(255).clamp(0, 1)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


def _confusion_figure(confusion: MulticlassConfusionMatrix, names: list[str]) -> Figure:
    classes = len(names)
    # Counts in the cells while they can be read (torchmetrics writes them at 15 points), a colour bar past that.
    size = min(3 + 0.6 * classes, 20)
    figure = Figure(figsize=(size, size), layout="constrained")
    ax = figure.subplots()
    confusion.plot(ax=ax, labels=names, add_text=classes <= COUNTED_CLASSES)
    if classes > COUNTED_CLASSES:
        figure.colorbar(ax.images[0], ax=ax, shrink=0.8, label="images")
    if classes > NAMED_CLASSES:  # more names would overlap, even at 20 inches: every k-th class is named
        ticks = list(range(0, classes, math.ceil(classes / NAMED_CLASSES)))
        ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90)
        ax.set_yticks(ticks, [names[i] for i in ticks])
    return figure


def _titled_images(images: Tensor, labels: Tensor, predictions: Tensor, names: list[str]) -> Figure:
    """``images`` in rows, each under its true and predicted class: torchvision's grid in one axes, which
    draws several times faster than an axes per image."""
    height, width = images.shape[-2:]
    padding = width // 4  # each image and its padding get 2 inches: room for two lines of 8-point text
    columns = math.ceil(math.sqrt(len(images)))
    grid = make_grid(images, nrow=columns, padding=padding, pad_value=1.0)
    figure = Figure(figsize=(2 * columns, 2 * columns * grid.shape[1] / grid.shape[2]))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(grid.permute(1, 2, 0).numpy())
    for i, (label, prediction) in enumerate(zip(labels.tolist(), predictions.tolist())):
        row, column = divmod(i, columns)
        ax.text(
            column * (width + padding) + padding + width / 2,
            row * (height + padding) + padding / 2,
            f"true: {names[label]}\npredicted: {names[prediction]}",
            ha="center",
            va="center",
            fontsize=8,
        )
    return figure
