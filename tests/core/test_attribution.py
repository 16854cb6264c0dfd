"""Attribution: hand-weighted networks whose backward passes are known exactly, the rule
mechanism (in-place, functional, ReLU6, threads, unsupported activations), targets, clean-up."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import objectives as O
from cnnvis_widgets.core.hooks import active_hook_count

ORIGINAL_F = {
    name: getattr(F, name)
    for name in ("relu", "relu6", "hardtanh", "silu", "gelu", "threshold", "threshold_")
}
ORIGINAL_TORCH = {
    name: getattr(torch, name)
    for name in ("relu", "clamp", "sigmoid", "tanh", "threshold", "threshold_")
}


def assert_clean(model: nn.Module) -> None:
    """No hook left on the model, every wrapped function restored."""
    assert active_hook_count(model) == 0
    assert not A.patches_installed()
    for name, fn in ORIGINAL_F.items():
        assert getattr(F, name) is fn, name
    for name, fn in ORIGINAL_TORCH.items():
        assert getattr(torch, name) is fn, name
    for name in ("relu", "relu_", "clamp", "clamp_", "sigmoid", "tanh"):
        assert name not in vars(torch.Tensor), name


# ------------------------------------------------------------------------------------------------
# Net1: x (B,1,1,3) -> 1x1 conv [1, -1] -> rectifier -> 1x1 conv [2, -3] -> fc [[1,1,1],[1,-1,0]]
#
# For x = [1, -2, 0.5]: h0 = x, h1 = -x; forward masks m0 = [1,0,1], m1 = [0,1,0].
# Class 0: the gradient reaching the rectifier is [2,2,2] (channel 0) and [-3,-3,-3] (channel 1):
#   plain     -> g_x = 1*[2,0,2] - 1*[0,-3,0]      = [2, 3, 2]
#   deconvnet -> relu(incoming), no mask            = [2, 2, 2]
#   guided    -> relu(incoming) * forward mask      = [2, 0, 2]
# Class 1: incoming [2,-2,0] and [-3,3,0]: all three give [2, -3, 0].
# Grad-CAM at the rectifier's output for class 0: alpha = (2, -3), r0 = [1,0,.5], r1 = [0,2,0]
#   cam = relu(2 r0 - 3 r1) = [2, 0, 1]; guided Grad-CAM = [2,0,2] * [2,0,1] = [4, 0, 2].

X1 = torch.tensor([[[[1.0, -2.0, 0.5]]]])
EXPECTED = {
    "saliency": [[2.0, 3.0, 2.0], [2.0, -3.0, 0.0]],
    "deconvnet": [[2.0, 2.0, 2.0], [2.0, -3.0, 0.0]],
    "guided_backprop": [[2.0, 0.0, 2.0], [2.0, -3.0, 0.0]],
}
FUNCS = {
    "saliency": A.saliency,
    "deconvnet": A.deconvnet,
    "guided_backprop": A.guided_backprop,
}


class Net1(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 1, 1, bias=False)
        self.fc = nn.Linear(3, 2, bias=False)
        self.act = act
        self.rect = {
            "module": nn.ReLU(),
            "module_inplace": nn.ReLU(inplace=True),
            "relu6_module": nn.ReLU6(inplace=True),
            "threshold_module": nn.Threshold(0.0, 0.0),
            "threshold_inplace": nn.Threshold(0.0, 0.0, inplace=True),
            "threshold_shifted": nn.Threshold(0.75, -1.0),
        }.get(act, nn.Identity())
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv2.weight.copy_(torch.tensor([2.0, -3.0]).view(1, 2, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.act == "functional":
            r = F.relu(h)
        elif self.act == "functional_inplace":
            r = F.relu(h, inplace=True)
        elif self.act == "torch_relu":
            r = torch.relu(h)
        elif self.act == "method_inplace":
            r = h.relu_()
        elif self.act == "clamp":
            r = h.clamp(min=0)
        elif self.act == "relu6_functional":
            r = F.relu6(h)
        elif self.act == "threshold_functional":
            r = F.threshold(h, 0.0, 0.0)
        else:
            r = self.rect(h)
        r = self.keep(r)
        return self.fc(self.conv2(r).flatten(1))

    def keep(self, r: torch.Tensor) -> torch.Tensor:
        return r


ACTS = [
    "module",
    "module_inplace",
    "functional",
    "functional_inplace",
    "torch_relu",
    "method_inplace",
    "clamp",
    "relu6_module",
    "relu6_functional",
    "threshold_module",
    "threshold_inplace",
    "threshold_functional",
]


def handle_for(net: nn.Module, size: tuple[int, int] = (1, 3), channels: int = 1):
    return load_model(
        net, device="cpu", input_size=size, mean=(0.0,) * channels, std=(1.0,) * channels
    )


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("method", list(FUNCS))
def test_rules_give_the_known_gradients(act: str, method: str) -> None:
    net = Net1(act)
    h = handle_for(net)
    x = X1.repeat(2, 1, 1, 1)
    g = FUNCS[method](h, x, torch.tensor([0, 1]))
    assert g.shape == x.shape
    assert g[:, 0, 0].tolist() == EXPECTED[method]
    assert torch.equal(x, X1.repeat(2, 1, 1, 1))  # the input is never modified in place
    assert_clean(net)


def test_relu6_saturation_is_masked_by_guided_but_not_by_deconvnet() -> None:
    h = handle_for(Net1("relu6_module"))
    x = torch.tensor([[[[7.0, -2.0, 0.5]]]])  # 7 saturates ReLU6: no plain gradient there
    # class 0: incoming [2,2,2] / [-3,-3,-3]; masks m0 = [0 (saturated),0,1], m1 = [0,1,0]
    assert A.saliency(h, x, 0)[0, 0, 0].tolist() == [0.0, 3.0, 2.0]
    assert A.deconvnet(h, x, 0)[0, 0, 0].tolist() == [2.0, 2.0, 2.0]
    assert A.guided_backprop(h, x, 0)[0, 0, 0].tolist() == [0.0, 0.0, 2.0]


def test_grad_cam_and_guided_grad_cam_known_values() -> None:
    net = Net1("module")
    h = handle_for(net)
    cam = A.grad_cam(h, X1, 0, "rect")
    assert cam.shape == (1, 1, 1, 3)
    assert cam[0, 0, 0].tolist() == [2.0, 0.0, 1.0]
    ggc = A.guided_grad_cam(h, X1, 0, "rect")
    assert ggc.shape == X1.shape and ggc[0, 0, 0].tolist() == [4.0, 0.0, 2.0]
    assert A.attribute(h, X1, 0, "grad_cam", layer="rect")[0, 0, 0].tolist() == [2.0, 0.0, 1.0]
    assert_clean(net)


def test_shifted_threshold_has_its_own_forward_mask_under_every_rule() -> None:
    # Threshold(0.75, -1): masks x > 0.75: m0 = [1, 0, 0], m1 = [0, 1, 0] for x = [1, -2, .5].
    # Class 0, incoming [2,2,2] / [-3,-3,-3]: plain [2,0,0] - [0,-3,0] = [2, 3, 0];
    # deconvnet relu(incoming) = [2, 2, 2]; guided relu(incoming) * mask = [2, 0, 0].
    # (It used to fall back to plain gradients under DeconvNet and guided backprop.)
    net = Net1("threshold_shifted")
    h = handle_for(net)
    assert A.saliency(h, X1, 0)[0, 0, 0].tolist() == [2.0, 3.0, 0.0]
    assert A.deconvnet(h, X1, 0)[0, 0, 0].tolist() == [2.0, 2.0, 2.0]
    assert A.guided_backprop(h, X1, 0)[0, 0, 0].tolist() == [2.0, 0.0, 0.0]
    assert_clean(net)


def test_one_spelling_per_method_and_old_spellings_warn() -> None:
    names = ["saliency", "deconvnet", "guided_backprop", "grad_cam", "guided_grad_cam"]
    assert list(A.METHODS) == names
    for name in names:  # the dispatcher key is the function's name
        assert A.METHODS[name][1] is getattr(A, name)
    h = handle_for(Net1("module"))
    new = A.attribute(h, X1, 0, "grad_cam", layer="rect")
    for old, canonical in A.DEPRECATED_METHODS.items():
        assert canonical in names
        with pytest.warns(DeprecationWarning, match=f"now spelled '{canonical}'"):
            got = A.attribute(h, X1, 0, old, layer="rect")
        assert torch.equal(got, A.attribute(h, X1, 0, canonical, layer="rect"))
    assert torch.equal(new, A.attribute(h, X1, 0, "grad_cam", layer="rect"))


class PoolNet(nn.Module):
    """x (1,1,4,4) -> conv 2x2 stride 2 [[1,2],[3,4]] -> ReLU -> max pool 2 -> fc [5]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 2, stride=2, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2))
            self.fc.weight.fill_(5.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize("method", list(FUNCS))
def test_max_unpooling_routes_through_the_switches_with_transposed_filters(method) -> None:
    net = PoolNet()
    h = handle_for(net, size=(4, 4))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.1
    g = FUNCS[method](h, x, 0)
    for b in range(3):
        conv = F.conv2d(x[b : b + 1], net.conv.weight, stride=2)[0, 0]
        i, j = divmod(int(conv.flatten().argmax()), 2)  # the forward switch
        expected = torch.zeros(4, 4)
        expected[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = 5.0 * net.conv.weight[0, 0]
        assert torch.allclose(g[b, 0], expected), (b, g[b, 0], expected)


def test_hidden_unit_targets_channel_neuron_and_per_image_positions(tiny_handle) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=g)
    a = A.guided_backprop(tiny_handle, x, O.channel("conv2", 3))
    b = A.guided_backprop(tiny_handle, x, "conv2:3")
    assert torch.equal(a, b) and a.shape == x.shape
    # one position per image: the gradient is confined to that position's receptive field
    # (conv 3x3 -> pool 2 -> conv 3x3: 10x10 pixels around 2*(y, x))
    d = A.deconvnet(tiny_handle, x, A.unit_at("conv2", [3, 5], [1, 10], [2, 12]))
    for b_, (y, xx) in enumerate([(1, 2), (10, 12)]):
        nz = d[b_].abs().sum(0).nonzero()
        assert nz.numel() > 0
        assert nz[:, 0].min() >= 2 * y - 3 and nz[:, 0].max() <= 2 * y + 4
        assert nz[:, 1].min() >= 2 * xx - 3 and nz[:, 1].max() <= 2 * xx + 4
    # a neuron target equals the unit_at target of the same position
    n1 = A.saliency(tiny_handle, x, O.neuron("conv2", 4, 3, 6))
    n2 = A.saliency(tiny_handle, x, A.unit_at("conv2", 4, 3, 6))
    assert torch.equal(n1, n2)
    assert_clean(tiny_handle.model)


def test_target_errors_are_clear(tiny_handle) -> None:
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(IndexError, match="valid 0..4"):
        A.saliency(tiny_handle, x, 5)
    with pytest.raises(IndexError, match="valid 0..15"):
        A.deconvnet(tiny_handle, x, O.channel("conv2", 16))
    with pytest.raises(KeyError, match="nearest valid names"):
        A.guided_backprop(tiny_handle, x, "conv9:1")
    with pytest.raises(ValueError, match="3 class indices given for a batch of 2"):
        A.saliency(tiny_handle, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\)"):
        A.saliency(tiny_handle, torch.randn(2, 1, 32, 32), 0)
    with pytest.raises(TypeError, match="preprocess"):
        A.saliency(tiny_handle, [[0.0]], 0)
    with pytest.raises(ValueError, match="runs after the target's layer"):
        A.grad_cam(tiny_handle, x, "conv1:0", "conv2")
    with pytest.raises(ValueError, match="spatial output larger than 1x1.*conv2, relu2$"):
        A.grad_cam(tiny_handle, x, 0, "fc")
    with pytest.raises(ValueError, match="spatial output larger than 1x1"):
        A.grad_cam(tiny_handle, x, 0, "gap")
    with pytest.raises(ValueError, match="unknown method 'lime'.*guided_grad_cam"):
        A.attribute(tiny_handle, x, 0, "lime")
    assert_clean(tiny_handle.model)


def test_nan_output_raises_and_cleans_up() -> None:
    net = Net1("module_inplace")
    h = handle_for(net)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        A.deconvnet(h, torch.tensor([[[[float("nan"), 1.0, 2.0]]]]), 0)
    assert_clean(net)


class SiluNet(nn.Module):
    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU())
        self.head = nn.Conv2d(4, 4, 1)
        self.functional = functional
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[0](x) if self.functional else self.features(x)
        if self.functional:
            x = F.gelu(x)
        return self.fc(self.head(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("functional", [False, True])
def test_unsupported_activation_names_the_module(functional: bool) -> None:
    net = SiluNet(functional)
    h = handle_for(net, size=(8, 8), channels=3)
    x = torch.randn(1, 3, 8, 8)
    where = "forward of SiluNet" if functional else "'features.1'"
    with pytest.raises(A.UnsupportedActivationError, match=where) as info:
        A.guided_backprop(h, x, 0)
    assert ("gelu" if functional else "silu") in str(info.value)
    assert "strict=False" in str(info.value)
    assert_clean(net)
    # plain gradients are fine, and strict=False lets plain gradients through
    assert A.saliency(h, x, 0).abs().sum() > 0
    with A.relu_rule(h, "deconvnet", strict=False):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xx)[0, 0], xx)
    assert torch.allclose(g, A.saliency(h, x, 0))  # no rectifier at all: plain gradient
    assert_clean(net)


