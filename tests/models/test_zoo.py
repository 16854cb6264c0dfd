"""torchvision classifiers by name: random init, offline-safe published weights, file weights."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnvis_widgets.models.imagenet import imagenet_class_names
from cnnvis_widgets.models.zoo import WeightsUnavailableError, build_torchvision

torch.set_num_threads(1)

RESNET18_FILE = "resnet18-f37072fd.pth"
RESNET18_URL = "https://download.pytorch.org/models/" + RESNET18_FILE


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in this test")


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """Empty torch hub cache under tmp_path and sockets that cannot connect."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    return hub


def test_resnet18_random(offline: Path) -> None:
    state = torch.get_rng_state()
    model, spec = build_torchvision("resnet18", weights=None, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert not model.training
    assert spec == {
        "size": 224,
        "resize": 256,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    same, _ = build_torchvision("resnet18", weights=None, seed=3)
    other, _ = build_torchvision("resnet18", weights=None, seed=4)
    assert torch.equal(model.conv1.weight, same.conv1.weight)
    assert not torch.equal(model.conv1.weight, other.conv1.weight)
    assert not offline.exists()  # nothing was downloaded or created


def test_alexnet_and_googlenet_random(offline: Path) -> None:
    alexnet, spec = build_torchvision("alexnet", weights=None)
    assert isinstance(alexnet, nn.Module) and spec["size"] == 224
    googlenet, _ = build_torchvision("googlenet", weights=None)
    with torch.no_grad():
        out = googlenet(torch.randn(1, 3, 96, 96))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1000)


def test_spec_follows_weights_transforms() -> None:
    _, spec = build_torchvision("efficientnet_b0", weights=None)
    assert spec["interpolation"] == "bicubic"
    assert (spec["size"], spec["resize"]) == (224, 256)


def test_unknown_arch_lists_close_names() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        build_torchvision("resnet19", weights=None)
    with pytest.raises(ValueError, match="alexnet"):
        build_torchvision("alexnett", weights=None)


def test_imagenet_offline_raises_with_path(offline: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        build_torchvision("resnet18", weights="imagenet")
    message = str(info.value)
    assert str(offline / "checkpoints" / RESNET18_FILE) in message
    assert RESNET18_URL in message
    assert 'weights="/path/to/file.pth"' in message
    assert isinstance(info.value, RuntimeError)
    assert not (offline / "checkpoints" / RESNET18_FILE).exists()


def test_imagenet_download_is_attempted_only_when_asked(offline: Path, monkeypatch) -> None:
    calls: list[str] = []

    def fake_download(url: str, dst: str, *args, **kwargs) -> None:
        calls.append(url)
        raise ConnectionError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    build_torchvision("resnet18", weights=None)
    assert calls == []
    with pytest.raises(WeightsUnavailableError, match=RESNET18_FILE):
        build_torchvision("resnet18", weights="imagenet")
    assert calls == [RESNET18_URL]


def test_imagenet_uses_the_hub_cache(offline: Path) -> None:
    source, _ = build_torchvision("resnet18", weights=None, seed=7)
    cached = offline / "checkpoints" / RESNET18_FILE
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    model, spec = build_torchvision("resnet18", weights="imagenet")
    assert torch.equal(model.fc.weight, source.fc.weight)
    assert spec["resize"] == 256 and not model.training


def test_weights_from_path(tmp_path: Path, offline: Path) -> None:
    source, _ = build_torchvision("resnet18", weights=None, seed=9)
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model, _ = build_torchvision("resnet18", weights=str(path))
    assert torch.equal(model.fc.weight, source.fc.weight)
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_torchvision("resnet18", weights=str(missing))


def test_googlenet_file_with_aux_heads(tmp_path: Path) -> None:
    import torchvision

    with_aux = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    path = tmp_path / "googlenet.pth"
    torch.save(with_aux.state_dict(), path)
    model, _ = build_torchvision("googlenet", weights=path)
    assert torch.equal(model.fc.weight, with_aux.fc.weight)
    assert model.aux1 is None


def test_imagenet_class_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[281] == "tabby" and names[967] == "espresso"
    names.append("x")
    assert len(imagenet_class_names()) == 1000  # callers get copies of the cache
