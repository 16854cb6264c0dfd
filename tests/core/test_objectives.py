"""Objectives: values on known activations, composition, shorthand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnvis_widgets.core import objectives as O


def acts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(3, 4, 5, 6, generator=g),
        O.LOGITS: torch.randn(3, 10, generator=g),
    }


def test_channel_neuron_logit_values() -> None:
    a = acts()
    assert torch.allclose(O.channel("a", 2)(a), a["a"][:, 2].mean(dim=(1, 2)))
    assert torch.allclose(O.neuron("a", 1)(a), a["a"][:, 1, 2, 3])
    assert torch.allclose(O.neuron("a", 1, y=0, x=5)(a), a["a"][:, 1, 0, 5])
    assert torch.allclose(O.class_logit(7)(a), a[O.LOGITS][:, 7])
    per_image = O.channel("a", [0, 1, 3])(a)
    expected = torch.stack([a["a"][i, u].mean() for i, u in enumerate([0, 1, 3])])
    assert torch.allclose(per_image, expected)
    assert torch.allclose(O.layer("a")(a), a["a"].pow(2).mean(dim=(1, 2, 3)))


def test_composition_arithmetic_and_layers() -> None:
    a = acts()
    c2, c3 = O.channel("a", 2), O.channel("a", 3)
    combo = 2 * c2 - c3 + 1.5
    assert torch.allclose(combo(a), 2 * c2(a) - c3(a) + 1.5)
    both = c2 * O.class_logit(1)
    assert torch.allclose(both(a), c2(a) * a[O.LOGITS][:, 1])
    assert set(both.layers) == {"a", O.LOGITS}
    assert both.needs_logits and not c2.needs_logits
    assert (c2 + c3).units == (("a", 2), ("a", 3))


def test_diversity_matches_pairwise_gram_cosine() -> None:
    a = acts()
    value = O.diversity("a")(a)
    f = a["a"].reshape(3, 4, -1)
    grams = [F.normalize((x @ x.T).flatten(), dim=0) for x in f]
    total = sum(float(grams[i] @ grams[j]) for i in range(3) for j in range(3) if i != j)
    assert value.shape == (3,)
    assert float(value.sum()) == pytest.approx(-total / 3, rel=1e-5)
    assert float(O.diversity("a")({"a": a["a"][:1]}).sum()) == 0.0


def test_shorthand_parsing() -> None:
    obj = O.as_objective("_blocks.4:7")
    assert obj.layers == ("_blocks.4",) and obj.units == (("_blocks.4", 7),)
    assert O.as_objective("logit:281").classes == (281,)
    with pytest.raises(ValueError, match="layer:unit"):
        O.as_objective("_blocks.4")
    with pytest.raises(TypeError):
        O.as_objective(3.5)  # type: ignore[arg-type]


def _mean_pairwise_similarity(handle, layer: str, pixels: torch.Tensor) -> float:
    """Mean cosine similarity of the Gram matrices of every pair of images (as diversity)."""
    from cnnvis_widgets.core.hooks import capture, forward_to

    with torch.no_grad(), capture(handle, [layer], stop_early=True) as acts:
        forward_to(handle, handle.normalize(pixels), acts, needs_logits=False)
        f = acts[layer].flatten(2)
    grams = F.normalize(torch.bmm(f, f.transpose(1, 2)).flatten(1), dim=1)
    sim = grams @ grams.T
    b = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / (b * (b - 1)))


def test_adding_diversity_lowers_the_similarity_of_the_batch(tiny_handle) -> None:
    from cnnvis_widgets.core import activation_max as am

    same = O.channel("conv2", [3] * 4)

    def run(obj, **kw):
        r = am.maximize(tiny_handle, obj, batch=4, steps=40, size=32, seed=1, **kw)
        return _mean_pairwise_similarity(tiny_handle, "conv2", r.image)

    plain = run(same)
    assert run(same + 0.5 * O.diversity("conv2")) < plain - 0.01  # the documented example
    assert run(same - 0.5 * O.diversity("conv2")) > plain  # the old example rewarded similarity
    assert run(same, diversity=0.5) < plain - 0.01  # the AM setting adds it the same way
