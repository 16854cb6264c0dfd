"""The optimization loop itself (core/optimize.py): steps, live settings, stop, NaN, seeds."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch

from cnnvis_widgets.core.optimize import NonFiniteLossError, Step, optimize_steps
from cnnvis_widgets.core.params import ImageParam


@dataclass
class Settings:
    steps: int = 6
    lr: float = 0.05


TARGET = 0.8


def to_target(img: torch.Tensor, step: int):
    """Squared distance to a grey of TARGET; the metrics carry the step it was called for."""
    return (img - TARGET).pow(2).mean(), {"called_at": step}


def param(seed: int = 0) -> ImageParam:
    g = torch.Generator().manual_seed(seed)
    return ImageParam((1, 3, 8, 8), fft=False, decorrelate=False, generator=g)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_yields_one_step_per_update_and_lowers_the_loss(optimizer) -> None:
    steps = list(optimize_steps(param(), to_target, Settings(steps=30), optimizer=optimizer))
    assert [s.index for s in steps] == list(range(30))
    assert all(isinstance(s, Step) and s.total == 30 for s in steps)
    assert [s.metrics["called_at"] for s in steps] == list(range(30))
    assert steps[-1].loss < 0.5 * steps[0].loss
    assert steps[0].image.shape == (1, 3, 8, 8) and not steps[0].image.requires_grad


def test_settings_are_read_at_every_step() -> None:
    s = Settings(steps=10, lr=0.05)
    p = param()
    lrs: list[tuple[int, int, float]] = []

    def schedule(i: int, total: int, base: float) -> float:
        lrs.append((i, total, base))
        return base

    seen = []
    for step in optimize_steps(p, to_target, s, optimizer="sgd", lr_schedule=schedule):
        seen.append(step.index)
        if step.index == 1:
            s.lr = 0.0  # from the next step on, nothing moves
            before = p.image().detach().clone()
        if step.index == 3:
            s.steps = 5  # shortened mid-run
    assert seen == [0, 1, 2, 3, 4]
    assert torch.equal(p.image().detach(), before)
    assert lrs[1] == (1, 10, 0.05) and lrs[2] == (2, 10, 0.0) and lrs[4] == (4, 5, 0.0)


def test_stop_event_ends_between_steps() -> None:
    stop = threading.Event()
    seen = []
    for step in optimize_steps(param(), to_target, Settings(steps=50), stop_event=stop):
        seen.append(step.index)
        if step.index == 2:
            stop.set()
    assert seen == [0, 1, 2]


def test_a_nan_loss_stops_with_the_step_and_the_learning_rate() -> None:
    def nan_at_two(img: torch.Tensor, step: int):
        loss = (img - TARGET).pow(2).mean()
        return (loss * float("nan") if step == 2 else loss), {}

    gen = optimize_steps(param(), nan_at_two, Settings(steps=10, lr=0.05))
    assert [s.index for s in (next(gen), next(gen))] == [0, 1]
    with pytest.raises(
        NonFiniteLossError, match=r"nan at step 2; lower the learning rate \(0.05\)"
    ):
        next(gen)


def test_the_same_seed_repeats_and_another_differs() -> None:
    def final(seed: int) -> torch.Tensor:
        *_, last = optimize_steps(param(seed), to_target, Settings(steps=5))
        return last.image

    assert torch.equal(final(1), final(1))
    assert not torch.equal(final(1), final(2))


def test_gradients_reach_only_the_image_and_post_step_sees_the_image_gradient() -> None:
    weight = torch.nn.Parameter(torch.tensor(2.0))  # something else the loss depends on
    grads = []

    def loss_fn(img: torch.Tensor, step: int):
        return (weight * img - TARGET).pow(2).mean(), {}

    def post(p: ImageParam, i: int, img: torch.Tensor) -> None:
        grads.append(img.grad)

    list(optimize_steps(param(), loss_fn, Settings(steps=3), post_step=post))
    assert weight.grad is None
    assert len(grads) == 3 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_an_unknown_optimizer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        next(optimize_steps(param(), to_target, Settings(), optimizer="rmsprop"))