def test_error_inside_the_block_restores_everything() -> None:
    net = Net1("module_inplace")
    with pytest.raises(RuntimeError, match="boom"):
        with A.relu_rule(net, "guided"):
            assert A.patches_installed()
            assert F.relu is not ORIGINAL_F["relu"]
            raise RuntimeError("boom")
    assert_clean(net)
    with pytest.raises(ValueError, match="unknown rule"):
        with A.relu_rule(net, "lrp"):
            pass
    assert_clean(net)


def test_rule_acts_only_in_the_thread_that_entered_it() -> None:
    net = Net1("module")
    entered, release = threading.Event(), threading.Event()
    seen: list[list[float]] = []

    def other() -> None:
        with A.relu_rule(net, "deconvnet"):
            entered.set()
            release.wait(30)
            x = X1.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(x)[0, 0], x)
            seen.append(g[0, 0, 0].tolist())

    t = threading.Thread(target=other)
    t.start()
    assert entered.wait(30)
    x = X1.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(x)[0, 0], x)  # patched functions, but not our thread
    release.set()
    t.join(30)
    assert plain[0, 0, 0].tolist() == EXPECTED["saliency"][0]
    assert seen == [EXPECTED["deconvnet"][0]]
    assert_clean(net)


def _reference(model: nn.Module, x: torch.Tensor, cls: int, rule: str) -> torch.Tensor:
    """Captum-style reference: backward hooks on every (not in-place) ReLU/ReLU6 module."""
    model = copy.deepcopy(model).eval()
    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False

            def hook(mod, grad_in, grad_out):
                g = grad_out[0] if rule == "deconvnet" else grad_in[0]
                return (F.relu(g),)

            hooks.append(m.register_full_backward_hook(hook))
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[:, cls].sum(), x)
    for hk in hooks:
        hk.remove()
    return g


