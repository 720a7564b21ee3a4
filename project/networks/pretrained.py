"""Pretrained backbones from torchvision and timm as plain nn.Modules: a pretrained ``body`` and a new ``head``.

The head is the network's classifier and everything else is the body: the LightningModule gives the body a
lower learning rate than the new head through this split, so a network of your own that names its classifier
``head`` gets the same treatment. ``preprocessing`` says what the weights expect (timm's ``pretrained_cfg``
idea): the images must be normalized with the statistics the body was trained with.
"""

import copy
import difflib
import http.client
import math
import os
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from project.errors import UsageError

# For an architecture without weights of its own: ImageNet's statistics, resized to 256 and cropped to 224.
IMAGENET_PREPROCESSING = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "resize_size": 256,
    "crop_size": 224,
    "interpolation": "bilinear",
}


class TorchvisionNet(nn.Module):
    """A torchvision classification model with its final nn.Linear replaced by a new one of ``num_classes``.

    torchvision builds the model and loads named weights itself, so its per-family details stay its own
    (densenet's old key names, inception's input transform, the image size of ViT's SWAG weights). Named
    weights are read from torch hub's cache (``$TORCH_HOME/hub/checkpoints``) and downloaded only when missing
    there; offline, the error names the file to copy there. The file must hold tensors only
    (``weights_only``): torchvision would unpickle anything.

    Args:
        num_classes: Outputs of the new head.
        name: A torchvision classification model, as ``torchvision.models.list_models(module=torchvision.models)``
            lists them; one ending in a convolution (squeezenet) has no head to replace.
        weights: The name of torchvision weights for it (``DEFAULT``, ``IMAGENET1K_V2`` or
            ``ResNet50_Weights.IMAGENET1K_V2``), a path to a file holding its ``state_dict()`` (as saved by
            ``torch.save``, or under a ``state_dict`` or ``model`` key), or None to train from scratch.
    """

    def __init__(self, num_classes: int, name: str = "resnet50", weights: str | None = "DEFAULT") -> None:
        super().__init__()
        if num_classes < 1:
            raise UsageError(f"TorchvisionNet num_classes must be >= 1, got {num_classes}")
        # jsonargparse 4.53 hands a nested command-line null (--model.network.weights null) over as the text "None".
        weights = None if weights in ("None", "null") else weights
        models = torchvision.models
        known = models.list_models(module=models)
        _check_known(name, known, "torchvision.models.list_models(module=torchvision.models)")
        weights_enum = models.get_model_weights(name)
        named = None if weights is None else _weights_named(weights_enum, weights, name)
        if named is not None:
            _fetch(named)
        model = models.get_model(name, weights=named)
        # inception_v3 and googlenet also return auxiliary logits while training: drop them, as torchvision does
        # when asked for aux_logits=False (which it refuses together with weights).
        if getattr(model, "aux_logits", False):
            model.aux_logits = False
            for aux in ("AuxLogits", "aux1", "aux2"):
                if hasattr(model, aux):
                    setattr(model, aux, None)
        if weights is not None and named is None:
            _load(model, _read_state_dict(weights), f"weights file {weights}", f"torchvision's {name}")
        # Weights given by path, or none: the architecture's default weights say how it was trained.
        self.preprocessing = _torchvision_preprocessing(named or getattr(weights_enum, "DEFAULT", None), model)
        self.body, in_features = _split_classifier(model, name)
        self.head = nn.Linear(in_features, num_classes)
        self.pretrained = weights is not None  # a trained body: fine-tuning gives it a lower LR than the head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


