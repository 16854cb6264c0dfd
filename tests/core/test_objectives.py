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
