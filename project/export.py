"""A trained checkpoint as one file that runs without this project or Lightning (project/models/deployable.py):
`python -m project.export --config <run>/config.yaml --ckpt_path <checkpoint> --output model.pt2 [--onnx m.onnx]`.

Each file carries its contract, what a client needs besides the model (``contract()``): one JSON object, in the
``.pt2`` archive as the extra file ``contract.json`` and in the ONNX model's ``metadata_props`` under the key
``contract``."""

import importlib.util
import json
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
CONTRACT_FILE = "contract.json"  # the .pt2's extra file: torch.export.load(path, extra_files={CONTRACT_FILE: ""})
CONTRACT_KEY = "contract"  # the ONNX metadata key: onnxruntime's session.get_modelmeta().custom_metadata_map


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
        """Write ``--output`` (and ``--onnx``): the checkpoint's model behind the data's normalization, each with
        its contract (class names, input, preprocessing); both are printed."""
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
        # A pretrained network's normalization (and unset image sizes) before the data is decoded and set up.
        self.connect_data_to_network()
        data.prepare_data()  # as the Trainer would: an image folder decodes its splits into its cache here
        data.setup("predict")  # the training set's per-channel mean and std
        tta_level = getattr(model, "tta_level", 0)
        classifier = DeployableClassifier(model, data.mean, data.std, tta_level)
        classifier.eval().requires_grad_(False)  # BatchNorm's running statistics; outputs without autograd history
        # Traced at the size the network sees in evaluation and predict (an image folder's stored squares are
        # center-cropped to crop_size first); any batch size runs. Zeros: the artifact keeps its example inputs.
        channels, *size = data.image_shape()
        example = torch.zeros(2, channels, *([data.crop_size] * 2 if data.crop_size else size), dtype=torch.uint8)
        terms = contract(data, tuple(example.shape[1:]), tta_level)
        signature = (
            f"uint8 images (N, {', '.join(map(str, example.shape[1:]))}) -> class probabilities (N, {data.num_classes})"
        )
        write_program(classifier, example, Path(config.output), terms)
        print(f"wrote {config.output}: {signature}; load it with torch.export.load(path).module()")
        if config.onnx is not None:
            write_onnx(classifier, example, Path(config.onnx), terms)
            print(f"wrote {config.onnx}: {signature}, input 'images', output 'probabilities'")
        print(f"class names: {json.dumps(terms['class_names'])}")
        print(f"preprocessing: {describe_preprocessing(terms)}")
        trained = (saved.get("hyper_parameters") or {}).get("tta_level", tta_level)
        if trained != tta_level:  # main.py predict takes the model's settings from the checkpoint
            print(f"note: exported with tta_level {tta_level}; main.py predict with this checkpoint uses {trained}")
        where = f"{config.output}'s extra file {CONTRACT_FILE}"
        where += f" and {config.onnx}'s metadata key {CONTRACT_KEY!r}" if config.onnx is not None else ""
        print(f"contract ({where}): {json.dumps(terms)}")


def contract(data: InMemoryImageDataModule, input_shape: tuple[int, ...], tta_level: int) -> dict:
    """What a client of the exported model needs besides it, as one JSON-able dict: ``class_names`` (output
    column ``i`` is ``class_names[i]``), the ``input`` and its ``input_size`` ``[H, W]``, and where the data has
    ``preprocessing`` (an image folder) how image files become that input: the short side resized to ``resize``
    with ``interpolation`` and the centre ``crop`` square taken. Then ``tta_level`` (averaged inside) and the
    ``output``. Normalization is inside the model: the client passes uint8 pixels."""
    channels, height, width = input_shape
    pixels = "RGB" if channels == 3 else f"{channels}-channel"
    terms = {
        "class_names": [str(name) for name in data.class_names],
        "input": f"uint8 {pixels} (N, {channels}, {height}, {width}), 0-255",
        "input_size": [height, width],
    }
    terms.update(getattr(data, "preprocessing", None) or {})
    terms["tta_level"] = tta_level
    terms["output"] = f"float32 class probabilities (N, {data.num_classes}), column i is class_names[i]"
    return terms


def describe_preprocessing(terms: dict) -> str:
    height, width = terms["input_size"]
    if "resize" not in terms:
        return f"images already at {height}x{width}, passed as {terms['input']}; tta_level {terms['tta_level']}"
    return (
        f"resize the short side to {terms['resize']} ({terms['interpolation']}), take the centre "
        f"{terms['crop']}x{terms['crop']} square, pass {terms['input']}; tta_level {terms['tta_level']}"
    )


def write_program(classifier: nn.Module, example: Tensor, path: Path, terms: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(classifier, (example,), dynamic_shapes=ANY_BATCH_SIZE)
    torch.export.save(program, path, extra_files={CONTRACT_FILE: json.dumps(terms)})


def write_onnx(classifier: nn.Module, example: Tensor, path: Path, terms: dict) -> None:
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
    import onnx  # installed with --onnx's packages (checked before anything is built)

    model = onnx.load(path)
    props = {prop.key: prop.value for prop in model.metadata_props}  # the exporter's own, if any, are kept
    onnx.helper.set_model_props(model, {**props, CONTRACT_KEY: json.dumps(terms)})
    onnx.save(model, path)


def main() -> None:
    """Run the export; a user's mistake ends with one ``error:`` line, as in ``main.py``."""
    with mistakes_as_one_line():
        ExportCLI().export()


if __name__ == "__main__":
    main()
