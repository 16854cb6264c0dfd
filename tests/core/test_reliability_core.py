"""Reliability of the core methods (issue 8): NaN/inf inputs are refused with a clear error and
leave no hooks; every file the package reads is loaded without running pickled code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import cnnvis_widgets
from cnnvis_widgets import load_model
from cnnvis_widgets.core import adversarial as ADV
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import inversion as INV
from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core.hooks import active_hook_count
from tests.conftest import make_tiny

PACKAGE = Path(cnnvis_widgets.__file__).parent


def _bad(kind: str) -> torch.Tensor:
    x = torch.rand(1, 3, 32, 32)
    x[0, 1, 3, 4] = float("nan") if kind == "nan" else float("inf")
    return x


CASES = {
    "saliency": lambda h, x: A.saliency(h, x, 0),
    "deconvnet": lambda h, x: A.deconvnet(h, x, 0),
    "guided_backprop": lambda h, x: A.guided_backprop(h, x, 0),
    "grad_cam": lambda h, x: A.grad_cam(h, x, 0, "conv2"),
    "guided_grad_cam": lambda h, x: A.guided_grad_cam(h, x, 0, "conv2"),
    "attribute": lambda h, x: A.attribute(h, x, 0, "gradcam", layer="conv1"),
    "pgd": lambda h, x: ADV.pgd(h, x, 4 / 255, steps=2),
    "pgd_l2": lambda h, x: ADV.pgd(h, x, 1.0, steps=2, norm="l2"),
    "fgsm": lambda h, x: ADV.fgsm(h, x, 4 / 255),
    "predict": lambda h, x: ADV.predict(h, x),
    "top_k": lambda h, x: ADV.top_k(h, x),
    "unit_changes": lambda h, x: ADV.unit_changes(h, torch.rand(1, 3, 32, 32), x, "conv2"),
    "invert": lambda h, x: INV.invert(h, x, "conv2", steps=2, size=32),
    "invert_layers": lambda h, x: INV.invert_layers(h, x, ["conv1", "conv2"], steps=2, size=32),
    "top_k_patches": lambda h, x: T.top_k_patches(h, "conv2", [x[0]] * 9, k=9),
}


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("name", list(CASES))
def test_every_core_method_refuses_non_finite_inputs(name, kind) -> None:
    h = load_model(make_tiny(), device="cpu", input_size=32)
    with pytest.raises((ValueError, FloatingPointError)) as info:
        CASES[name](h, _bad(kind))
    msg = str(info.value)
    assert re.search(r"NaN|infinite|finite", msg), msg
    assert re.search(r"check|clean|pass", msg), f"no fix named: {msg}"
    assert active_hook_count(h.model) == 0
    assert all(p.requires_grad for p in h.model.parameters())
    # the handle is still usable after the error
    CASES[name](h, torch.rand(1, 3, 32, 32))
    assert active_hook_count(h.model) == 0


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return files


def _calls(src: str, name: str) -> list[str]:
    """The text of every ``name(...)`` call in ``src`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", src):
        depth, i = 1, m.end()
        while depth and i < len(src):
            depth += {"(": 1, ")": -1}.get(src[i], 0)
            i += 1
        out.append(src[m.start() : i])
    return out


def test_every_torch_load_uses_weights_only() -> None:
    seen = 0
    for path in _sources():
        for call in _calls(path.read_text(), "torch.load"):
            if call.startswith("torch.load(weights_only=True)"):
                continue  # prose in a docstring
            seen += 1
            assert "weights_only=True" in call, f"{path.name}: {call}"
    assert seen >= 3  # the model zoo, the embedded weights, the cache


def test_no_pickle_and_no_pickled_numpy_loads() -> None:
    for path in _sources():
        src = path.read_text()
        assert not re.search(r"^\s*import (c?pickle|dill|joblib)\b", src, re.M), path.name
        assert not re.search(r"\b(c?pickle|dill|joblib)\.loads?\(", src), path.name
        assert "allow_pickle=True" not in src, path.name
        for call in _calls(src, "np.load"):
            assert "allow_pickle=False" in call, f"{path.name}: {call}"
        assert "eval(" not in re.sub(r"\.eval\(|_eval\(", "", src), path.name
