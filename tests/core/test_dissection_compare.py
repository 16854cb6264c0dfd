"""Comparing two architectures: layers matched by stage, dissections paired by position."""

from __future__ import annotations

import pytest

from cnnvis_widgets import load_model
from cnnvis_widgets.core.dissection import (
    compare_dissections,
    compare_models,
    dissect,
    layers_per_model,
    matching_layers,
)
from cnnvis_widgets.core.dissection.compare import stages
from cnnvis_widgets.data.concepts import probe_set
from cnnvis_widgets.models.layers import dissection_layers


@pytest.fixture(scope="module")
def lite2_arch():
    """Lite2's architecture (random weights: no optional package needed)."""
    return load_model("efficientnet_lite2", weights=None, device="cpu")


def test_stages_and_matching_layers_of_lite0_and_lite2(lite0, lite2_arch) -> None:
    assert [len(s) for s in stages(lite0)] == [1, 2, 2, 3, 3, 4, 1]
    assert [len(s) for s in stages(lite2_arch)] == [1, 3, 3, 4, 4, 5, 1]
    layers = dissection_layers(lite0)
    assert layers == ["_blocks.1", "_blocks.6", "_blocks.10", "_blocks.15"]
    # same stage, same relative place: first of stage 1, middle of stage 3, last of stages 4, 6
    there = matching_layers(lite0, lite2_arch, layers)
    assert there == ["_blocks.1", "_blocks.9", "_blocks.14", "_blocks.20"]
    assert matching_layers(lite2_arch, lite0, there) == layers
    for a, b in zip(layers, there):  # the same output widths and resolutions at 224/260 px
        assert lite0.layer(a).channels <= lite2_arch.layer(b).channels
    inside = ["_blocks.3._act1", "_conv_head", "_act0"]
    assert matching_layers(lite0, lite2_arch, inside) == ["_blocks.4._act1", "_conv_head", "_act0"]
    with pytest.raises(KeyError):
        matching_layers(lite0, lite2_arch, ["_blocks.99"])


def test_layers_per_model_keeps_names_for_one_architecture(lite0, lite2_arch) -> None:
    twin = load_model(lite0, weights=None)
    per = layers_per_model([lite0, twin, lite2_arch], ["_blocks.6"])
    assert per == [["_blocks.6"], ["_blocks.6"], ["_blocks.9"]]
    # the other way round, two neighbours of the deeper network meet in one of the shallower
    with pytest.raises(ValueError, match="_blocks.8 -> _blocks.6, _blocks.9 -> _blocks.6"):
        layers_per_model([lite2_arch, lite0], ["_blocks.8", "_blocks.9"])


def test_compare_models_pairs_matching_layers(lite0, lite2_arch) -> None:
    probe = probe_set(6, size=48, seed=2)
    results, cmp = compare_models([lite0, lite2_arch], ["_blocks.6"], probe, batch_size=6)
    assert [r.layers for r in results] == [["_blocks.6"], ["_blocks.9"]]
    assert cmp.model_layers == [["_blocks.6"], ["_blocks.9"]]
    assert cmp.model_units == [[80], [88]] and cmp.paired_by_position
    row = cmp.rows()[0]
    n0, n1 = cmp.names
    assert row["layer"] == "_blocks.6" and row["units"] == 80
    assert row[f"{n1} layer"] == "_blocks.9" and row[f"{n1} units"] == 88
    assert row[n0] == results[0].summary()[0]["interpretable"]
    assert row[n1] == results[1].summary()[0]["interpretable"]
    assert "_blocks.9" in repr(cmp) and f"{n1} layer" in cmp.to_csv().splitlines()[0]
    # two models of different names are paired by position; by name only on request
    assert compare_dissections(results).model_layers == cmp.model_layers
    with pytest.raises(ValueError, match="share no layer"):
        compare_dissections(results, align="name")
    more = dissect(lite0, ["_blocks.6", "_blocks.10"], probe, batch_size=6)
    with pytest.raises(ValueError, match="matching_layers"):
        compare_dissections([more, results[1]])
