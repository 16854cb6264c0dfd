"""Past Lucid: MaCo's importance (alpha) map and feature accentuation of a photo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core import activation_max as am
from cnnvis_widgets.core import objectives as O
from cnnvis_widgets.core.activation_max_accent import (
    alpha_picture,
    default_accent_layer,
    start_pixels,
)
from cnnvis_widgets.data import sample_image


class RegionNet(nn.Module):
    """Logit 0 sees only the pixels of rows 4..11, columns 18..29 (a known region)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = self.conv(x)[:, :, 4:12, 18:30]
        return torch.stack([region.pow(2).mean((1, 2, 3)), x.mean((1, 2, 3)) * 0], dim=1)


@pytest.mark.parametrize("preset", ["maco", "lucid"])
def test_alpha_map_is_highest_where_the_gradients_were(preset) -> None:
    h = load_model(RegionNet(), device="cpu", input_size=32)
    r = am.maximize(h, O.class_logit(0), preset=preset, steps=8, size=32, transforms=[])
    assert r.alpha is not None and r.alpha.shape == (1, 1, 32, 32)
    assert 0 <= float(r.alpha.min()) and float(r.alpha.max()) <= 1
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[4:12, 18:30] = True
    a = r.alpha[0, 0]
    assert float(a[inside].mean()) > 0.5 and float(a[~inside].max()) == 0.0
    shown = alpha_picture(r.image[0], r.alpha[0])  # MaCo's transparency: unimportant is white
    assert torch.all(shown[:, ~inside] == 1.0)
    torch.testing.assert_close(shown[:, 6, 20], r.image[0][:, 6, 20] * a[6, 20] + 1 - a[6, 20])


def test_accentuation_needs_a_photo_and_checks_its_arguments(tiny_handle) -> None:
    cat = sample_image("cat")
    with pytest.raises(ValueError, match="need a start photo"):
        am.maximize(tiny_handle, "conv2:1", steps=2, size=32, accentuate=[True])
    with pytest.raises(ValueError, match="2 flags, the batch 1"):
        am.maximize(tiny_handle, "conv2:1", steps=2, size=32, start=cat, accentuate=[1, 0])
    with pytest.raises(KeyError, match="nearest"):
        am.maximize(tiny_handle, "conv2:1", steps=2, size=32, start=cat, accent_layer="conv9")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        am.maximize(tiny_handle, "conv2:1", steps=2, size=32, start=torch.full((3, 8, 8), 2.0))
    assert default_accent_layer(tiny_handle, O.channel("conv2", 0)) in ("conv1", "relu1", "pool")
    r = am.maximize(tiny_handle, "conv2:1", steps=1, size=32, start=cat, lr=1e-6)
    photo = start_pixels(tiny_handle, cat, 32, 1).cpu()
    assert (r.image - photo).abs().max() < 0.01  # the run started from the photo
    assert r.accent_layer == default_accent_layer(tiny_handle, O.channel("conv2", 1))


@pytest.mark.slow
def test_an_accentuated_photo_stays_closer_to_the_photo_than_plain_am(lite0) -> None:
    """Hamblin et al. 2023: from the same photo, the accentuated image keeps the photo (pixels
    and the earlier layer's features) far better than plain AM, and still drives the unit well
    above the photo (measured: activation 9.0 vs the photo's 1.2 and plain AM's 13.1, pixel
    distance 0.031 vs 0.066, feature distance at ``_blocks.4`` 0.24 vs 0.87)."""
    cat = sample_image("cat")
    obj = O.channel("_blocks.8", [12, 12])
    r = am.maximize(lite0, obj, steps=24, size=64, batch=2, start=cat, accentuate=[True, False])
    photo = start_pixels(lite0, cat, 64, 1).cpu()
    before = float(am.evaluate(lite0, O.channel("_blocks.8", 12), photo)[0])
    accented, plain = r.activation.tolist()
    assert accented > before + 3.0 and accented > 3 * before
    pixel = (r.image - photo).abs().flatten(1).mean(1)
    assert float(pixel[0]) < 0.7 * float(pixel[1])
    assert r.accent_layer == "_blocks.4"
    dist = [m["feature_distance"] for m in r.metrics]  # the batch's mean at every step
    x = torch.nn.functional.interpolate(
        torch.cat([photo, r.image]), (224, 224), mode="bilinear", align_corners=False
    )
    from cnnvis_widgets.core.blocks.hooks import capture, forward_to
    from cnnvis_widgets.core.regularizers import feature_distance

    with torch.no_grad(), capture(lite0, [r.accent_layer], stop_early=True) as acts:
        forward_to(lite0, lite0.normalize(x), acts, needs_logits=False)
    f = acts[r.accent_layer]
    feat = feature_distance(f[1:], f[:1])
    assert float(feat[0]) < 0.6 * float(feat[1]), feat
    assert len(dist) == 24 and plain > before  # plain AM from the photo rises too
