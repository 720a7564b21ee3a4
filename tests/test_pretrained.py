"""Pretrained backbones: weights read offline from torch hub's cache or a file, the body/head split, preprocessing.

No test touches the network: TORCH_HOME is a fresh folder and torch hub's download raises.
"""

import argparse
import os
import pickle
import sys
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from project.errors import UsageError
from project.networks.pretrained import TimmNet, TorchvisionNet

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """torch hub's cache in a fresh folder; the URLs torch hub was asked to download (each attempt fails)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    attempts = []

    def no_download(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return attempts


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's ``name`` with every floating tensor random, unlike any fresh model's."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = torchvision.models.get_model(name).state_dict()
    return {k: torch.rand(v.shape, generator=generator) if v.is_floating_point() else v for k, v in state_dict.items()}


def in_cache(weights) -> str:
    """Where torch hub keeps ``weights``' file, written independently of the code under test."""
    return os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints", weights.url.split("/")[-1])


def assert_body_holds(net: nn.Module, state_dict: dict, classifier: str, num_classes: int) -> None:
    body = net.body.state_dict()
    assert set(body) == {k for k in state_dict if not k.startswith(f"{classifier}.")}
    for key, tensor in body.items():
        assert torch.equal(tensor, state_dict[key]), key
    assert isinstance(net.head, nn.Linear) and net.head.out_features == num_classes
    assert not any(torch.equal(net.head.weight[:1], w[:1]) for k, w in state_dict.items() if k.startswith(classifier))


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"])
def test_named_weights_load_from_torch_hubs_cache(weights, offline):
    state_dict = random_state_dict("resnet18")
    path = in_cache(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    os.makedirs(os.path.dirname(path))
    torch.save(state_dict, path)
    net = TorchvisionNet(num_classes=7, name="resnet18", weights=weights)
    assert_body_holds(net, state_dict, "fc", 7)
    assert offline == []


def test_named_weights_bring_their_preprocessing():
    weights = torchvision.models.RegNet_X_400MF_Weights.IMAGENET1K_V1  # 256 -> 224; its DEFAULT (V2) is 232 -> 224
    os.makedirs(os.path.dirname(in_cache(weights)))
    torch.save(random_state_dict("regnet_x_400mf"), in_cache(weights))
    net = TorchvisionNet(num_classes=3, name="regnet_x_400mf", weights="IMAGENET1K_V1")
    assert (net.preprocessing["resize_size"], net.preprocessing["crop_size"]) == (256, 224)


def test_default_weights_are_the_models_default(offline):
    with pytest.raises(UsageError, match="resnet50-11ad3fa6.pth"):  # ResNet50_Weights.IMAGENET1K_V2's file
        TorchvisionNet(num_classes=3, name="resnet50", weights="DEFAULT")


@pytest.mark.parametrize("wrapped", [False, True])
def test_weights_from_a_state_dict_file(tmp_path, wrapped):
    state_dict = random_state_dict("resnet18")
    torch.save({"state_dict": state_dict} if wrapped else state_dict, tmp_path / "mine.pth")
    net = TorchvisionNet(num_classes=4, name="resnet18", weights=str(tmp_path / "mine.pth"))
    assert_body_holds(net, state_dict, "fc", 4)


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
def test_weights_file_with_auxiliary_heads(tmp_path):
    # googlenet() has auxiliary classifiers, which TorchvisionNet switches off: their weights are no mismatch.
    state_dict = random_state_dict("googlenet")
    assert any(key.startswith("aux1.") for key in state_dict)
    torch.save(state_dict, tmp_path / "googlenet.pth")
    net = TorchvisionNet(num_classes=4, name="googlenet", weights=str(tmp_path / "googlenet.pth"))
    assert torch.equal(net.body.conv1.conv.weight, state_dict["conv1.conv.weight"])


def test_weights_holding_more_than_tensors_are_refused(tmp_path):
    path = in_cache(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    os.makedirs(os.path.dirname(path))
    torch.save({**random_state_dict("resnet18"), "extra": argparse.Namespace()}, path)
    with pytest.raises(pickle.UnpicklingError):
        TorchvisionNet(num_classes=4, name="resnet18", weights="DEFAULT")


def test_weights_file_of_another_model_is_one_line(tmp_path):
    torch.save(random_state_dict("resnet34"), tmp_path / "resnet34.pth")
    with pytest.raises(
        UsageError, match=r"resnet34\.pth does not fit torchvision's resnet18: .*unexpected keys"
    ) as err:
        TorchvisionNet(num_classes=4, name="resnet18", weights=str(tmp_path / "resnet34.pth"))
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="missing.pth not found"):
        TorchvisionNet(num_classes=4, name="resnet18", weights=str(tmp_path / "missing.pth"))


def test_no_weights_trains_from_scratch(tmp_path, offline):
    state_dict = random_state_dict("resnet18")
    torch.save(state_dict, tmp_path / "seeded.pth")
    net = TorchvisionNet(num_classes=4, name="resnet18", weights=None)
    assert not torch.equal(net.body.conv1.weight, state_dict["conv1.weight"])
    assert offline == []


def test_missing_weights_offline_name_the_file_to_copy(offline):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    with pytest.raises(UsageError) as err:
        TorchvisionNet(num_classes=4, name="resnet18", weights="IMAGENET1K_V1")
    message = str(err.value)
    assert offline == [weights.url]  # the real download was tried (and failed, the test's network being off)
    assert in_cache(weights) in message and weights.url in message and "weights null" in message
    assert "IMAGENET1K_V1" in message and "\n" not in message


@pytest.mark.parametrize(
    "name, weights, named",
    [
        ("resnet_18", None, ["'resnet_18'", "resnet18", "list_models"]),
        ("resnet18", "IMAGENET1K_V9", ["'IMAGENET1K_V9'", "IMAGENET1K_V1", "DEFAULT"]),
        ("squeezenet1_1", None, ["squeezenet1_1", "nn.Linear"]),
    ],
)
def test_mistakes_are_one_line(name, weights, named):
    with pytest.raises(UsageError) as err:
        TorchvisionNet(num_classes=4, name=name, weights=weights)
    assert all(part in str(err.value) for part in named) and "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet")
