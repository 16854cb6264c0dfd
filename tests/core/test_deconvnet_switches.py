"""DeconvNet's switches (Zeiler & Fergus 2014, section 2.1): with real max pooling (zf_mnist) the
projection depends on the image through the switches; without them, or in a network without max
pooling (EfficientNet-Lite0), it is one pattern per unit and position, whatever the image."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core import projections as P
from cnnvis_widgets.core import topk
from cnnvis_widgets.core.blocks.rules import patches_installed, relu_rule
from cnnvis_widgets.core.training import digits_data


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_unpooling_through_the_switches_or_over_the_whole_window(rule) -> None:
    net = nn.Sequential(nn.MaxPool2d(2))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)
    with relu_rule(net, rule):
        (g,) = torch.autograd.grad(net(x).sum(), x)
    assert g.flatten().tolist() == [0, 0, 0, 1]  # only where the maximum was
    with relu_rule(net, rule, switches=False):
        out = net(x)
        (g,) = torch.autograd.grad(out.sum(), x)
    assert float(out.detach()) == 4.0  # the forward pass is unchanged
    assert g.flatten().tolist() == [1, 1, 1, 1]  # every position of the window
    assert not patches_installed()


def test_zf_mnist_projections_use_the_switches(zf_mnist) -> None:
    x = digits_data().x_test[:6]
    target = A.unit_at("features.conv2", 3, [7] * 6, [7] * 6)  # one unit, one position
    xin = zf_mnist.normalize(x)
    with_sw = A.deconvnet(zf_mnist, xin, target)
    without = A.deconvnet(zf_mnist, xin, target, switches=False)
    # without switches DeconvNet never looks at the image: the same pattern for every digit
    assert all(torch.allclose(without[0], w, atol=1e-6) for w in without[1:])
    # with them each digit gets its own projection, and the two differ
    assert not torch.allclose(with_sw[0], with_sw[1], atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(with_sw.flatten(1), without.flatten(1))
    assert float(cos.max()) < 0.9, cos


def test_project_unit_passes_the_switch_option(zf_mnist) -> None:
    x = digits_data().x_test[:100]
    top = topk.top_k_patches(zf_mnist, "features.conv2", x, k=4, units=[5])
    entries, images = top.entries(5), top.images_for(5, x, zf_mnist)
    a = P.project_unit(zf_mnist, "features.conv2", 5, images, entries)
    b = P.project_unit(zf_mnist, "features.conv2", 5, images, entries, switches=False)
    assert a.shape == b.shape == (4, 1, 28, 28) and not torch.allclose(a, b)
    assert P.has_max_pooling(zf_mnist)


@pytest.mark.slow
def test_lite0_has_no_switches_so_the_option_is_moot(lite0) -> None:
    from cnnvis_widgets.data import sample_image

    assert not P.has_max_pooling(lite0)
    x = lite0.preprocess(sample_image("cat"))
    target = A.unit_at("_blocks.4", 7, [7], [7])
    a = A.deconvnet(lite0, x, target)
    b = A.deconvnet(lite0, x, target, switches=False)
    assert torch.equal(a, b)
