"""The optimization loop itself (core/optimize.py): steps, live settings, stop, NaN, seeds."""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass

import pytest
import torch

from cnnvis_widgets.core.blocks import readback
from cnnvis_widgets.core.blocks.optimize import _normalized_sgd_step
from cnnvis_widgets.core.blocks.readback import LazyLoss, LossLog
from cnnvis_widgets.core.optimize import (
    NonFiniteLossError,
    Step,
    compile_setting,
    optimize_steps,
    read_losses,
)
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


def nan_at_two(img: torch.Tensor, step: int):
    loss = (img - TARGET).pow(2).mean()
    return (loss * float("nan") if step == 2 else loss), {}


def test_a_nan_loss_stops_with_the_step_and_the_learning_rate() -> None:
    """Read at every step (``every=1``): the error comes right after the step it names."""
    gen = optimize_steps(param(), nan_at_two, Settings(steps=10, lr=0.05), losses=LossLog(1))
    assert [s.index for s in (next(gen), next(gen))] == [0, 1]
    with pytest.raises(
        NonFiniteLossError, match=r"nan at step 2; lower the learning rate \(0.05\)"
    ):
        next(gen)


@pytest.mark.parametrize("every", [4, 16])
def test_a_nan_loss_read_in_batches_names_its_step_within_every_steps(every) -> None:
    seen = []
    with pytest.raises(NonFiniteLossError, match=r"nan at step 2; lower the learning rate"):
        for s in optimize_steps(
            param(), nan_at_two, Settings(steps=10, lr=0.05), losses=LossLog(every)
        ):
            seen.append(s.index)
    # raised at the first read after step 2: step every - 1, or the end of the run (10 steps)
    assert seen == (list(range(every - 1)) if every <= 10 else list(range(10)))


def test_reading_a_loss_reads_the_pending_ones_and_the_loop_checks_them() -> None:
    gen = optimize_steps(param(), nan_at_two, Settings(steps=10, lr=0.05), losses=LossLog(100))
    steps = [next(gen) for _ in range(3)]
    assert math.isnan(steps[2].loss) and steps[0].loss > 0  # a consumer read: one transfer
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        next(gen)


def test_losses_are_read_at_most_once_per_every_steps(monkeypatch) -> None:
    reads = []
    real = readback.host_read
    monkeypatch.setattr(readback, "host_read", lambda t: reads.append(t.numel()) or real(t))
    log = LossLog(8)
    steps = list(optimize_steps(param(), to_target, Settings(steps=30), losses=log))
    assert reads == [8, 8, 8, 6]  # every 8 steps, then the rest at the end: 4 reads, 30 losses
    assert [s.loss for s in steps] == log.values and len(reads) == 4  # no read per step after


def reference_loop(p: ImageParam, loss_fn, settings: Settings, optimizer: str):
    """The loop as it was before the lazy losses: ``float(loss)`` and its check every step."""
    params = p.parameters()
    opt = torch.optim.Adam(params, lr=settings.lr, fused=True) if optimizer == "adam" else None
    out = []
    for i in range(settings.steps):
        img = p.image()
        loss, _ = loss_fn(img, i)
        value = float(loss.detach())
        assert math.isfinite(value)
        *grads, img_grad = torch.autograd.grad(loss, [*params, img], allow_unused=True)
        for t, g in zip(params, grads):
            t.grad = g
        if opt is not None:
            opt.step()
        else:
            _normalized_sgd_step(p, settings.lr)
        out.append((value, img.detach()))
    return out


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_results_are_bit_identical_to_reading_every_step(optimizer) -> None:
    ref = reference_loop(param(3), to_target, Settings(steps=12), optimizer)
    got = list(optimize_steps(param(3), to_target, Settings(steps=12), optimizer=optimizer))
    assert [s.loss for s in got] == [v for v, _ in ref]
    assert all(torch.equal(s.image, im) for s, (_, im) in zip(got, ref))


def test_step_loss_is_stored_as_given_and_read_as_a_float() -> None:
    log = LossLog(100)
    s = Step(0, log.add(torch.tensor(2.5)), None)
    t = Step(1, torch.tensor([1.5]), None)
    assert log.pending == 1 and isinstance(s.loss_ref, LazyLoss)
    assert copy.copy(s).loss_ref is s.loss_ref  # passed on unread
    assert read_losses([s.loss_ref, t.loss_ref, None, 0.5]) == [2.5, 1.5, None, 0.5]
    assert s.loss == 2.5 and t.loss == 1.5 and log.pending == 0
    s.loss = -1.0  # what a widget does
    assert s.loss == -1.0 and log.values == [2.5]


def test_compile_setting() -> None:
    assert compile_setting(False) is None and compile_setting(True) == "default"
    assert compile_setting("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        compile_setting("fast")


def test_the_compiled_step_gives_the_same_images_within_tolerance() -> None:
    eager = list(optimize_steps(param(4), to_target, Settings(steps=8)))
    try:
        compiled = list(optimize_steps(param(4), to_target, Settings(steps=8), compile=True))
    except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for inductor here
        if "torch._" not in type(exc).__module__:
            raise
        pytest.skip(f"torch.compile does not work on this machine: {type(exc).__name__}")
    for a, b in zip(eager, compiled):
        assert torch.allclose(a.image, b.image, atol=1e-5)
        assert a.loss == pytest.approx(b.loss, rel=1e-5)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_loop_reads_the_loss_once_per_every_steps_with_the_same_results(monkeypatch):
    reads = []
    real = readback.host_read
    monkeypatch.setattr(readback, "host_read", lambda t: reads.append(t.numel()) or real(t))

    def cuda_param(seed: int) -> ImageParam:
        g = torch.Generator().manual_seed(seed)
        return ImageParam((2, 3, 16, 16), fft=False, decorrelate=False, generator=g, device="cuda")

    every = list(optimize_steps(cuda_param(5), to_target, Settings(steps=20), losses=LossLog(1)))
    assert len(reads) == 20
    reads.clear()
    log = LossLog(8)
    lazy = list(optimize_steps(cuda_param(5), to_target, Settings(steps=20), losses=log))
    assert reads == [8, 8, 4] and lazy[-1].image.is_cuda
    assert [s.loss for s in lazy] == [s.loss for s in every]
    assert torch.equal(lazy[-1].image, every[-1].image)