class TimmNet(nn.Module):
    """A timm model without its classifier (``num_classes=0``: pooled features), and a new head of ``num_classes``.

    timm is optional: ``pip install -e ".[timm]"``. Offline, ``pretrained=True`` finds the weights in
    huggingface_hub's cache or fails (after huggingface_hub's retries); a weights file downloaded elsewhere
    works everywhere.

    Args:
        num_classes: Outputs of the new head.
        name: A timm model (``timm.list_models()``), with or without a weights tag (``resnet50.a1_in1k``).
        pretrained: True for timm's weights of that model, False to train from scratch, or a path to a file
            holding the timm model's ``state_dict()`` (``.pth``, ``.bin`` or ``.safetensors``; its classifier
            is dropped). The file is checked key by key, where timm would load it partly without a word.
    """

    def __init__(self, num_classes: int, name: str = "resnet50", pretrained: bool | str = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise UsageError(f"TimmNet num_classes must be >= 1, got {num_classes}")
        try:
            import timm
        except ImportError as err:
            raise UsageError('TimmNet needs timm: pip install -e ".[timm]" (or pip install timm)') from err
        if not (name.startswith(("hf-hub:", "local-dir:")) or timm.is_model(name)):
            _check_known(name, timm.list_models(), "timm.list_models()")
        try:
            body = timm.create_model(name, pretrained=pretrained is True, num_classes=0)
        except OSError as err:  # huggingface_hub's LocalEntryNotFoundError, urllib's URLError
            if pretrained is not True:
                raise
            raise UsageError(
                f"timm's pretrained weights for {name} are not in huggingface_hub's cache and could not be "
                f"downloaded ({type(err).__name__}): on a machine with network, torch.save the state_dict() of "
                f"timm.create_model({name!r}, pretrained=True) and pass its path as --model.network.pretrained, "
                "or pass --model.network.pretrained false to train from scratch"
            ) from err
        if isinstance(pretrained, str):
            _check_file(pretrained)
            state_dict = timm.models.load_state_dict(pretrained)  # weights_only; takes an EMA copy if there is one
            classifiers = body.pretrained_cfg.get("classifier") or ()
            for classifier in (classifiers,) if isinstance(classifiers, str) else classifiers:
                state_dict.pop(f"{classifier}.weight", None)
                state_dict.pop(f"{classifier}.bias", None)
            _load(body, state_dict, f"weights file {pretrained}", f"timm's {name}")
        config = timm.data.resolve_data_config({}, model=body)
        crop_size = config["input_size"][-1]
        self.preprocessing = {
            "mean": [float(m) for m in config["mean"]],
            "std": [float(s) for s in config["std"]],
            "resize_size": math.floor(crop_size / config["crop_pct"]),  # as timm's transforms_factory does
            "crop_size": crop_size,
            "interpolation": config["interpolation"],
        }
        self.body = body
        self.head = nn.Linear(getattr(body, "head_hidden_size", None) or body.num_features, num_classes)
        self.pretrained = pretrained is not False

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def _check_known(name: str, names: list[str], how_to_list: str) -> None:
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UsageError(f"unknown model {name!r}{hint}; {how_to_list} lists them all")


def _weights_named(weights_enum: type, weights: str, name: str):
    """The torchvision weights called ``weights``, or None where it is a path to a weights file."""
    member = str(weights).removeprefix(f"{weights_enum.__name__}.")
    if member in weights_enum.__members__:
        return weights_enum[member]
    if str(weights).endswith((".pth", ".pt")) or os.sep in str(weights) or os.path.exists(weights):
        _check_file(weights)
        return None
    valid = ", ".join(["DEFAULT", *(w.name for w in weights_enum)])
    raise UsageError(
        f"unknown weights {weights!r} for torchvision's {name}: one of {valid}, a path to a .pth file of its "
        "state_dict(), or null for none"
    )


def _fetch(weights) -> None:
    """Make sure torch hub's cache holds ``weights``' file, and that it holds nothing but tensors."""
    # torch.hub.load_state_dict_from_url's own rule (TORCH_HOME is read at each call).
    expected = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))
    try:
        # Downloads only when the file is missing (torch/hub.py, load_state_dict_from_url).
        weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (OSError, http.client.HTTPException) as err:  # urllib's URLError is an OSError
        if os.path.exists(expected):
            raise
        raise UsageError(
            f"torchvision's {weights!r} weights are not in {expected} and could not be downloaded ({err}): on a "
            f"machine with network, fetch {weights.url} and copy it there, or pass --model.network.weights null "
            "to train from scratch"
        ) from err


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"weights file {path} not found")


def _read_state_dict(path: str) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def _load(model: nn.Module, state_dict: dict, source: str, target: str) -> None:
    """``model.load_state_dict``, with a one-line error naming the keys that do not fit."""
    own = model.state_dict()
    # Keys of a submodule switched off (inception's AuxLogits is None) are no mismatch.
    unexpected = [k for k in state_dict if k not in own and getattr(model, k.split(".")[0], 0) is not None]
    missing = [k for k in own if k not in state_dict]
    resized = [k for k in own if k in state_dict and getattr(state_dict[k], "shape", None) != own[k].shape]
    if missing or unexpected or resized:
        problems = [(missing, "missing keys"), (unexpected, "unexpected keys"), (resized, "tensors of another shape")]
        found = ", ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in problems if keys)
        raise UsageError(f"{source} does not fit {target}: {found}")
    model.load_state_dict({k: state_dict[k] for k in own})


def _torchvision_preprocessing(weights, model: nn.Module) -> dict:
    if weights is None:
        return copy.deepcopy(IMAGENET_PREPROCESSING)
    transforms = weights.transforms()  # torchvision's ImageClassification preset
    preprocessing = {
        "mean": [float(m) for m in transforms.mean],
        "std": [float(s) for s in transforms.std],
        "resize_size": transforms.resize_size[0],
        "crop_size": transforms.crop_size[0],
        "interpolation": transforms.interpolation.value,
    }
    # A ViT takes one image size only: built without weights it is 224, where vit_h_14's default weights are 518.
    image_size = getattr(model, "image_size", None)
    if image_size is not None and image_size != preprocessing["crop_size"]:
        preprocessing["resize_size"] = preprocessing["crop_size"] = image_size
    return preprocessing


def _split_classifier(model: nn.Module, name: str) -> tuple[nn.Module, int]:
    """``model`` with its final classifier (the last nn.Linear to torchvision's 1000 classes) replaced by an
    nn.Identity, and that classifier's number of inputs."""
    classifiers = [k for k, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == 1000]
    if not classifiers:
        raise UsageError(
            f"torchvision's {name} does not end in an nn.Linear (squeezenet ends in a convolution): it has no head "
            "to replace; pick another model"
        )
    parent, _, attribute = classifiers[-1].rpartition(".")
    in_features = model.get_submodule(classifiers[-1]).in_features
    setattr(model.get_submodule(parent), attribute, nn.Identity())
    return model, in_features
