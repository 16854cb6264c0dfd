"""A tiny model factory for the atlas build tests, importable by ``cnnvis atlas build --model
atlas_tiny:tiny`` in the processes ``torchrun`` starts (``tests/core`` on ``PYTHONPATH``)."""

from __future__ import annotations

import torch
from torch import nn


def tiny(seed: int = 0) -> nn.Module:
    """conv(3->8) relu maxpool conv(8->12) relu avgpool linear(12->5), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(12, 5),
        )


def tiny_other() -> nn.Module:
    """The same architecture with other weights."""
    return tiny(seed=1)
