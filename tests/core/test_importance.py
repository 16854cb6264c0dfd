"""core.importance: ablation (shared vs plain passes agree), ranking, pruning, model untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import importance
from cnnvis_widgets.core.blocks.hooks import active_hook_count
from tests.conftest import make_tiny


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(20, 3, 32, 32, generator=g), torch.randint(0, 5, (20,), generator=g)


@pytest.fixture(scope="module")
def handle():
    return load_model(make_tiny(), device="cpu", input_size=32)


class Residual(nn.Module):
    """conv -> relu -> (x + conv(x)) -> pool -> linear: a skip connection from below conv2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = x + self.conv2(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("how", ["zero", "mean"])
@pytest.mark.parametrize("layer", ["relu1", "conv2", "relu2", "fc"])
def test_shared_and_plain_paths_give_the_same_numbers(handle, data, how, layer):
    units = [0, 3, [1, 2], [0, 1, 2, 3]]
    shared = importance.ablate(handle, layer, units, data, how, batch=8)
    plain = importance.ablate(handle, layer, units, data, how, batch=8, share=False)
    assert shared.path == "shared" and plain.path == "plain"
    assert shared.baseline_accuracy == plain.baseline_accuracy
    torch.testing.assert_close(shared.accuracy, plain.accuracy)
    torch.testing.assert_close(shared.class_prob, plain.class_prob, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(shared.prob_change, plain.prob_change, atol=1e-5, rtol=1e-4)
    assert shared.prob_change.abs().sum() > 0  # removing units changed something


@pytest.mark.parametrize("copies", [40, 10, 4])  # sub-batches of 4, of 1, removals in chunks
def test_sub_batches_and_chunks_of_removals_give_the_same_numbers(
    handle, data, copies, monkeypatch
):
    plain = importance.ablate(handle, "relu1", "all", data, "mean", batch=8, share=False)
    monkeypatch.setattr(importance, "MAX_EXPANDED_VALUES", copies * 8 * 32 * 32)  # relu1: 8x32x32
    shared = importance.ablate(handle, "relu1", "all", data, "mean", batch=8)
    assert shared.path == "shared"
    torch.testing.assert_close(shared.accuracy, plain.accuracy)
    torch.testing.assert_close(shared.class_prob, plain.class_prob, atol=1e-5, rtol=1e-4)


def test_skip_connection_from_below_falls_back_to_plain_passes(data):
    torch.manual_seed(0)
    h = load_model(Residual(), device="cpu", input_size=32)
    pixels = data[0]
    labels = data[1] % 4
    res = importance.ablate(h, "conv2", "all", (pixels, labels), batch=8)
    ref = importance.ablate(h, "conv2", "all", (pixels, labels), batch=8, share=False)
    assert res.path == "plain"
    torch.testing.assert_close(res.class_prob, ref.class_prob)
    # and the shared path where it is allowed (below the skip) still works
    assert importance.ablate(h, "act", [0, 1], (pixels, labels), batch=8).path == "shared"
    assert importance.ablate(h, "act", [0], (pixels, labels), batch=8).path == "plain"  # alone


def test_the_numbers_match_a_hand_computed_removal(handle, data):
    pixels, labels = data
    res = importance.ablate(handle, "relu2", [5], data, batch=7)
    net = make_tiny()
    with torch.no_grad():
        x = handle.normalize(pixels)
        base = torch.softmax(net(x), -1)
        f = net.relu2(net.conv2(net.pool(net.relu1(net.conv1(x)))))
        f[:, 5] = 0
        cut = torch.softmax(net.fc(net.gap(f).flatten(1)), -1)
    assert res.baseline_accuracy == pytest.approx(float((base.argmax(1) == labels).float().mean()))
    assert float(res.accuracy[0]) == pytest.approx(float((cut.argmax(1) == labels).float().mean()))
    torch.testing.assert_close(res.prob_change[0], (cut - base).mean(0), atol=1e-5, rtol=1e-4)
    k = int(labels[0])
    own = labels == k
    expect = (cut[own, k] - base[own, k]).mean()
    assert float(res.class_prob_change[0, k]) == pytest.approx(float(expect), abs=1e-5)


class Routed(nn.Module):
    """Unit k of ``feat`` is the only input of class k's logit."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.feat = nn.ReLU()
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1))
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.eye(3) * 4)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feat(self.conv(x)).mean((2, 3)))


def test_removing_the_unit_a_class_depends_on_hurts_that_class():
    h = load_model(Routed(), device="cpu", input_size=4, mean=(0.0,), std=(1.0,))
    pixels = torch.rand(6, 1, 4, 4) * 0.5 + 0.5
    res = importance.ablate(h, "feat", "all", (pixels, None))
    assert res.labels_from == "model"  # no labels: the intact network's predictions
    # the network always says class 2 (largest weight); removing unit 2 changes every answer
    assert res.baseline_accuracy == 1.0
    assert res.accuracy.tolist() == [1.0, 1.0, 0.0]
    assert res.ranking()[0] == 2
    assert res.hurts_most(2)[0][0] == h.class_name(2)
    assert res.worth()[0].units == (2,) and res.worth()[0].accuracy_drop == 1.0


def test_mean_ablation_of_a_constant_unit_changes_nothing():
    net = Routed()
    with torch.no_grad():
        net.conv.weight[1] = 0
        net.conv.bias[1] = 0.7  # unit 1 is 0.7 everywhere
    h = load_model(net, device="cpu", input_size=4, mean=(0.0,), std=(1.0,))
    pixels = torch.rand(6, 1, 4, 4)
    mean = importance.ablate(h, "feat", [1], (pixels, None), "mean")
    zero = importance.ablate(h, "feat", [1], (pixels, None), "zero")
    assert mean.prob_change.abs().max() < 1e-6
    assert zero.prob_change.abs().max() > 1e-3


def test_pruning_least_important_keeps_more_than_most_important(handle, data):
    p = importance.pruning_exercise(handle, "relu2", data, ks=(2, 4), repeats=2, batch=10)
    assert len(p.random) == 2 and len(p.random_mean) == 2
    assert all(lo >= hi for lo, hi in zip(p.least, p.most, strict=True))
    assert sorted(p.order) == list(range(16))
    assert p.to_dict()["ks"] == [2, 4]


def test_the_users_model_is_untouched(data):
    net = make_tiny()
    net.train()
    for p in net.conv2.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    h = load_model(net, device="cpu", input_size=32)
    net.train()
    importance.ablate(h, "conv2", "all", data, "mean", batch=8)
    importance.ablate(h, "conv2", [1], data, share=False)
    with pytest.raises(IndexError):
        importance.ablate(h, "conv2", [99], data)
    assert net.training and all(m.training for m in net.modules())
    assert active_hook_count(h) == 0 and active_hook_count(net) == 0
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, False, True, True]
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_input_is_refused_clearly(handle, data):
    with pytest.raises(ValueError, match="how must be"):
        importance.ablate(handle, "conv2", [0], data, "ones")
    with pytest.raises(IndexError, match="out of range|valid"):
        importance.ablate(handle, "conv2", [16], data)
    with pytest.raises(ValueError, match="empty"):
        importance.ablate(handle, "conv2", [[]], data)
    with pytest.raises(ValueError, match="labels"):
        importance.ablate(handle, "conv2", [0], (data[0], data[1][:3]))
    with pytest.raises(ValueError, match="class indices"):
        importance.ablate(handle, "conv2", [0], (data[0], data[1] + 10))
    with pytest.raises(ValueError, match="at most"):
        importance.pruning_exercise(handle, "conv2", data, ks=(17,))


@pytest.fixture(scope="module")
def digits():
    from cnnvis_widgets.data.digits import load_digits, train_test_split

    train, test = train_test_split(load_digits())
    return train.subset(list(range(0, len(train), 16))), test.subset(list(range(0, len(test), 4)))


def test_finding_removing_the_most_important_units_costs_more_than_random(digits):
    """Morcos et al. 2018 / the pruning exercise, on zf_mnist: units ranked on 250 training
    digits; removing the top-ranked ones together costs 250 test digits more accuracy than
    removing as many random ones (mean of 4 draws), and more than the least important ones."""
    rank_on, test = digits
    h = load_model("zf_mnist", device="cpu")
    layer = "features.relu2"
    order = [w.units[0] for w in importance.rank_units(h, layer, rank_on, batch=250)]
    p = importance.pruning_exercise(
        h, layer, test, ks=(8, 12), ranking=order, repeats=4, batch=250, seed=0
    )
    assert p.baseline_accuracy > 0.95
    for most, rand, least in zip(p.most, p.random_mean, p.least, strict=True):
        assert most < rand - 0.01 and most < least, p.to_dict()
