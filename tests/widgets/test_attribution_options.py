"""The Attribution widget's method options: occlusion's patch, stride and score, integrated
gradients' steps and baseline with the completeness check in the text, SmoothGrad."""

from __future__ import annotations

import pytest
import torch
import traitlets as t

from cnnvis_widgets.core import attribution as A
from cnnvis_widgets.data import sample_image
from cnnvis_widgets.widgets.attribution import Attribution


def _control(w, trait: str) -> dict:
    return next(c for c in w.controls if c.get("trait") == trait)


def test_the_options_are_settings_that_reach_the_core_methods(tiny_handle) -> None:
    opts = dict(occlusion_patch=8, occlusion_stride=4, occlusion_score="probability")
    w = Attribution(tiny_handle, image="cat", auto_run=False, method="occlusion", **opts)
    try:
        patch = _control(w, "occlusion_patch")
        assert (patch["label"], patch["min"], patch["max"]) == ("Patch (px)", 1, 512)
        assert patch["visible_when"] == {"trait": "method", "in": ["occlusion"]}
        assert _control(w, "ig_steps")["visible_when"]["in"] == ["integrated_gradients"]
        assert _control(w, "smoothgrad_samples")["visible_when"] == {
            "trait": "smoothgrad", "in": [True]
        }  # fmt: skip
        assert {"occlusion_patch", "ig_steps", "smoothgrad"} <= set(w._restart_traits)
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
        x = tiny_handle.preprocess(sample_image("cat"))
        with torch.no_grad():
            c = int(tiny_handle.model(x).argmax(1))
        want = A.attribute(tiny_handle, x, c, "occlusion", patch=8, stride=4, score="probability")
        assert torch.equal(w._shown.map("occlusion"), want[0])
        assert "8 px grey patch, 4 px stride, drop of the class probability" in w.method_notes
        assert w.record()["settings"]["occlusion_patch"] == 8

        w.method = "integrated_gradients"
        w.ig_steps, w.ig_baseline = 4, "blur"
        assert w.wait(timeout=120) and w.error == "", w.error
        e = A.explain(tiny_handle, x, c, "integrated_gradients", steps=4, baseline="blur")
        assert torch.equal(w._shown.map("integrated_gradients"), e.attributions[0])
        assert e.completeness is not None
        gap = float(e.completeness.relative_gap()[0])
        assert (
            f"gap {gap:.1%}" in w.method_notes and "4 steps from a blurred copy" in w.method_notes
        )
        rec = w.record()["result"]["completeness"]
        assert rec["gap"] == pytest.approx(gap, rel=1e-5)

        w.method = "saliency"
        assert w.wait(timeout=120) and w.error == "", w.error
        plain = w._shown.map("saliency")
        w.smoothgrad, w.smoothgrad_samples = True, 3
        w.run()
        assert w.wait(timeout=120) and w.error == "", w.error
        smooth = A.attribute(tiny_handle, x, c, "saliency", smoothgrad=True, samples=3)
        assert torch.allclose(w._shown.map("saliency"), smooth[0], atol=1e-6)
        assert not torch.allclose(w._shown.map("saliency"), plain)
        assert "SmoothGrad: 3 noisy copies" in w.method_notes

        with pytest.raises(t.TraitError, match="between 1 and 512"):
            w.occlusion_patch = 0
        w.occlusion_patch = 64  # larger than the 32 px photo: the run says so, nothing is lost
        w.method = "occlusion"
        assert w.wait(timeout=120)
        assert "larger than the image" in w.error
        assert w._shown.map("integrated_gradients") is not None
    finally:
        w.close()
