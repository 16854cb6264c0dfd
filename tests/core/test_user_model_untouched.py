"""A run never changes the user's model: mode, BatchNorm statistics, requires_grad, .grad, hooks.

The model here is in train mode, with BatchNorm and Dropout, a frozen first layer and a hook of
its own: every method runs on it and everything is compared, bit for bit, with a snapshot taken
before. On the old code each of these failed (load_model put the model in eval mode,
``handle.frozen()`` flipped every flag for the duration of a run and wrote back the flags saved
at its start).
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core import adversarial as adv
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import inversion as inv
from cnnvis_widgets.core import topk as T
from cnnvis_widgets.core.dissection import dissect


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU(inplace=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.drop(self.gap(x).flatten(1)))


def make_user_model() -> tuple[BNNet, list[int]]:
    torch.manual_seed(0)
    net = BNNet()
    with torch.no_grad():  # non-trivial running statistics
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    net.conv1.weight.requires_grad_(False)  # a partly frozen backbone
    calls: list[int] = []
    net.fc.register_forward_hook(lambda m, i, o: calls.append(1))
    net.train()
    return net, calls


def snapshot(net: nn.Module) -> dict:
    return {
        "training": {n: m.training for n, m in net.named_modules()},
        "grad_flags": {n: p.requires_grad for n, p in net.named_parameters()},
        "grads": {n: p.grad for n, p in net.named_parameters()},
        "buffers": {n: b.clone() for n, b in net.named_buffers()},
        "params": {n: p.detach().clone() for n, p in net.named_parameters()},
        "hooks": {
            n: {k: tuple(v) for k, v in vars(m).items() if isinstance(v, dict) and "hook" in k}
            for n, m in net.named_modules()
        },
    }


def assert_unchanged(net: nn.Module, before: dict) -> None:
    after = snapshot(net)
    assert after["training"] == before["training"]
    assert after["grad_flags"] == before["grad_flags"]
    assert all(g is None for g in after["grads"].values()), "a run wrote the model's .grad"
    for n, b in before["buffers"].items():
        assert torch.equal(after["buffers"][n], b), f"buffer {n} changed"
    for n, p in before["params"].items():
        assert torch.equal(after["params"][n], p), f"parameter {n} changed"
    assert after["hooks"] == before["hooks"], "hooks were left on (or taken off) the user's modules"


@pytest.fixture
def user():
    net, calls = make_user_model()
    handle = load_model(net, device="cpu", input_size=32)
    net.train()  # back in train mode after loading (a student fine-tunes between two runs)
    return net, handle, calls


def test_load_model_leaves_the_mode_alone() -> None:
    net, _ = make_user_model()
    before = snapshot(net)
    handle = load_model(net, device="cpu", input_size=32)
    assert_unchanged(net, before)
    assert handle.model is net and not handle.net.training


def _runs(handle):
    photo = torch.rand(1, 3, 32, 32)
    x = handle.normalize(photo)
    yield "am", lambda: am.maximize(handle, "conv2:1", steps=4, size=32)
    yield "am_logit", lambda: am.maximize(handle, "class:2", steps=3, size=32)
    yield "inversion", lambda: inv.invert(handle, photo, "conv2", steps=4)
    for method in A.METHODS:
        yield f"attr_{method}", lambda m=method: A.attribute(handle, x, 1, m, layer="relu2")
    yield "pgd", lambda: adv.pgd(handle, photo, eps=0.03, steps=3)
    yield "fgsm", lambda: adv.fgsm(handle, photo, eps=0.03)
    yield (
        "topk",
        lambda: T.top_k_patches(handle, "relu2", [torch.rand(3, 32, 32) for _ in range(5)]),
    )
    yield "rf", lambda: T.receptive_field(handle, "conv2")

    def dissection():
        from cnnvis_widgets.data.concepts import probe_set

        return dissect(handle, ["relu2"], probe_set(8, size=32, seed=1), batch_size=4)

    yield "dissection", dissection


def test_every_method_leaves_the_model_as_it_was(user) -> None:
    net, handle, calls = user
    before = snapshot(net)
    for name, run in _runs(handle):
        n_calls = len(calls)
        run()
        assert_unchanged(net, before)
        if name in ("am_logit", "pgd", "fgsm") or name.startswith("attr_saliency"):
            assert len(calls) > n_calls, f"{name}: the user's own hook did not fire"


def test_attributions_are_deterministic_on_a_train_mode_model(user) -> None:
    net, handle, _ = user
    x = handle.normalize(torch.rand(2, 3, 32, 32))
    for method in A.METHODS:
        a = A.attribute(handle, x, 3, method, layer="relu2")
        b = A.attribute(handle, x, 3, method, layer="relu2")
        assert torch.equal(a, b), f"{method}: Dropout was on"
    # and they are the eval-mode network's: the saliency of the eval-mode copy
    ref_net = BNNet()
    ref_net.load_state_dict(net.state_dict())
    ref_net.eval()
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(ref_net(xr)[:, 3].sum(), xr)
    assert torch.allclose(A.saliency(handle, x, 3), ref, atol=1e-6)


def test_a_thread_watching_the_flags_never_sees_them_change(user) -> None:
    net, handle, _ = user
    before = snapshot(net)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for n, p in net.named_parameters():
                if p.requires_grad != before["grad_flags"][n]:
                    seen.append(f"requires_grad of {n}")
            for n, m in net.named_modules():
                if m.training != before["training"][n]:
                    seen.append(f"training of {n!r}")

    t = threading.Thread(target=watch)
    t.start()
    try:
        for _ in range(3):
            am.maximize(handle, "conv2:1", steps=5, size=32)
            A.attribute(handle, handle.normalize(torch.rand(1, 3, 32, 32)), 1, "guided")
            adv.pgd(handle, torch.rand(1, 3, 32, 32), eps=0.03, steps=3)
    finally:
        done.set()
        t.join()
    assert not seen, seen[:5]
    assert_unchanged(net, before)


def test_a_training_step_in_another_thread_works_during_a_run(user) -> None:
    net, handle, _ = user
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.0)
    errors: list[BaseException] = []
    gen = am.maximize_steps(handle, "conv2:1", steps=50, size=32)
    next(gen)  # a run is going

    def train() -> None:
        try:
            loss = net(torch.rand(2, 3, 32, 32)).sum()
            loss.backward()  # fails when the run froze every parameter
            opt.step()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=train)
    t.start()
    t.join()
    gen.close()
    assert not errors, errors
    assert net.fc.weight.grad is not None  # the student's own backward, not ours
    assert net.conv1.weight.grad is None  # frozen by the student: still frozen


def test_a_generator_abandoned_after_break_leaves_nothing_changed(user) -> None:
    import gc

    net, handle, _ = user
    before = snapshot(net)
    gens = [
        am.maximize_steps(handle, "conv2:1", steps=50, size=32),
        inv.invert_steps(handle, torch.rand(1, 3, 32, 32), "conv2", steps=50),
        adv.pgd_steps(handle, torch.rand(1, 3, 32, 32), eps=0.03, steps=50),
    ]
    for gen in gens:
        for _ in gen:
            assert_unchanged(net, before)  # not even while it runs
            break
    del gens, gen
    gc.collect()
    assert_unchanged(net, before)
    net.fc.weight.requires_grad_(False)  # frozen meanwhile: stays frozen
    am.maximize(handle, "conv2:1", steps=2, size=32)
    assert not net.fc.weight.requires_grad


def test_the_twin_follows_the_users_weights_and_submodules(user) -> None:
    net, handle, _ = user
    x = handle.normalize(torch.rand(1, 3, 32, 32))
    with torch.no_grad():
        net.fc.weight.add_(1.0)  # an in-place edit (an optimizer step)
        net.eval()
        ref = net(x)
        net.train()
        assert torch.equal(handle.net(x), ref)
        net.load_state_dict(make_user_model()[0].state_dict())
        net.eval()
        ref = net(x)
        net.train()
        assert torch.equal(handle.net(x), ref)
        net.fc = nn.Linear(16, 5)  # a submodule replaced: the twin is rebuilt
        net.eval()
        ref = net(x)
        net.train()
        assert torch.equal(handle.net(x), ref)
    assert handle.module("fc") is not net.fc and handle.module("fc").weight.data_ptr() == (
        net.fc.weight.data_ptr()
    )
