"""The CUDA path: exercised where a GPU is present, skipped (with the reason) elsewhere."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core.hooks import active_hook_count
from tests.conftest import make_tiny

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@needs_cuda
def test_maximize_runs_on_cuda_and_matches_cpu_shapes() -> None:
    h = load_model(make_tiny(), device="cuda", input_size=32)
    assert next(h.model.parameters()).is_cuda
    steps = list(am.maximize_steps(h, "conv2:3", batch=4, steps=5, size=32, sd=0.01))
    assert all(s.image.is_cuda for s in steps)
    r = am.maximize(h, "conv2:3", steps=20, size=32)
    assert r.image.device.type == "cpu" and r.activation.shape == (1,)
    assert active_hook_count(h.model) == 0


def test_default_device_follows_cuda_availability() -> None:
    h = load_model(make_tiny(), input_size=32)
    assert h.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
