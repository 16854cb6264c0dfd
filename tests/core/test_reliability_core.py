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
    "attribute": lambda h, x: A.attribute(h, x, 0, "grad_cam", layer="conv1"),
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


# ----------------------------------------------------------------- bounds, integers, pixel ranges
# (issue 12: sizes and batches bounded by what a machine can hold, numpy integers accepted,
# pixel tensors outside [0, 1] refused with their real range)
import numpy as np  # noqa: E402

from cnnvis_widgets import limits  # noqa: E402
from cnnvis_widgets.core import activation_max as AM  # noqa: E402
from cnnvis_widgets.core import dissection as D  # noqa: E402
from cnnvis_widgets.core import objectives as O  # noqa: E402
from cnnvis_widgets.core import upconv as U  # noqa: E402
from cnnvis_widgets.data.concepts import probe_set  # noqa: E402

TOO_BIG = {
    "am_size": (lambda h: AM.maximize(h, "conv2:0", size=20000, steps=1), "MAX_IMAGE_SIDE"),
    "am_batch": (lambda h: AM.maximize(h, "conv2:0", batch=10**6, steps=1), "MAX_BATCH"),
    "am_pixels": (
        lambda h: AM.maximize(h, "conv2:0", batch=400, size=224, steps=1),
        "MAX_BATCH_PIXELS",
    ),
    "am_steps": (lambda h: AM.maximize(h, "conv2:0", steps=10**9), "MAX_STEPS"),
    "am_rotate": (lambda h: AM.maximize(h, "conv2:0", steps=1, rotate=1e9), "MAX_ROTATE"),
    "am_pad": (lambda h: AM.maximize(h, "conv2:0", steps=1, pad=10**6), "MAX_PAD"),
    "am_jitter": (lambda h: AM.maximize(h, "conv2:0", steps=1, jitter=10**6), "MAX_JITTER"),
    "am_scale": (lambda h: AM.maximize(h, "conv2:0", steps=1, scale=50.0), "MAX_SCALE"),
    "am_preset_steps": (
        lambda h: AM.maximize(h, "conv2:0", preset="yosinski", steps=10**7),
        "MAX_STEPS",
    ),
    "invert_size": (
        lambda h: INV.invert(h, torch.rand(1, 3, 32, 32), "conv2", steps=1, size=20000),
        "MAX_IMAGE_SIDE",
    ),
    "invert_steps": (
        lambda h: INV.invert(h, torch.rand(1, 3, 32, 32), "conv2", steps=10**9),
        "MAX_STEPS",
    ),
    "invert_jitter": (
        lambda h: INV.invert(h, torch.rand(1, 3, 32, 32), "conv2", steps=1, jitter=10**6),
        "MAX_JITTER",
    ),
    "topk_batch": (
        lambda h: T.top_k_patches(h, "conv2", [torch.rand(3, 32, 32)] * 2, batch_size=10**6),
        "MAX_BATCH",
    ),
    "topk_k": (
        lambda h: T.top_k_patches(h, "conv2", [torch.rand(3, 32, 32)] * 2, k=10**9),
        "MAX_TOP_K",
    ),
    "dissect_batch": (
        lambda h: D.dissect(h, "conv2", probe_set(4, size=32), batch_size=10**6),
        "MAX_BATCH",
    ),
    "probe_size": (lambda h: probe_set(4, size=20000), "MAX_IMAGE_SIDE"),
    "probe_images": (lambda h: probe_set(10**12, size=32), "MAX_DATASET_IMAGES"),
    "pgd_steps": (lambda h: ADV.pgd(h, torch.rand(1, 3, 32, 32), 4 / 255, 10**9), "MAX_STEPS"),
    "pgd_batch": (
        lambda h: ADV.pgd(h, torch.rand(1, 3, 32, 32).expand(2000, 3, 32, 32), 4 / 255, 1),
        "MAX_BATCH",
    ),
    "attribution_batch": (
        lambda h: A.saliency(h, torch.rand(1, 3, 32, 32).expand(2000, 3, 32, 32), 0),
        "MAX_BATCH",
    ),
    "decoder_size": (
        lambda h: next(U.train_decoder_steps(h, "conv2", steps=1, size=20000, save=False)),
        "MAX_IMAGE_SIDE",
    ),
    "decoder_batch": (
        lambda h: next(
            U.train_decoder_steps(h, "conv2", steps=1, batch_size=10**6, size=32, save=False)
        ),
        "MAX_BATCH",
    ),
}


@pytest.mark.parametrize("name", list(TOO_BIG))
def test_sizes_batches_steps_and_transforms_are_bounded_with_the_limit_named(name) -> None:
    # before: each of these started allocating gigabytes (or looped for days)
    h = load_model(make_tiny(), device="cpu", input_size=32)
    call, limit = TOO_BIG[name]
    with pytest.raises(ValueError, match=rf"above the limit {limit}=") as info:
        call(h)
    assert f"cnnvis_widgets.limits.{limit}" in str(info.value)
    assert active_hook_count(h.model) == 0
    assert all(p.requires_grad for p in h.model.parameters())


def test_the_limits_allow_real_use() -> None:
    assert limits.MAX_IMAGE_SIDE >= 2048
    assert limits.check_batch(256, 224, 224) == 256  # a dissection/top-k batch at 224 px
    assert limits.check_batch(2, 2048, 2048) == 2  # a poster-size activation maximization
    assert limits.check_steps(5000) == 5000  # a long decoder training
    limits.check_transforms(pad=12, jitter=8, scale=0.1, rotate=10, jitter2=4)  # Lucid's
    with pytest.raises(ValueError, match="use batch <= 256"):
        limits.check_batch(300, 224, 224)


