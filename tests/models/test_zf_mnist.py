"""The embedded zf_mnist network: trained once per session (the ``zf_mnist`` fixture, cached per
epoch), deterministic, accurate, with filters that change across epochs."""

from __future__ import annotations

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.cache import cache_key
from cnnvis_widgets.data.digits import train_test_split
from cnnvis_widgets.models import zf_mnist as Z


def _accuracy(handle, digits) -> float:
    x, y = digits.tensors()
    with torch.no_grad():
        pred = handle.logits(handle.normalize(x)).argmax(1)
    return float((pred == y).float().mean())


def test_trained_network_reaches_95_percent_on_held_out_digits(zf_mnist) -> None:
    _, test = train_test_split(test_per_class=Z.TRAINING.test_per_class, seed=Z.TRAINING.seed)
    acc = _accuracy(zf_mnist, test)
    assert acc >= 0.95, acc
    assert acc == pytest.approx(Z.history()[-1]["test_accuracy"])
    assert zf_mnist.in_channels == 1 and zf_mnist.input_size == (28, 28)
    assert zf_mnist.class_names == [str(i) for i in range(10)]
    assert "epoch 4/4" in zf_mnist.weights
    # real max-pooling (DeconvNet's switches), layers by readable names
    assert isinstance(zf_mnist.module("features.pool1"), torch.nn.MaxPool2d)
    assert zf_mnist.layer("features.conv1").channels == 16


def test_history_learns_from_chance(zf_mnist) -> None:
    h = Z.history()
    assert [c["epoch"] for c in h] == list(range(Z.TRAINING.epochs + 1))
    assert h[0]["test_accuracy"] < 0.3  # the initialisation is at chance
    losses = [c["train_loss"] for c in h[1:]]
    assert losses == sorted(losses, reverse=True)  # the loss falls every epoch


def test_first_layer_filters_change_across_epochs(zf_mnist) -> None:
    w = [c["state_dict"]["features.conv1.weight"] for c in Z.checkpoints()]
    changes = [float((b - a).norm() / a.norm()) for a, b in zip(w, w[1:])]
    assert min(changes) > 0.005, changes  # every epoch moves them (less as the lr decays)
    assert float((w[-1] - w[0]).norm() / w[0].norm()) > 0.1  # and training moved them a lot
    # epoch checkpoints load by name; the last one is the default
    e2 = load_model("zf_mnist", weights="epoch:2", device="cpu")
    assert torch.equal(e2.model.features.conv1.weight, w[2])
    assert torch.equal(zf_mnist.model.features.conv1.weight, w[-1])
    assert e2.fingerprint() != zf_mnist.fingerprint()
    with pytest.raises(ValueError, match="epochs 0..4"):
        load_model("zf_mnist", weights="epoch:9", device="cpu")
    with pytest.raises(ValueError, match="epoch:<n>"):
        load_model("zf_mnist", weights="epoch:last", device="cpu")


def test_random_twin_is_the_seeded_initialisation(zf_mnist) -> None:
    twin = load_model("zf_mnist", weights=None, device="cpu")
    init = Z.checkpoints()[0]["state_dict"]
    assert all(torch.equal(v, init[k]) for k, v in twin.model.state_dict().items())
    other = load_model(zf_mnist, weights=None, seed=1)
    assert other.name == "zf_mnist" and other.class_names == zf_mnist.class_names
    assert not torch.equal(other.model.fc.weight, init["fc.weight"])


def test_training_is_deterministic_and_resumes_bit_for_bit(zf_mnist, monkeypatch) -> None:
    """Drop the cached last epoch and forget the process memo: the epoch is retrained from the
    cached epoch before it (weights and Adam state) and must give the same bytes."""
    t = Z.TRAINING
    key = cache_key("zf_mnist", **Z.cache_key_parts(t))
    before = [c["state_dict"] for c in Z.checkpoints()]
    path = Z._entry(key, t.epochs)
    assert path is not None and path.is_file()
    path.unlink()
    monkeypatch.setattr(Z, "_memo", {})
    trained: list[int] = []
    again = Z.checkpoints(t, progress=lambda e, ck: trained.append(e))
    assert trained == [t.epochs]  # only the missing epoch ran
    assert path.is_file()
    last = again[-1]["state_dict"]
    assert all(torch.equal(v, before[-1][k]) for k, v in last.items())


def test_cache_key_is_content_not_a_name() -> None:
    base = Z.cache_key_parts()
    assert base["train"].startswith("mnist_5k-") and "class ZFNet" in base["code"]
    changed = Z.cache_key_parts(Z.ZFTraining(lr=1e-3))
    assert cache_key("zf_mnist", **changed) != cache_key("zf_mnist", **base)
