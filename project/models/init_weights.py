"""Start a new run from trained weights: another run's checkpoint, or a plain ``torch.save(model.state_dict())``."""

from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from project.errors import UsageError


def load_init_weights(network: nn.Module, path: str) -> None:
    """Copy the weights saved at ``path`` into ``network``, all but a ``head`` of another shape.

    The file may be a Lightning checkpoint of an ``ImageClassifier`` (keys ``network.*``), a state dict
    of this network, or one of the model a ``body`` wraps (a torchvision model's own file). A head that
    does not fit (another number of classes) keeps its fresh initialization, and the line printed says
    so; any other parameter that is missing or of another shape is a mistake: another architecture.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.init_weights {path}: no such file")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not any(isinstance(value, Tensor) for value in state.values()):
        raise UsageError(
            f"model.init_weights {path} holds no weights: give a run's .ckpt or a file written by "
            "torch.save(model.state_dict())"
        )
    own = network.state_dict()
    candidates = (
        state,
        {key.removeprefix("network."): value for key, value in state.items() if key.startswith("network.")},
        {f"body.{key}": value for key, value in state.items()},
    )
    found = max(candidates, key=lambda candidate: len(own.keys() & candidate.keys()))
    fits = {key for key in own.keys() & found.keys() if found[key].shape == own[key].shape}
    in_head = {key for key in own if key.startswith("head.")}
    unfit = [key for key in own if key not in fits and key not in in_head]
    if unfit:
        differences = [
            f"{key} is {tuple(found[key].shape)} there, {tuple(own[key].shape)} here"
            if key in found
            else f"{key} is not there"
            for key in unfit[:3]
        ]
        more = f" and {len(unfit) - 3} more" if len(unfit) > 3 else ""
        raise UsageError(
            f"model.init_weights {path} does not fit the network (another architecture or widths?): "
            f"{'; '.join(differences)}{more}"
        )
    network.load_state_dict({key: found[key] for key in fits}, strict=False)
    new_head = sorted(in_head - fits)
    if new_head:
        shapes = ", ".join(
            f"{key} {tuple(found[key].shape) if key in found else 'absent'} there, {tuple(own[key].shape)} here"
            for key in new_head
        )
        rank_zero_info(f"model.init_weights: the network starts from {path}, but for a new head ({shapes})")
    else:
        rank_zero_info(f"model.init_weights: the network starts from {path}")
