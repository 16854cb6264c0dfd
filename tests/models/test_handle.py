"""load_model / ModelHandle: spaces, layers, errors, user modules, the real classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.data import sample_image
from tests.conftest import make_tiny


def test_layers_are_discovered_in_execution_order(tiny_handle) -> None:
    names = list(tiny_handle.layers)
    assert names == ["conv1", "relu1", "pool", "conv2", "relu2", "gap", "fc"]
    conv2 = tiny_handle.layer("conv2")
    assert (conv2.kind, conv2.channels, conv2.height, conv2.width) == ("conv", 16, 16, 16)
    assert tiny_handle.layer("fc").spatial is False
    assert [li.name for li in tiny_handle.conv_layers()] == [
        "conv1",
        "relu1",
        "pool",
        "conv2",
        "relu2",
        "gap",
    ]
    assert tiny_handle.num_outputs == 5 and tiny_handle.class_name(3) == "class 3"


def test_errors_name_the_fix(tiny_handle) -> None:
    with pytest.raises(KeyError, match=r"nearest valid names: conv2"):
        tiny_handle.layer("conv_2")
    with pytest.raises(IndexError, match=r"valid 0\.\.15"):
        tiny_handle.check_unit("conv2", 16)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("efficientnet_lite9")
    with pytest.raises(RuntimeError, match="dummy input"):
        load_model(nn.Linear(3, 4), device="cpu")  # a 4-D image batch cannot go through
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            load_model(make_tiny(), device="cuda")


def test_pixel_and_model_spaces(tiny_handle) -> None:
    pixels = torch.rand(2, 3, 8, 8)
    x = tiny_handle.normalize(pixels)
    mean = torch.tensor(tiny_handle.mean).view(1, 3, 1, 1)
    std = torch.tensor(tiny_handle.std).view(1, 3, 1, 1)
    assert torch.allclose(x, (pixels - mean) / std)
    assert torch.allclose(tiny_handle.denormalize(x), pixels, atol=1e-6)
    img = sample_image("cat")
    t = tiny_handle.preprocess(img)
    assert t.shape == (1, 3, 32, 32)
    back = tiny_handle.deprocess(t)
    assert back.size == (32, 32) and back.mode == "RGB"
    assert len(tiny_handle.deprocess(torch.cat([t, t]))) == 2


def test_user_module_random_reinit_is_seeded() -> None:
    net = make_tiny()
    own = load_model(net, device="cpu", input_size=32)
    a = load_model(net, weights=None, seed=1, device="cpu", input_size=32)
    b = load_model(net, weights=None, seed=1, device="cpu", input_size=32)
    c = load_model(net, weights=None, seed=2, device="cpu", input_size=32)
    w = lambda h: h.model.conv1.weight  # noqa: E731
    assert w(own) is net.conv1.weight
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c))
    assert not torch.equal(w(a), net.conv1.weight)


def test_frozen_is_a_no_op_kept_for_old_code(tiny_handle) -> None:
    tiny_handle.model.fc.weight.requires_grad_(False)
    with tiny_handle.frozen():  # once it flipped every flag; now nothing changes
        assert tiny_handle.model.conv1.weight.requires_grad
    assert tiny_handle.model.conv1.weight.requires_grad
    assert not tiny_handle.model.fc.weight.requires_grad


def test_torchvision_architecture_without_download() -> None:
    h = load_model("torchvision:resnet18", weights=None, device="cpu")
    assert h.layer("layer3").channels == 256 and h.class_names[281] == "tabby"
    assert h.weights == "random(seed=0)"


@pytest.mark.slow
def test_default_model_is_the_real_imagenet_classifier(lite0) -> None:
    assert lite0.name == "efficientnet_lite0" and lite0.mean == (0.5, 0.5, 0.5)
    assert lite0.input_size == (224, 224) and len(lite0.class_names) == 1000
    with torch.no_grad():
        logits = lite0.model(lite0.preprocess(sample_image("cat")))
    top = int(logits.argmax())
    assert 281 <= top <= 285, lite0.class_names[top]  # tabby, tiger cat, ..., Egyptian cat
    assert lite0.layer("_blocks.15").channels == 320
    assert lite0.layer("_conv_head").channels == 1280


@pytest.mark.slow
def test_random_weights_give_the_same_architecture() -> None:
    r = load_model("efficientnet_lite0", weights=None, device="cpu")
    assert "random" in r.weights and len(r.layers) > 100
    with torch.no_grad():
        out = r.model(r.preprocess(sample_image("cat")))
    assert out.shape == (1, 1000)


def test_plain_torchvision_classifier_gets_imagenet_names() -> None:
    import torchvision

    h = load_model(torchvision.models.resnet18(), device="cpu")
    assert h.class_names is not None and h.class_names[281] == "tabby"
    small = load_model(torchvision.models.resnet18(num_classes=10), device="cpu")
    assert small.class_names is None  # 10 outputs: ImageNet names would be wrong


def test_capture_is_safe_from_later_inplace_ops_without_grad(tiny_handle) -> None:
    from cnnvis_widgets.core.hooks import capture

    x = tiny_handle.normalize(torch.rand(1, 3, 32, 32))
    with torch.no_grad(), capture(tiny_handle, ["conv2"]) as acts:
        tiny_handle.net(x)  # relu2 (in place) runs after conv2
        assert (acts["conv2"] < 0).any()  # the captured pre-activation keeps its negatives


@pytest.mark.parametrize(
    "size, err, match",
    [
        (-4, ValueError, r"1\.\.4096"),
        (100000, ValueError, r"1\.\.4096"),
        (0, ValueError, r"1\.\.4096"),
        ("32", TypeError, "int or \\(height, width\\)"),
        (3.5, TypeError, "integer"),
        ((32,), ValueError, "int or \\(height, width\\)"),
    ],
)
def test_load_model_input_size_is_validated(size, err, match) -> None:
    with pytest.raises(err, match=match):
        load_model(make_tiny(), device="cpu", input_size=size)


def test_load_model_spec_and_dtype_errors_name_the_fix() -> None:
    import numpy as np

    with pytest.raises(ValueError, match="std must be finite numbers > 0"):
        load_model(make_tiny(), device="cpu", input_size=32, std=(0, 0, 0))
    for dtype, name in [
        (torch.float16, "float16"),
        (torch.bfloat16, "bfloat16"),
        (torch.float64, "float64"),
    ]:
        with pytest.raises(TypeError, match=rf"{name} weights.*model\.float\(\)"):
            load_model(make_tiny().to(dtype), device="cpu", input_size=32)
    h = load_model(make_tiny(), device="cpu", input_size=np.int64(32))
    assert h.input_size == (32, 32)
    h.check_unit("conv2", np.int64(3))
    h.check_class(np.int32(4))
    with pytest.raises(IndexError, match=r"valid 0\.\.4"):
        h.check_class(np.int64(5))
    with pytest.raises(TypeError, match="int"):
        h.check_unit("conv2", 2.0)


def test_load_model_of_a_handle_gives_its_random_twin() -> None:
    h = load_model(make_tiny(), device="cpu", input_size=32, mean=(0.4,) * 3, std=(0.3,) * 3)
    r = load_model(h, weights=None, seed=3)
    assert (r.input_size, r.mean, r.std) == (h.input_size, h.mean, h.std)
    assert list(r.layers) == list(h.layers) and r.weights == "random(seed=3)"
    assert not torch.equal(r.model.conv1.weight, h.model.conv1.weight)
    assert torch.equal(load_model(h, weights=None, seed=3).model.conv1.weight, r.model.conv1.weight)
    assert r.fingerprint() != h.fingerprint()


class _NoShallowCopy(nn.Module):
    """A module whose class cannot be instantiated bare (its ``__new__`` needs an argument)."""

    def __new__(cls, token: int):
        return super().__new__(cls)

    def __init__(self, token: int) -> None:
        super().__init__()
        self.net = make_tiny()

    def __deepcopy__(self, memo):
        new = _NoShallowCopy(1)
        new.load_state_dict(self.state_dict())
        return new.train(self.training)

    def forward(self, x):
        return self.net(x)


def test_a_model_that_cannot_be_shallow_copied_runs_on_a_warned_deep_copy() -> None:
    net = _NoShallowCopy(1).train()
    with pytest.warns(RuntimeWarning, match="deep copy"):
        h = load_model(net, device="cpu", input_size=32)
    assert net.training and not h.net.training and h.net is not net
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        net.net.fc.bias.add_(1.0)  # the copy follows the weights
        net.eval()
        ref = net(x)
        net.train()
        assert torch.equal(h.net(x), ref)


def test_pins_trust_the_twin_for_a_block_and_always_leave(tiny_handle) -> None:
    import threading

    h = tiny_handle
    old_fc = h.module("fc")
    with h.pinned():  # a capture: one twin for the whole block
        h.model.fc = nn.Linear(16, 5)
        assert h.module("fc") is old_fc and h.net.fc is old_fc
        with h.pinned(ttl=0.0):  # a run that re-checks at every access sees the change
            assert h.module("fc") is not old_fc
    assert h.module("fc").weight.data_ptr() == h.model.fc.weight.data_ptr()

    def run():
        with h.pinned(ttl=60.0):
            yield 1

    gen = run()
    next(gen)  # pinned in this thread, then closed from another one
    t = threading.Thread(target=gen.close)
    t.start()
    t.join()
    assert h._pins == {}
    h.model.fc = nn.Linear(16, 5)
    assert h.net.fc.weight.data_ptr() == h.model.fc.weight.data_ptr()


def test_parametrized_and_recurrent_modules_get_a_shallow_twin_that_follows_them() -> None:
    import copy

    from torch.nn.utils.parametrizations import weight_norm

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = weight_norm(nn.Conv2d(3, 4, 4, stride=4))  # refuses copy.copy
            self.rnn = nn.LSTM(16, 5, batch_first=True)  # keeps a flat list of its weights
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            o, _ = self.rnn(self.c(x).flatten(2))
            return self.fc(o[:, -1])

    net = Net().train()
    h = load_model(net, device="cpu", input_size=16)
    assert h._twin_kind == "shallow" and net.training
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        net.rnn.weight_hh_l0.add_(0.1)
        net.c.parametrizations.weight.original1.mul_(2.0)
        assert torch.allclose(h.net(x), copy.deepcopy(net).eval()(x), atol=1e-6)