def test_limits_are_read_at_call_time(monkeypatch) -> None:
    monkeypatch.setattr(limits, "MAX_IMAGE_SIDE", 4096)
    assert limits.check_side(4000) == 4000
    monkeypatch.setattr(limits, "MAX_IMAGE_SIDE", 64)
    with pytest.raises(ValueError, match="MAX_IMAGE_SIDE=64"):
        limits.check_side(65)


@pytest.mark.parametrize("good", [np.int64(3), np.int32(3), np.uint8(3), torch.tensor(3)])
def test_numpy_and_torch_integers_are_accepted_everywhere(good) -> None:
    # before: TypeError "unit must be an int" / "not iterable" / a confusing cast
    h = load_model(make_tiny(), device="cpu", input_size=32)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(A.saliency(h, x, good), A.saliency(h, x, 3))
    assert torch.equal(
        A.saliency(h, x, A.unit_at("conv2", good, good, good)),
        A.saliency(h, x, A.unit_at("conv2", 3, 3, 3)),
    )
    two = torch.cat([x, x.flip(-1)])
    assert torch.equal(
        A.saliency(h, two, A.unit_at("conv2", np.array([3, 5]), 1, 2)),
        A.saliency(h, two, A.unit_at("conv2", [3, 5], 1, 2)),
    )
    for obj, same in (
        (O.channel("conv2", good), O.channel("conv2", 3)),
        (O.neuron("conv2", good, good, good), O.neuron("conv2", 3, 3, 3)),
        (O.class_logit(good), O.class_logit(3)),
    ):
        assert torch.equal(AM.evaluate(h, obj, x), AM.evaluate(h, same, x)), obj.name
    r = AM.maximize(h, "conv2:1", steps=good, size=np.int64(16), batch=np.int64(1), seed=good)
    assert len(r.history) == 3 and r.image.shape == (1, 3, 16, 16)
    inv = INV.invert(h, x, "conv1", steps=good, seed=good, size=np.int64(32))
    assert len(inv.history) == 3
    adv = ADV.pgd(h, x, 4 / 255, steps=good, seed=good, target=good)
    assert adv.shape == x.shape
    top = T.top_k_patches(h, "conv2", [x[0]] * 4, k=np.int64(2), units=good, batch_size=good)
    assert top.values.shape[-1] == 2
    probe = probe_set(np.int64(4), size=np.int64(32), seed=good)
    assert len(probe) == 4


@pytest.mark.parametrize("bad", [True, 3.0, 2.5, np.float64(3.0), "3"])
def test_bools_floats_and_strings_are_refused_as_integers(bad) -> None:
    h = load_model(make_tiny(), device="cpu", input_size=32)
    x = torch.rand(1, 3, 32, 32)
    calls = [
        lambda: AM.maximize(h, "conv2:1", steps=2, batch=bad),
        lambda: AM.maximize(h, "conv2:1", steps=2, size=bad),
        lambda: AM.maximize(h, "conv2:1", steps=2, seed=bad),
        lambda: INV.invert(h, x, "conv1", steps=bad),
        lambda: ADV.pgd(h, x, 4 / 255, steps=bad),
        lambda: ADV.pgd(h, x, 4 / 255, steps=2, target=bad),
        lambda: T.top_k_patches(h, "conv2", [x[0]] * 2, k=bad),
        lambda: A.saliency(h, x, A.unit_at("conv2", bad, 0, 0)),
        lambda: probe_set(bad, size=32),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="must be an integer"):
            call()


def test_invert_refuses_pixels_outside_0_1_with_the_real_range() -> None:
    h = load_model(make_tiny(), device="cpu", input_size=32)
    photo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # before: a 0-255 tensor was clamped to white and inverted without a word
    with pytest.raises(ValueError, match=r"\[0, 1\].*0-255 values: pass image / 255"):
        INV.invert(h, photo * 255, "conv1", steps=1)
    with pytest.raises(ValueError, match="model-input"):
        INV.invert(h, h.normalize(photo), "conv1", steps=1)
    # a hair outside: the message prints enough digits to show it
    hair = photo.clone()
    hair[0, 0, 0, 0] = 1.0000002
    hair[0, 0, 0, 1] = -3e-7
    with pytest.raises(ValueError, match=r"got values in \[-3e-07, 1\.0000002\]"):
        INV.invert(h, hair, "conv1", steps=1)
    with pytest.raises(ValueError, match=r"got values in \[-3e-07, 1\.0000002\]"):
        ADV.pgd(h, hair, 4 / 255, steps=1)
    assert len(INV.invert(h, photo, "conv1", steps=1).history) == 1


def test_format_range_never_prints_an_outside_value_as_inside() -> None:
    for lo, hi in [(-1e-9, 1 + 1e-9), (-0.5, 254.9999), (0.0, 1.0 + 2**-23)]:
        text = limits.format_range(lo, hi)
        a, b = (float(v) for v in text.strip("[]").split(", "))
        assert (a < 0) == (lo < 0) and (b > 1) == (hi > 1), text


def test_top_k_refuses_0_255_tensor_items() -> None:
    # before: 0-255 tensors were ranked as they were, as if they were pixels in [0, 1]
    h = load_model(make_tiny(), device="cpu", input_size=32)
    items = [torch.rand(3, 32, 32) * 255 for _ in range(3)]
    with pytest.raises(ValueError, match="0-255 values"):
        T.top_k_patches(h, "conv2", items, k=2)
