"""core.training: the run protocol, exact stop/resume, the zf_mnist recipe, label randomization."""

from __future__ import annotations

import threading

import pytest
import torch

from cnnvis_widgets import load_model
from cnnvis_widgets.core import training as T
from cnnvis_widgets.core.timeline import Timeline
from cnnvis_widgets.models import zf_mnist as Z


@pytest.fixture(scope="module")
def small():
    """100 training digits (10 per class), 200 test digits: cheap runs."""
    return T.digits_data(train_per_class=10, test_per_class=20)


@pytest.fixture(scope="module")
def twin():
    return load_model("zf_mnist", weights=None, device="cpu")


@pytest.fixture(scope="module")
def memorized(twin, small):
    """The same network trained on permuted labels until it has memorized them."""
    s = T.TrainSettings(epochs=25, lr=3e-3, lr_decay=1.0, permute_labels=True)
    return T.finish(T.train_steps(twin, small, s))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_steps_report_loss_and_accuracy_and_return_the_result(twin, small) -> None:
    before = {k: v.clone() for k, v in twin.model.state_dict().items()}
    run = T.Run(T.train_steps(twin, small, T.TrainSettings(epochs=2)))
    steps = list(run)
    res = run.result
    assert run.finished and res is not None and res.finished
    assert len(steps) == 2 * 2 and steps[-1].total == 4  # 100 digits, batches of 50
    assert [s.metrics["epoch"] for s in steps] == [1, 1, 2, 2]
    assert all(s.loss is not None and s.loss > 0 for s in steps)
    assert "test_accuracy" in steps[1].metrics and "test_accuracy" not in steps[0].metrics
    assert [h["epoch"] for h in res.history] == [0, 1, 2] and res.step == 4
    assert res.history[2]["train_loss"] < steps[0].loss  # it learns
    # the user's network is untouched (a copy was trained)
    assert all(torch.equal(v, before[k]) for k, v in twin.model.state_dict().items())
    assert not _same(res.model, twin.model)


def test_stop_and_resume_give_the_weights_of_an_uninterrupted_run(twin, small) -> None:
    s = T.TrainSettings(epochs=2, batch_size=20)
    straight = T.finish(T.train_steps(twin, small, s))
    stop = threading.Event()
    gen = T.train_steps(twin, small, s, stop_event=stop)
    run = T.Run(gen)
    for i, _ in enumerate(run):
        if i == 6:  # mid-way through epoch 2 (5 batches an epoch)
            stop.set()
    part = run.result
    assert part is not None and not part.finished and part.epoch == 1 and part.batch == 2
    assert not _same(part.model, straight.model)
    done = T.finish(T.train_steps(twin, small, s, resume=part))
    assert done.finished and done.step == straight.step == 10
    assert _same(done.model, straight.model)
    assert [h["test_accuracy"] for h in done.history] == [
        h["test_accuracy"] for h in straight.history
    ]


def test_train_steps_repeats_the_zf_mnist_checkpoints_exactly(zf_mnist) -> None:
    """From the random twin, the embedded recipe's settings give epoch 1's bytes."""
    t = Z.TRAINING
    twin = load_model(zf_mnist, weights=None, seed=t.seed)
    s = T.TrainSettings(epochs=1, batch_size=t.batch_size, lr=t.lr, lr_decay=t.lr_decay)
    tl = Timeline()
    res = T.finish(T.train_steps(twin, T.digits_data(t.test_per_class, t.seed), s, timeline=tl))
    ck = Z.checkpoints()[1]
    assert all(torch.equal(v, ck["state_dict"][k]) for k, v in res.model.state_dict().items())
    assert res.history[1]["test_accuracy"] == pytest.approx(ck["test_accuracy"])
    assert [snap.metrics["epoch"] for snap in tl] == [0, 1]  # before training, after epoch 1


def test_randomized_labels_are_memorized_and_test_is_at_chance(memorized, small) -> None:
    last = memorized.history[-1]
    assert last["train_accuracy"] >= 0.9  # it memorized the permuted labels
    assert last["test_accuracy"] <= 0.25  # and learned nothing about digits (chance 0.1)
    assert not torch.equal(memorized.labels, small.y)
    assert sorted(memorized.labels.tolist()) == sorted(small.y.tolist())  # a permutation


def test_randomized_network_maps_correlate_less_than_a_normal_ones(
    zf_mnist, memorized, twin, small
) -> None:
    """Adebayo et al. 2018: saliency of the memorizing network differs from the normal one's
    (rank correlation low), unlike the maps of the same network two epochs earlier."""
    rand = T.handle_of(twin, memorized.model)
    earlier = load_model("zf_mnist", weights="epoch:2", device="cpu")
    x = small.x_test[::20]
    c = T.compare_randomized(zf_mnist, rand, x, method="saliency")
    ref = T.compare_randomized(zf_mnist, earlier, x, method="saliency")
    assert len(c.correlations) == len(x) == 10 and c.normal.shape == c.randomized.shape
    assert all(-1 <= v <= 1 for v in c.correlations + c.signed)
    assert c.mean < 0.5 and ref.mean > c.mean + 0.2, (c.mean, ref.mean)


def test_bad_settings_and_inputs_are_refused(twin, small) -> None:
    with pytest.raises(ValueError, match="epochs"):
        T.TrainSettings().update(epochs=0)
    with pytest.raises(TypeError, match="unknown setting"):
        T.TrainSettings().update(epoch=3)
    with pytest.raises(TypeError, match="ModelHandle or an nn.Module"):
        T.finish(T.train_steps("zf_mnist", small))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        T.TrainData(small.x, small.y[:3], small.x_test, small.y_test)
