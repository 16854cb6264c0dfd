"""core.timeline: snapshots from any loop (bounded), per-filter normalization, checkpoint views."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core.timeline import Timeline, checkpoint_view, first_layer_filters


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_snapshot_from_a_users_own_loop_copies_weights_to_the_cpu() -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tl = Timeline()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for step in range(3):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tl.snapshot(net, step, loss=loss.item())
        tl.record(step, loss=loss.item())
    assert [s.step for s in tl] == [0, 1, 2] and tl.version == 6
    w0, w2 = tl[0].state_dict["0.weight"], tl[2].state_dict["0.weight"]
    assert not torch.equal(w0, w2)  # copies, not views of the live weights
    assert torch.equal(w2, net[0].weight.detach())
    assert [p[0] for p in tl.series("loss")] == [0, 1, 2]
    restored = tl.module_at(0, net)
    assert torch.equal(restored[0].weight, w0) and not restored.training
    assert net.training  # the user's module is only read


def test_timeline_is_bounded_and_keeps_the_first_and_latest() -> None:
    net = _net()
    tl = Timeline(max_snapshots=4)
    for step in range(10):
        tl.snapshot(net, step)
    steps = [s.step for s in tl]
    assert len(steps) <= 4 and steps[0] == 0 and steps[-1] == 9
    assert steps == sorted(steps)
    one = sum(t.numel() * 4 for t in net.state_dict().values())
    small = Timeline(max_bytes=int(one * 2.5))
    for step in range(6):
        small.snapshot(net, step)
    assert sum(s.nbytes for s in small) <= one * 2.5 and small[-1].step == 5
    with pytest.raises(ValueError):
        Timeline(max_snapshots=1)


def test_snapshots_from_another_thread() -> None:
    net, tl = _net(), Timeline()
    worker = threading.Thread(target=lambda: [tl.snapshot(net, i) for i in range(20)])
    worker.start()
    while worker.is_alive():
        _ = [s.step for s in tl]
    worker.join()
    assert len(tl) == 20


def test_first_layer_filters_are_normalized_per_filter() -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight[0] = 5.0  # a constant filter
        net[0].weight[1] *= 100  # a large one: its own range, not the others'
    f = first_layer_filters(net)
    assert f.shape == (4, 1, 3, 3)
    assert torch.all(f[0] == 0.5)
    for i in (1, 2, 3):
        assert float(f[i].min()) == 0.0 and float(f[i].max()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        first_layer_filters(nn.Linear(3, 3))


def test_checkpoint_view_shows_filters_am_and_top9_of_the_snapshot() -> None:
    template = load_model("zf_mnist", weights=None, device="cpu")
    tl = Timeline()
    tl.snapshot(template, 0)
    changed = load_model("zf_mnist", weights=None, seed=5, device="cpu")
    tl.snapshot(changed, 1)
    data = torch.rand(20, 1, 28, 28)
    v0 = checkpoint_view(tl, 0, template, "features.conv2", [1, 4], data, am_steps=8)
    v1 = checkpoint_view(tl, 1, template, "features.conv2", [1, 4], data, am_steps=8)
    assert v0.filters.shape == (16, 1, 5, 5) and not torch.equal(v0.filters, v1.filters)
    assert torch.equal(v1.filters, first_layer_filters(changed))
    assert v0.am is not None and v0.am.shape == (2, 1, 28, 28)
    assert len(v0.patches) == 2 and len(v0.patches[0]) == 9 and v0.patches[0][0].shape[0] == 1
    assert v0.values[0] == sorted(v0.values[0], reverse=True)
    with pytest.raises(IndexError):
        checkpoint_view(tl, 0, template, "features.conv2", [99])
    only = checkpoint_view(tl, -1, template)
    assert only.am is None and not only.patches