@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "regnet_x_400mf", "googlenet"]
)
def test_head_replaces_the_final_linear(name):
    torch.manual_seed(0)
    net = TorchvisionNet(num_classes=5, name=name, weights=None)
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 5
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in net.body.modules())
    net.train()  # googlenet returns auxiliary logits while training unless they are off
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    state_dict = net.state_dict()
    assert {key.split(".")[0] for key in state_dict} == {"body", "head"}
    assert len({t.data_ptr() for t in state_dict.values()}) == len(state_dict)


def test_preprocessing_is_the_weights_own():
    # torchvision's documented preset for ResNet50_Weights.IMAGENET1K_V2 (its DEFAULT).
    assert TorchvisionNet(num_classes=3, name="resnet50", weights=None).preprocessing == {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "resize_size": 232,
        "crop_size": 224,
        "interpolation": "bilinear",
    }
    assert (
        TorchvisionNet(num_classes=3, name="efficientnet_b0", weights=None).preprocessing["interpolation"] == "bicubic"
    )


# timm ---------------------------------------------------------------------------------------------------------


def test_timm_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UsageError, match=r'pip install -e "\.\[timm\]"'):
        TimmNet(num_classes=3, name="resnet18", pretrained=False)


@pytest.mark.parametrize("name, features", [("resnet18", 512), ("mobilenetv3_small_050", 1024)])
def test_timm_body_and_head(name, features):
    pytest.importorskip("timm")
    net = TimmNet(num_classes=5, name=name, pretrained=False)
    assert isinstance(net.head, nn.Linear) and (net.head.in_features, net.head.out_features) == (features, 5)
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    state_dict = net.state_dict()
    assert {key.split(".")[0] for key in state_dict} == {"body", "head"}
    assert len({t.data_ptr() for t in state_dict.values()}) == len(state_dict)


def test_timm_preprocessing():
    pytest.importorskip("timm")
    # timm's pretrained_cfg of resnet18.a1_in1k: 224 px at crop_pct 0.95, bicubic.
    assert TimmNet(num_classes=3, name="resnet18", pretrained=False).preprocessing == {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "resize_size": 235,
        "crop_size": 224,
        "interpolation": "bicubic",
    }


def test_timm_weights_from_a_file(tmp_path):
    timm = pytest.importorskip("timm")
    generator = torch.Generator().manual_seed(0)
    fresh = timm.create_model("resnet18").state_dict()
    state_dict = {k: torch.rand(v.shape, generator=generator) if v.is_floating_point() else v for k, v in fresh.items()}
    torch.save(state_dict, tmp_path / "timm.pth")
    net = TimmNet(num_classes=6, name="resnet18", pretrained=str(tmp_path / "timm.pth"))
    assert_body_holds(net, state_dict, "fc", 6)
    with pytest.raises(UsageError, match="does not fit timm's resnet34: .*missing keys"):
        TimmNet(num_classes=6, name="resnet34", pretrained=str(tmp_path / "timm.pth"))


def test_timm_offline_and_unknown_name_are_one_line(monkeypatch):
    pytest.importorskip("timm")
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("no network in tests")

    monkeypatch.setattr("timm.models._hub.hf_hub_download", offline)
    monkeypatch.setattr("timm.models._hub.download_url_to_file", offline)
    with pytest.raises(UsageError, match="resnet18 .* --model.network.pretrained false") as err:
        TimmNet(num_classes=3, name="resnet18", pretrained=True)
    assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="'resnet_18' .*resnet18"):
        TimmNet(num_classes=3, name="resnet_18", pretrained=False)
