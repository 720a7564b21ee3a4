"""A trained checkpoint as one file that runs without this project or Lightning (project/models/deployable.py):
`python -m project.export --config <run>/config.yaml --ckpt_path <checkpoint> --output model.pt2 [--onnx m.onnx]`."""

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from project.checkpoints import check_checkpoint_fits
from project.cli import CLI
from project.data.in_memory import InMemoryImageDataModule
from project.errors import UsageError, mistakes_as_one_line
from project.models.deployable import DeployableClassifier

ONNX_PACKAGES = ("onnx", "onnxscript")  # torch.onnx.export writes through both
ANY_BATCH_SIZE = ({0: torch.export.Dim("batch")},)  # the input's first dimension; height and width stay fixed


class ExportCLI(CLI):
    """The project's CLI without a subcommand: builds the model and datamodule of a config (give the run's own
    config.yaml: unlike ``main.py predict``, the model's settings come from it, not from the checkpoint, whose
    weights must fit them) and takes ``--ckpt_path`` as ``predict`` does (a path or ``last``, the same checks)."""

    def __init__(self, args: list[str] | None = None) -> None:
        super().__init__(args=args, run=False)

    def init_parser(self, **kwargs):
        kwargs.setdefault("prog", "python -m project.export")
        kwargs.setdefault("description", __doc__)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="The checkpoint to export: its path, or last for the newest last.ckpt of the config's logger name",
        )
        parser.add_argument(
            "--weights_only",
            type=bool | None,
            default=None,
            help="Load the checkpoint with torch's weights_only (default true); false only for a "
            "checkpoint whose source you trust",
        )
        parser.add_argument("--output", type=str, required=True, help="Where to write the torch.export program (.pt2)")
        parser.add_argument(
            "--onnx",
            type=str | None,
            default=None,
            help='Where to write the same model as ONNX (needs pip install -e ".[onnx]")',
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # Before anything is built, so that these mistakes are told at once.
        if self.config.ckpt_path is None:
            raise UsageError(
                "export needs trained weights: pass --ckpt_path with a run's checkpoint "
                "(logs/<name>/<version>/checkpoints/last.ckpt), or --ckpt_path last"
            )
        if self.config.onnx is not None:
            missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
            if missing:
                raise UsageError(
                    f"--onnx {self.config.onnx} needs {' and '.join(missing)}, not installed here: "
                    'pip install -e ".[onnx]", or leave out --onnx'
                )
        self._check_checkpoint_arguments("export", self.config)

    def export(self) -> None:
        """Write ``--output`` (and ``--onnx``): the checkpoint's model behind the data's normalization."""
        model, data, config = self.model, self.datamodule, self.config
        if not isinstance(data, InMemoryImageDataModule):
            raise UsageError(
                f"data {type(data).__name__}: export builds the training set's normalization into the "
                "model, which needs an InMemoryImageDataModule (CIFAR10DataModule, ImageFolderDataModule, "
                "SyntheticDataModule or a subclass)"
            )
        check_checkpoint_fits(model, Path(config.ckpt_path), config.weights_only)
        saved = torch.load(config.ckpt_path, map_location="cpu", weights_only=config.weights_only)
        model.load_state_dict(saved["state_dict"])
        data.prepare_data()  # as the Trainer would: an image folder decodes its splits into its cache here
        data.setup("predict")  # the training set's per-channel mean and std
        classifier = DeployableClassifier(model, data.mean, data.std, getattr(model, "tta_level", 0))
        classifier.eval().requires_grad_(False)  # BatchNorm's running statistics; outputs without autograd history
        # Traced at the training images' size; any batch size runs. Zeros: the artifact keeps its example inputs.
        example = torch.zeros(2, *data.splits["train"][0].shape[1:], dtype=torch.uint8)
        signature = (
            f"uint8 images (N, {', '.join(map(str, example.shape[1:]))}) -> class probabilities (N, {data.num_classes})"
        )
        write_program(classifier, example, Path(config.output))
        print(f"wrote {config.output}: {signature}; load it with torch.export.load(path).module()")
        if config.onnx is not None:
            write_onnx(classifier, example, Path(config.onnx))
            print(f"wrote {config.onnx}: {signature}, input 'images', output 'probabilities'")


def write_program(classifier: nn.Module, example: Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(classifier, (example,), dynamic_shapes=ANY_BATCH_SIZE), path)


def write_onnx(classifier: nn.Module, example: Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One file (weights inside): these networks are far below ONNX's 2 GB limit for that.
    torch.onnx.export(
        classifier,
        (example,),
        path,
        dynamo=True,
        verbose=False,
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes=ANY_BATCH_SIZE,
        external_data=False,
    )


def main() -> None:
    """Run the export; a user's mistake ends with one ``error:`` line, as in ``main.py``."""
    with mistakes_as_one_line():
        ExportCLI().export()


if __name__ == "__main__":
    main()
