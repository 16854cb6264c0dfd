"""The Attribution widget's evidence: the live sanity check and the deletion/insertion curves."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.core.attribution import evidence_run as E
from cnnvis_widgets.core.attribution.faithfulness import faithfulness
from cnnvis_widgets.core.attribution.sanity import cascading_randomization
from cnnvis_widgets.core.blocks.runs import finish
from cnnvis_widgets.data import sample_image
from cnnvis_widgets.widgets.attribution import Attribution


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def panel_traits(w) -> list:
    return [p.get("trait") for p in w.panels]


def top1(handle, x) -> int:
    with torch.no_grad():
        return int(handle.model(x).argmax(1))


def test_top_blocks_are_the_ones_nearest_the_logits(tiny_handle) -> None:
    assert E.top_blocks(tiny_handle, 2) == ["fc", "conv2"]
    assert E.top_blocks(tiny_handle, 99) == ["fc", "conv2", "conv1"]


def test_sanity_check_streams_the_strip_chart_and_verdicts(tiny_handle) -> None:
    before = {k: v.clone() for k, v in tiny_handle.model.state_dict().items()}
    w = Attribution(tiny_handle, image="cat", auto_run=False)
    try:
        assert "sanity_strip" not in panel_traits(w)
        w.sanity_check = True
        w.sanity_blocks = 2
        assert {"sanity_strip", "sanity_saliency", "sanity_guided_backprop",
                "sanity_verdicts"} <= set(panel_traits(w))  # fmt: skip
        assert panel_traits(w)[-1] is None  # the progress panel stays last
        seen: list[int] = []
        badges: list[str] = []
        w.observe(lambda c: seen.append(len(c["new"])), names=["sanity_saliency"])
        w.observe(lambda c: badges.append(c["new"]), names=["sanity_verdicts"])
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
        assert seen[-3:] == [1, 2, 3]  # a point per stage, as the stages complete
        # a verdict per method at every stage, not only at the end
        assert len(badges) >= 3 and "randomizing the top blocks..." in badges[-3]
        x = tiny_handle.preprocess(sample_image("cat"))
        core = finish(
            cascading_randomization(tiny_handle, x, top1(tiny_handle, x),
                                    list(E.SANITY_METHODS), blocks=["fc", "conv2"])
        )  # fmt: skip
        for m in E.SANITY_METHODS:
            series = getattr(w, f"sanity_{m}")
            assert [p[0] for p in series] == [0, 1, 2] and series[0][1] == 1.0
            assert [p[1] for p in series] == pytest.approx(core.scores[m]["spearman_abs"], abs=1e-4)
        verdicts = w.sanity_verdicts.splitlines()
        assert len(verdicts) == 2
        for line, m in zip(verdicts, E.SANITY_METHODS, strict=True):
            passes = core.verdict(m, "spearman_abs").startswith("passes")  # the same judgement
            words = "map changes with the weights (passes)" if passes else "not about the model"
            rho = core.scores[m]["spearman_abs"]
            assert line.startswith(f"{A.METHODS[m][0]}: ") and words in line, line
            assert f"rank corr. {rho[1]:.2f} after randomizing 1 block (down to fc)" in line
            assert line.endswith(f"{rho[2]:.2f} after 2 blocks")
            assert badges[-2].splitlines()[verdicts.index(line)].startswith(line.split(";")[0])
        strip = png(w.sanity_strip)
        assert strip.shape[1] == 4 + 3 * (96 + 4)  # a tile per stage
        assert strip.shape[0] == 2 * (18 + 96 + 30 + 4)  # a row per method
        assert w.record()["result"]["sanity"]["saliency"] == core.scores["saliency"]["spearman_abs"]
        after = tiny_handle.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # the user's model untouched
    finally:
        w.close()


def _series(chart: dict) -> dict[str, list]:
    return {s["name"]: s for s in chart["series"]}


def test_faithfulness_curves_of_every_method_and_the_baselines_in_one_chart(tiny_handle) -> None:
    w = Attribution(tiny_handle, image="cat", faithfulness=True, curve_steps=8, auto_run=False)
    try:
        assert {"deletion_curve", "insertion_curve", "faithfulness_rows"} <= set(panel_traits(w))
        assert "sanity_strip" not in panel_traits(w)
        grown: list[int] = []
        w.observe(lambda c: grown.append(sum(len(s["points"]) for s in c["new"].get("series", []))),
                  names=["deletion_curve"])  # fmt: skip
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
        x = tiny_handle.preprocess(sample_image("cat"))
        c = top1(tiny_handle, x)
        maps = {m: A.attribute(tiny_handle, x, c, m) for m in A.METHODS}
        core = faithfulness(tiny_handle, x, c, maps, steps=8)
        order = ["guided_backprop", "saliency", "deconvnet", "grad_cam", "guided_grad_cam"]
        for kind, trait in [("deletion", "deletion_curve"), ("insertion", "insertion_curve")]:
            chart = getattr(w, trait)
            assert chart["y_range"] == [0, 1]
            assert [s["name"] for s in chart["series"]] == [*order, "random", "centre"]
            for name, series in _series(chart).items():
                assert series["dashed"] == (name in ("random", "centre"))
                assert [p[0] for p in series["points"]] == pytest.approx(core.fractions.tolist(),
                                                                         abs=1e-4)  # fmt: skip
                assert [p[1] for p in series["points"]] == pytest.approx(
                    core.curves[kind][name].tolist(), abs=1e-4
                ), (kind, name)
        assert grown == sorted(grown) and len(set(grown)) > 3  # the chart grows batch by batch
        assert [r["order"] for r in w.faithfulness_rows] == [*order, "random", "centre"]
        for row in w.faithfulness_rows:
            assert row["deletion"] == pytest.approx(core.auc("deletion")[row["order"]], abs=1e-4)
            assert row["insertion"] == pytest.approx(core.auc("insertion")[row["order"]], abs=1e-4)
        w.curve_methods = "shown"
        assert w.wait(timeout=120) and w.error == "", w.error
        w.method = "saliency"  # the kept curves are reused: saliency's and the baselines'
        assert w.wait(timeout=120) and w.error == "", w.error
        assert [r["order"] for r in w.faithfulness_rows] == ["saliency", "random", "centre"]
        assert w.faithfulness_rows[0]["deletion"] == pytest.approx(
            core.auc("deletion")["saliency"], abs=1e-4
        )
        w.faithfulness = False
        w.run()
        assert w.wait(timeout=120)
        assert w.deletion_curve == {} and w.faithfulness_rows == []
        assert "deletion_curve" not in panel_traits(w)
    finally:
        w.close()


def test_occlusion_and_integrated_gradients_are_computed_only_when_chosen(tiny_handle) -> None:
    from cnnvis_widgets.core import imaging as I
    from cnnvis_widgets.core.attribution.integrated_gradients import integrated_gradients
    from cnnvis_widgets.core.attribution.occlusion import occlusion

    w = Attribution(tiny_handle, image="cat", auto_run=False)
    try:
        assert [o[1] for o in w.controls[3]["options"]][-2:] == [
            "occlusion",
            "integrated_gradients",
        ]
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
        shown = w._shown
        assert shown.map("occlusion") is None and shown.map("integrated_gradients") is None
        x = tiny_handle.preprocess(sample_image("cat"))
        c = top1(tiny_handle, x)
        expected = {
            "occlusion": occlusion(tiny_handle, x, c).score[0],
            "integrated_gradients": integrated_gradients(tiny_handle, x, c).attributions[0],
        }
        for method, attr in expected.items():
            w.method = method  # not cached: a run computes it
            assert w.wait(timeout=120) and w.error == "", w.error
            assert w._shown.map(method) is not None
            assert np.array_equal(png(w.heatmap), png(I.encode(I.heatmap(attr.cpu()), "png")))
            assert w.record()["settings"]["method"] == method
        assert w._shown.map("occlusion") is not None  # kept: switching back is free
    finally:
        w.close()
