"""One attribution run: every method's map of a photo into a bounded cache, then its pictures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import attribution_run as AR
from cnnvis_widgets.core.blocks.runs import Run, finish
from cnnvis_widgets.data import sample_image


def _maps(handle, cache=None, target=1, layer="relu2"):
    x = handle.preprocess(sample_image("cat"))
    pixels = AR.display_pixels(handle, x)
    return x, AR.PhotoMaps(cache or AR.MapCache(), "cat", target, layer, pixels)


def test_steps_compute_every_map_the_chosen_first_and_return_the_maps(tiny_handle) -> None:
    x, maps = _maps(tiny_handle)
    run = Run(AR.attribution_steps(tiny_handle, x, maps, "grad_cam"))
    steps = list(run)
    assert run.result is maps and maps.unsupported == {}
    assert [s.metrics["method"] for s in steps][0] == "grad_cam"
    assert sorted(s.metrics["method"] for s in steps) == sorted(A.METHODS)
    assert all(s.total == len(A.METHODS) and s.image is None for s in steps)
    assert len(maps.cache) == 2 * len(A.METHODS)  # a map and its summary per method
    assert maps.summary("saliency") == "Saliency (gradient): 1 pass"
    for method in A.METHODS:  # the core functions' maps, on the CPU
        want = A.attribute(tiny_handle, x, 1, method, layer="relu2")[0].cpu()
        assert torch.allclose(maps.map(method), want)


def test_cached_maps_are_not_computed_again(tiny_handle, monkeypatch) -> None:
    x, maps = _maps(tiny_handle)
    finish(AR.attribution_steps(tiny_handle, x, maps, "saliency"))
    from cnnvis_widgets.core.attribution import photo_maps

    monkeypatch.setattr(photo_maps, "explain", lambda *a, **k: 1 / 0)
    steps = list(AR.attribution_steps(tiny_handle, x, maps, "deconvnet"))
    assert len(steps) == len(A.METHODS)
    # another Grad-CAM layer: only the two Grad-CAM maps are new
    x, other = _maps(tiny_handle, maps.cache, layer="relu1")
    assert other.map("saliency") is not None and other.map("grad_cam") is None


def test_the_options_are_part_of_the_key_and_integrated_gradients_keep_their_check(
    tiny_handle,
) -> None:
    x, maps = _maps(tiny_handle)
    maps.options.update(steps=4, patch=8)
    finish(AR.attribution_steps(tiny_handle, x, maps, "integrated_gradients"))
    c = maps.completeness("integrated_gradients")
    want = A.explain(tiny_handle, x, 1, "integrated_gradients", steps=4).completeness
    assert c is not None and want is not None
    assert c["total"] == pytest.approx(float(want.total[0])) and c["delta"] == pytest.approx(
        float(want.delta[0])
    )
    assert "completeness: the attributions sum to" in maps.summary("integrated_gradients")
    assert maps.completeness("saliency") is None
    finish(AR.attribution_steps(tiny_handle, x, maps, "occlusion"))
    first = maps.map("occlusion")
    maps.options.update(stride=4)  # another map, kept beside the first
    assert maps.map("occlusion") is None
    finish(AR.attribution_steps(tiny_handle, x, maps, "occlusion"))
    assert not torch.equal(maps.map("occlusion"), first)
    maps.options.update(smoothgrad=True, samples=2)
    assert maps.map("saliency") is None and maps.map("occlusion") is not None


def test_an_unsupported_method_is_left_out_unless_it_is_the_one_asked_for() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )  # fmt: skip
    h = load_model(net, device="cpu", input_size=32)
    x, maps = _maps(h, layer="1")
    finish(AR.attribution_steps(h, x, maps, "saliency"))
    assert set(maps.unsupported) == {"deconvnet", "guided_backprop", "guided_grad_cam"}
    assert "'1'" in maps.unsupported["deconvnet"]
    assert maps.pictures("saliency", 0.5)["strip"].shape[2] == 2 * (128 + 4)
    assert maps.pictures("deconvnet", 0.5) is None
    with pytest.raises(A.UnsupportedActivationError):
        finish(AR.attribution_steps(h, x, maps, "guided_backprop"))
    assert not A.patches_installed()


def test_pictures_of_a_map(tiny_handle) -> None:
    x, maps = _maps(tiny_handle)
    assert maps.pictures("saliency", 0.5) is None  # nothing computed yet
    finish(AR.attribution_steps(tiny_handle, x, maps, "saliency"))
    pics = maps.pictures("saliency", 0.0)
    assert torch.equal(pics["overlay"], maps.pixels)  # opacity 0: the photo only
    assert pics["composite"].shape == (1, 3, 32, 3 * 32 + 12)
    assert pics["strip"].shape[2] == len(A.METHODS) * (128 + 4)


def test_display_pixels_show_a_grey_input_as_rgb() -> None:
    from tests.conftest import make_tiny

    h = load_model(make_tiny(in_channels=1), device="cpu", input_size=32)
    px = AR.display_pixels(h, h.preprocess(sample_image("camera")))
    assert px.shape == (3, 32, 32) and torch.equal(px[0], px[2])
    assert 0 <= float(px.min()) and float(px.max()) <= 1


def test_the_map_cache_is_bounded_by_bytes_and_keeps_the_newest() -> None:
    cache = AR.MapCache(max_items=100, max_bytes=3 * 4 * 100)
    for i in range(10):
        cache[(i,)] = torch.zeros(100)
        cache.get((0,))  # recently used: survives
    assert len(cache) == 3 and (0,) in cache and (9,) in cache and cache.nbytes == 1200
    cache[(9,)] = torch.zeros(10)  # replacing an entry counts its bytes once
    assert cache.nbytes == 800 + 40
    tiny = AR.MapCache(max_items=5, max_bytes=1)
    tiny[("big",)] = torch.zeros(1000)
    assert ("big",) in tiny  # the newest map is kept even when it alone is over the limit
    assert AR.MAX_MAPS >= 2 * len(A.METHODS)
