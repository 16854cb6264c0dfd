"""Receptive fields (analytic and brute force) and the streaming top-k pass (exhaustive check)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core.blocks.runs import Run, finish
from cnnvis_widgets.core.hooks import active_hook_count
from cnnvis_widgets.data.datasets import ImageDataset
from tests.conftest import make_tiny


class Chain(nn.Module):
    """conv 3x3 s1 p1 -> max pool 2 -> conv 3x3 s2 p0 (16x16 input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.pool(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def clip(a: int, b: int, n: int) -> tuple[int, int]:
    return max(0, a), min(n, b)


def test_receptive_fields_of_a_conv_pool_chain_match_the_formula() -> None:
    h = load_model(Chain(), device="cpu", input_size=16)
    rf1 = T.receptive_field(h, "conv1")
    assert rf1.output_size == (16, 16)
    assert list(rf1.rows) == [clip(i - 1, i + 2, 16) for i in range(16)]
    rfp = T.receptive_field(h, "pool")
    assert list(rfp.cols) == [clip(2 * j - 1, 2 * j + 3, 16) for j in range(8)]
    rf2 = T.receptive_field(h, "conv2")
    assert rf2.output_size == (3, 3)
    assert list(rf2.rows) == [clip(4 * m - 1, 4 * m + 7, 16) for m in range(3)]
    assert rf2.size == (8, 8) and rf2.stride == (4, 4)
    assert rf2.box(0, 2) == (0, 7, 7, 15)
    assert T.ReceptiveField.from_dict(rf2.to_dict()) == rf2
    assert active_hook_count(h.model) == 0 and not A.patches_installed()
    # the model itself is untouched by the structural pass
    assert all(p.requires_grad for p in h.model.parameters())


class _AllCaptured(Exception):
    """Raised by the last hook of :func:`brute_force_check`: every layer's output is in."""


def brute_force_check(handle, layers: list[str], pixels: list[tuple[int, int]]) -> None:
    """Perturb one input pixel at a time (float64 copy of the real model, all channels +1) and
    compare the set of output positions that change with the computed receptive fields."""
    size = handle.input_size
    model = copy.deepcopy(handle.model).double().eval()
    base = torch.randn(1, handle.in_channels, *size, generator=torch.Generator().manual_seed(0))
    xs = base.repeat(len(pixels) + 1, 1, 1, 1).double()
    for i, (py, px) in enumerate(pixels):
        xs[i + 1, :, py, px] += 1.0
    acts: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def keep(name: str, out: torch.Tensor) -> None:
        acts.setdefault(name, out)
        if len(acts) == len(layers):
            raise _AllCaptured  # the rest of the network is not needed

    hooks = [
        modules[name].register_forward_hook(lambda m, i, o, n=name: keep(n, o)) for name in layers
    ]
    try:
        with torch.no_grad():
            model(xs)
    except _AllCaptured:
        pass
    finally:
        for hk in hooks:
            hk.remove()
    for name in layers:
        rf = T.receptive_field(handle, name)
        out = acts[name]
        hh, ww = out.shape[-2:]
        assert rf.output_size == (hh, ww)
        for i, (py, px) in enumerate(pixels):
            changed = ((out[i + 1] - out[0]).abs().amax(dim=0) != 0).numpy()
            rows = np.array([a <= py < b for a, b in rf.rows])
            cols = np.array([a <= px < b for a, b in rf.cols])
            predicted = rows[:, None] & cols[None, :]
            assert (changed == predicted).all(), (name, (py, px), changed.sum(), predicted.sum())


PIXELS_224 = [(0, 0), (0, 223), (223, 0), (223, 223), (112, 112), (1, 74), (222, 5), (37, 101)]


@pytest.mark.slow
def test_receptive_fields_agree_with_brute_force_on_pretrained_lite0(lite0) -> None:
    brute_force_check(lite0, ["_conv_stem", "_blocks.1", "_blocks.4", "_blocks.8"], PIXELS_224)
    rf = T.receptive_field(lite0, "_blocks.4")
    assert rf.stride == (8, 8) and rf.size == (67, 67)


def test_receptive_fields_agree_with_brute_force_on_resnet18() -> None:
    # max pooling, stride-2 convolutions, residual branches with 1x1 downsampling, in-place ReLU
    h = load_model("torchvision:resnet18", device="cpu", input_size=64)
    pixels = [(0, 0), (63, 63), (0, 40), (31, 32), (17, 2), (50, 61)]
    brute_force_check(h, ["relu", "maxpool", "layer1", "layer2.0", "layer2"], pixels)
    assert T.receptive_field(h, "layer1").size == (43, 43)


# ------------------------------------------------------------------------------------------------
# top-k


def exhaustive(handle, layer: str, pixels: torch.Tensor, k: int):
    """Rank every image per unit by brute force: (values, indices, ys, xs) per unit."""
    seen: list[torch.Tensor] = []
    hook = handle.module(layer).register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    try:  # a clone: an in-place ReLU after the layer must not change what we rank
        with torch.no_grad():
            handle.net(handle.normalize(pixels))
    finally:
        hook.remove()
    a = seen[0]
    n, c, hh, ww = a.shape
    flat = a.flatten(2)
    vals, pos = flat.max(dim=2)  # (N, C)
    out = []
    for u in range(c):
        order = sorted(range(n), key=lambda i: -float(vals[i, u]))[:k]
        out.append(
            (
                [float(vals[i, u]) for i in order],
                order,
                [int(pos[i, u]) // ww for i in order],
                [int(pos[i, u]) % ww for i in order],
            )
        )
    return out


def random_pixels(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layer", ["relu1", "conv2"])
def test_top_k_equals_an_exhaustive_ranking(tiny_handle, layer: str) -> None:
    pixels = random_pixels(41)
    top = T.top_k_patches(tiny_handle, layer, list(pixels), k=5, batch_size=7)
    ref = exhaustive(tiny_handle, layer, pixels, 5)
    assert top.units == list(range(tiny_handle.layer(layer).channels))
    assert top.count == 41
    for u, (vals, idx, ys, xs) in enumerate(ref):
        entries = top.entries(u)
        assert [e.image for e in entries] == idx
        assert [e.y for e in entries] == ys and [e.x for e in entries] == xs
        assert np.allclose([e.value for e in entries], vals, rtol=1e-5, atol=1e-6)
        # each image at most once per unit
        assert len(set(idx)) == len(idx)
    assert active_hook_count(tiny_handle.model) == 0


def test_patches_are_the_receptive_field_crops(tiny_handle) -> None:
    pixels = random_pixels(12, seed=3)
    arrays = [(p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in pixels]
    ds = ImageDataset(
        [f"img{i}" for i in range(12)], lambda i: Image.fromarray(arrays[i]), key="rand12"
    )
    top = T.top_k_patches(tiny_handle, "conv2", ds, k=3, units=[2, 9])
    assert top.units == [2, 9] and top.dataset_key == "rand12"
    assert top.pixels == {}  # an indexable dataset is re-read, not kept
    rf = T.receptive_field(tiny_handle, "conv2")
    for unit in (2, 9):
        entries = top.entries(unit)
        patches = top.patches(unit, ds)
        assert len(patches) == 3
        for e, patch in zip(entries, patches):
            assert e.name == f"img{e.image}"
            t, l_, b, r = rf.box(e.y, e.x)
            full = torch.from_numpy(arrays[e.image]).permute(2, 0, 1).float() / 255
            assert torch.equal(patch, full[:, t:b, l_:r])
    with pytest.raises(IndexError, match="not part of this top-k pass"):
        top.entries(3)
    with pytest.raises(ValueError, match="pass the dataset"):
        top.patches(2)


def test_memory_is_bounded_by_k_per_unit_not_by_the_dataset(tiny_handle) -> None:
    k, units = 2, [0, 1, 2]

    def stream(n: int):  # a plain generator: nothing can be re-read, so images are kept
        g = torch.Generator().manual_seed(5)
        for _ in range(n):
            yield torch.rand(3, 32, 32, generator=g)

    small = T.top_k_patches(tiny_handle, "conv1", stream(20), k=k, units=units)
    big = T.top_k_patches(tiny_handle, "conv1", stream(400), k=k, units=units)
    assert big.count == 400
    assert len(big.pixels) <= k * len(units) and len(big.names) <= k * len(units)
    assert big.values.shape == small.values.shape == (3, 2)
    # kept images are exactly the referenced ones, and patches come from them
    assert set(big.pixels) == set(big.images.flatten().tolist())
    assert big.patches(1)[0].shape[0] == 3


def test_save_load_and_cache(tiny_handle, tmp_path, monkeypatch) -> None:
    pixels = random_pixels(10, seed=7)
    top = T.top_k_patches(tiny_handle, "conv2", list(pixels), k=4)
    path = top.save(tmp_path / "top.pt")
    back = T.TopK.load(path)
    assert back.entries(5) == top.entries(5)
    assert back.field == top.field and back.count == 10
    assert torch.equal(back.pixels[top.entries(5)[0].image], top.pixels[top.entries(5)[0].image])
    with pytest.raises(ValueError, match="not a saved top-k result"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        T.TopK.load(tmp_path / "other.pt")

    ds = ImageDataset(
        [str(i) for i in range(6)],
        lambda i: Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)),
        key="grey6",
    )
    first = T.top_k_patches(tiny_handle, "conv2", ds, k=2, cache_results=True)

    def no_pass(*args, **kwargs):
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(T, "top_k_steps", no_pass)
    again = T.top_k_patches(tiny_handle, "conv2", ds, k=2, cache_results=True)
    assert again.entries(0) == first.entries(0)
    # other weights -> another cache entry (the pass runs and hits the patched function)
    other = load_model(make_tiny(seed=1), device="cpu", input_size=32)
    with pytest.raises(AssertionError, match="cached result"):
        T.top_k_patches(other, "conv2", ds, k=2, cache_results=True)


def test_small_datasets_errors_and_cancel(tiny_handle) -> None:
    top = T.top_k_patches(tiny_handle, "conv1", list(random_pixels(3)), k=9)
    assert top.values.shape == (8, 3) and len(top.entries(0)) == 3
    with pytest.raises(ValueError, match="empty"):
        T.top_k_patches(tiny_handle, "conv1", [], k=9)
    with pytest.raises(IndexError, match="valid 0..7"):
        T.top_k_patches(tiny_handle, "conv1", list(random_pixels(3)), units=[8])
    with pytest.raises(ValueError, match="no spatial output"):
        T.top_k_patches(tiny_handle, "fc", list(random_pixels(3)))
    with pytest.raises(KeyError, match="nearest valid names"):
        T.top_k_patches(tiny_handle, "conv7", list(random_pixels(3)))
    with pytest.raises(ValueError, match="32x32 pixel-space"):
        T.top_k_patches(tiny_handle, "conv1", [torch.rand(3, 20, 20)])
    stop = threading.Event()
    steps = []
    for step in T.top_k_steps(
        tiny_handle, "conv1", list(random_pixels(40)), batch_size=4, stop_event=stop
    ):
        steps.append(step)
        assert step.image is None and step.loss is None
        if step.index == 2:
            stop.set()
    assert len(steps) == 3 and "topk" not in steps[-1].metrics
    assert steps[0].total == 10 and steps[-1].metrics["images"] == 12
    assert active_hook_count(tiny_handle.model) == 0


def test_nan_weights_stop_the_pass_with_a_message() -> None:
    net = make_tiny()
    with torch.no_grad():
        net.conv1.weight.fill_(float("nan"))
    h = load_model(net, device="cpu", input_size=32)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        T.top_k_patches(h, "conv2", list(random_pixels(4)))
    assert active_hook_count(net) == 0


def test_the_steps_return_the_result_and_a_cancelled_pass_returns_none(tiny_handle) -> None:
    """Run protocol: ``top = yield from top_k_steps(...)``; no result object in the metrics."""
    pixels = list(random_pixels(10, seed=3))
    run = Run(T.top_k_steps(tiny_handle, "conv2", pixels, k=3, batch_size=4))
    steps = list(run)
    assert run.finished and isinstance(run.result, T.TopK)
    assert [s.metrics for s in steps] == [{"images": 4}, {"images": 8}, {"images": 10}]
    assert run.result.entries(5) == T.top_k_patches(tiny_handle, "conv2", pixels, k=3).entries(5)
    stop = threading.Event()
    stop.set()
    assert finish(T.top_k_steps(tiny_handle, "conv2", pixels, stop_event=stop)) is None


def test_cached_steps_reuse_a_pass_from_memory_then_from_disk(
    tiny_handle, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path))
    ds = ImageDataset(
        [str(i) for i in range(6)],
        lambda i: Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)),
        key="grey6-cached",
    )
    T.RECENT.clear()
    run = Run(T.cached_top_k_steps(tiny_handle, "conv2", ds, k=2))
    assert len(list(run)) == 1 and run.result is not None  # one batch of 6: a pass ran
    first = run.result

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass ran although it was kept")

    monkeypatch.setattr(T, "top_k_steps", no_pass)
    run = Run(T.cached_top_k_steps(tiny_handle, "conv2", ds, k=2))
    assert list(run) == [] and run.result is first  # the same object: from memory
    T.RECENT.clear()  # a new kernel: the disk entry
    again = finish(T.cached_top_k_steps(tiny_handle, "conv2", ds, k=2))
    assert again is not first and again.entries(3) == first.entries(3)
    with pytest.raises(AssertionError, match="was kept"):  # use_cache=False: always a pass
        finish(T.cached_top_k_steps(tiny_handle, "conv2", ds, k=2, use_cache=False))
    with pytest.raises(TypeError, match="needs a dataset with a key"):
        finish(T.cached_top_k_steps(tiny_handle, "conv2", list(random_pixels(2)), k=2))
    T.RECENT.clear()
