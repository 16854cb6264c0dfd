"""The Dissection widget comparing two architectures: each dissected at its own matching layers."""

from __future__ import annotations

from cnnvis_widgets import load_model
from cnnvis_widgets.widgets.dissection import Dissection


def test_lite0_compared_with_lite2_at_matching_layers(lite0) -> None:
    lite2 = load_model("efficientnet_lite2", weights=None, device="cpu")  # no package needed
    w = Dissection(lite0, layers=["_blocks.6"], compare=lite2, n_images=6, image_size=32,
                   batch_size=6)  # fmt: skip
    try:
        assert w._job is None and w.compare_handle is lite2
        w.run()
        assert w.wait(timeout=300)
        a, b = w.result, w.compare_result
        assert a is not None and b is not None
        # Lite2's _blocks.6 is another stage: the middle block of stage 3 is _blocks.9 there
        assert a.layers == ["_blocks.6"] and b.layers == ["_blocks.9"]
        assert w.compare_bars == [
            ["_blocks.6", a.summary()[0]["interpretable"], b.summary()[0]["interpretable"]]
        ]
        assert len(w.rows) == 80
        w.view_model = "compare"
        assert len(w.rows) == 88 and "_blocks.9" in w.details
        assert w.to_csv().count("\n") == 1 + 80 + 88
    finally:
        w.close()