def test_inplace_relu_torchvision_model_matches_a_hook_reference() -> None:
    h = load_model("torchvision:resnet18", device="cpu", input_size=64)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for rule, fn in (("guided", A.guided_backprop), ("deconvnet", A.deconvnet)):
        ours = fn(h, x, 7)
        ref = _reference(h.model, x, 7, rule)
        assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.abs().max()), rule
    ours = A.saliency(h, x, 7)
    xx = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(h.model(xx)[:, 7].sum(), xx)
    assert torch.allclose(ours, ref)
    assert all(p.requires_grad for p in h.model.parameters())  # frozen() restored
    assert_clean(h.model)


def test_unsupported_torchvision_model_names_its_hardswish() -> None:
    h = load_model("torchvision:mobilenet_v3_small", device="cpu", input_size=32)
    with pytest.raises(A.UnsupportedActivationError, match=r"'features\.0\.2'.*hardswish"):
        A.deconvnet(h, torch.randn(1, 3, 32, 32), 0)
    assert_clean(h.model)


@pytest.mark.slow
def test_pretrained_lite0_guided_and_deconvnet_match_the_hook_reference(lite0) -> None:
    from cnnvis_widgets.data import sample_image

    x = lite0.preprocess(sample_image("cat"))
    for rule, fn in (("guided", A.guided_backprop), ("deconvnet", A.deconvnet)):
        ours = fn(lite0, x, 281)
        ref = _reference(lite0.model, x, 281, rule)
        assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.abs().max()), rule
    cam = A.grad_cam(lite0, x, 281)
    assert cam.shape == (1, 1, 224, 224) and cam.min() >= 0 and cam.max() > 0
    ggc = A.guided_grad_cam(lite0, x, 281)
    assert ggc.shape == x.shape
    assert torch.allclose(ggc, A.guided_backprop(lite0, x, 281) * cam, rtol=1e-4, atol=1e-8)
    assert_clean(lite0.model)


def test_same_maps_as_captum_on_a_relu_network() -> None:
    """Captum (when installed) is the reference implementation of these methods for nn.ReLU."""
    captum_attr = pytest.importorskip("captum.attr")
    h = load_model("torchvision:resnet18", device="cpu", input_size=64)
    peer = copy.deepcopy(h.model)  # Captum's hooks need ReLU modules that are not in place
    for m in peer.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([3, 9])
    layer = dict(peer.named_modules())["layer3"]
    cam = captum_attr.LayerGradCam(peer, layer).attribute(x, target=target, relu_attributions=True)
    pairs = [
        (A.saliency(h, x, target), captum_attr.Saliency(peer).attribute(x, target, abs=False)),
        (A.deconvnet(h, x, target), captum_attr.Deconvolution(peer).attribute(x, target)),
        (A.guided_backprop(h, x, target), captum_attr.GuidedBackprop(peer).attribute(x, target)),
        (
            A.grad_cam(h, x, target, "layer3"),
            captum_attr.LayerAttribution.interpolate(cam, (64, 64), interpolate_mode="bilinear"),
        ),
    ]
    for ours, ref in pairs:
        assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    assert_clean(h.model)
