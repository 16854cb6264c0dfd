"""One model identity for every cache: the content fingerprint of the weights and the spec.

Two checkpoints of one architecture get their own dissection, top-k, decoder and atlas entries;
the same handle after a weight change recomputes; an unchanged model hits its entries. On the
old code the dissection cache keyed on ``handle.describe()`` (name, weights label, spec) and the
second checkpoint got the first one's result.
"""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import atlas as AT
from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core import upconv
from cnnvis_widgets.core.dissection import dissect
from cnnvis_widgets.data.concepts import probe_set
from cnnvis_widgets.data.datasets import ImageDataset
from tests.conftest import make_tiny


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))


def counted(seed: int):
    """A handle on a tiny net and a list that grows by one per forward pass of it."""
    net = make_tiny(seed)
    passes: list[int] = []
    net.conv1.register_forward_hook(lambda m, i, o: passes.append(1))
    return load_model(net, device="cpu", input_size=32), passes


def test_fingerprint_is_content_and_follows_every_kind_of_weight_change() -> None:
    h, _ = counted(0)
    f0 = h.fingerprint()
    assert h.fingerprint() == f0 == T.model_fingerprint(h)  # the old name is an alias
    assert load_model(make_tiny(0), device="cpu", input_size=32).fingerprint() == f0
    assert counted(1)[0].fingerprint() != f0  # same architecture, other weights
    assert load_model(make_tiny(0), device="cpu", input_size=32, mean=(0.4,) * 3).fingerprint() != (
        f0
    )
    seen = {f0}

    def changed() -> None:
        f = h.fingerprint()
        assert f not in seen
        seen.add(f)

    net = h.model
    with torch.no_grad():
        net.fc.bias.add_(0.01)  # in-place edit
    changed()
    net.load_state_dict(make_tiny(5).state_dict())
    changed()
    for opt in (
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.optim.Adam(net.parameters(), lr=0.1, fused=True),  # does not bump _version
    ):
        net(torch.rand(2, 3, 32, 32)).sum().backward()
        opt.step()
        opt.zero_grad()
        changed()
    net.conv2.weight.data[0, 0, 0, 0] += 0.5  # through .data: no version bump either
    changed()


def _dataset() -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 32, 32, generator=g) for _ in range(6)]
    from cnnvis_widgets.core.imaging import to_pil

    return ImageDataset([f"i{i}" for i in range(6)], lambda i: to_pil(imgs[i]), key="six")


def test_dissection_cache_is_per_weights() -> None:
    probe = probe_set(8, size=32, seed=1)
    a, pa = counted(0)
    b, pb = counted(1)
    ra = dissect(a, ["relu2"], probe, batch_size=8, cache=True)
    n = len(pa)
    assert n > 0
    dissect(a, ["relu2"], probe, batch_size=8, cache=True)
    assert len(pa) == n  # unchanged model: a hit
    rb = dissect(b, ["relu2"], probe, batch_size=8, cache=True)
    assert len(pb) > 0  # another checkpoint of the architecture: computed, not a's result
    assert not (ra["relu2"].thresholds == rb["relu2"].thresholds).all()
    with torch.no_grad():
        a.model.conv2.weight.mul_(-1.0)
    dissect(a, ["relu2"], probe, batch_size=8, cache=True)
    assert len(pa) > n  # the same handle after a weight change: recomputed


def test_topk_cache_is_per_weights() -> None:
    ds = _dataset()
    a, pa = counted(0)
    b, pb = counted(1)
    T.top_k_patches(a, "relu2", ds, k=2, cache_results=True)
    n = len(pa)
    T.top_k_patches(a, "relu2", ds, k=2, cache_results=True)
    assert len(pa) == n
    T.top_k_patches(b, "relu2", ds, k=2, cache_results=True)
    assert len(pb) > 0
    a.model.load_state_dict(make_tiny(7).state_dict())
    T.top_k_patches(a, "relu2", ds, k=2, cache_results=True)
    assert len(pa) > n


def test_decoder_cache_is_per_weights() -> None:
    a, _ = counted(0)
    b, _ = counted(1)
    pixels = torch.rand(4, 3, 32, 32)
    upconv.train_decoder(a, "conv2", pixels, steps=2, batch_size=2, size=32)
    assert upconv.load_decoder(a, "conv2", size=32) is not None
    assert upconv.load_decoder(b, "conv2", size=32) is None  # not b's decoder
    with torch.no_grad():
        a.model.conv1.weight.add_(0.1)
    assert upconv.load_decoder(a, "conv2", size=32) is None  # trained on other weights


def test_atlas_grid_cache_is_per_weights() -> None:
    a, pa = counted(0)
    b, pb = counted(1)
    kw = dict(steps=2, size=32, batch=16, units=[0, 1])
    AT.layer_grid(a, "conv2", **kw)
    n = len(pa)
    AT.layer_grid(a, "conv2", **kw)
    assert len(pa) == n
    AT.layer_grid(b, "conv2", **kw)
    assert len(pb) > 0
    with torch.no_grad():
        a.model.conv2.bias.add_(1.0)
    AT.layer_grid(a, "conv2", **kw)
    assert len(pa) > n
