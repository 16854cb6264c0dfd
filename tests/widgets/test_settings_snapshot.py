"""Each setting is declared once: the controls sent to the front end, the live/restart sets and
the recorded settings derived from the declarations are exactly what the hand-written tables of
the integration branch produced (``data/settings_snapshot.json``, made by running this file as a
script on that code: ``python tests/widgets/test_settings_snapshot.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).parent / "data" / "settings_snapshot.json"


def _makers():
    from cnnvis_widgets.widgets.activation_max import ActivationMaximization
    from cnnvis_widgets.widgets.adversarial import Adversarial
    from cnnvis_widgets.widgets.atlas import Atlas
    from cnnvis_widgets.widgets.attribution import Attribution
    from cnnvis_widgets.widgets.deconvnet import DeconvNet
    from cnnvis_widgets.widgets.dissection import Dissection
    from cnnvis_widgets.widgets.inversion import Inversion

    return {
        "ActivationMaximization": lambda h: ActivationMaximization(h, layer="conv2", size=32),
        "ActivationMaximization/class": lambda h: ActivationMaximization(
            h, layer="conv2", objective="class", preset="simonyan"
        ),
        "Inversion": lambda h: Inversion(h, layer="conv2", size=32),
        "DeconvNet": lambda h: DeconvNet(h, layer="conv2", n_images=16),
        "Attribution": lambda h: Attribution(h, image="cat"),
        "Dissection": lambda h: Dissection(h, layers=["relu2"], n_images=16, image_size=32),
        "Dissection/compare": lambda h: Dissection(
            h, layers=["relu2"], n_images=16, image_size=32, compare="random"
        ),
        "Adversarial": lambda h: Adversarial(h),
        "Adversarial/l2": lambda h: Adversarial(h, method="pgd-l2"),
        "Atlas": lambda h: Atlas(h),
    }


def snapshot(w) -> dict:
    """What a widget's setting declarations amount to (JSON-able, order kept where it counts)."""
    return {
        "controls": json.loads(json.dumps(w.controls)),
        "restart": sorted(w._restart_traits),
        "live": sorted(w._live_traits),
        "settings": sorted(w._settings()),
        "values": json.loads(json.dumps(w._settings())),
    }


def _tiny():
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from conftest import make_tiny

    from cnnvis_widgets import load_model

    return load_model(make_tiny(), device="cpu", input_size=32)


@pytest.mark.parametrize("name", sorted(_makers()))
def test_settings_match_the_hand_written_tables(name, tiny_handle) -> None:
    expected = json.loads(SNAPSHOT.read_text())[name]
    w = _makers()[name](tiny_handle)
    try:
        got = snapshot(w)
    finally:
        w.close()
    assert [c.get("trait") for c in got["controls"]] == [
        c.get("trait") for c in expected["controls"]
    ]
    for g, e in zip(got["controls"], expected["controls"], strict=True):
        assert g == e, g.get("trait")
    assert got == expected


def test_one_declaration_gives_control_validator_live_restart_and_record(tiny_handle) -> None:
    import traitlets as t

    from cnnvis_widgets.widgets._base import BoundedInt, CnnvisWidget, setting

    class Demo(CnnvisWidget):
        fact = t.Int(0, help="read-only").tag(sync=True)
        b = setting(BoundedInt(3, 1, 9, help="b"), "slider", "B", "G", live=True, step=1)
        a = setting(t.Unicode("x", help="a"), "text", "A", "G", restart=True)
        c = setting(t.Int(0, help="no control"), restart=True)

        def __init__(self, **kwargs):
            self._check_arguments(kwargs, settings_only=True)
            self.handle = tiny_handle
            super().__init__(**kwargs)

    w = Demo(b=4, auto_run=False)
    try:
        assert w.controls == [
            {"trait": "b", "kind": "slider", "label": "B", "group": "G", "step": 1, "min": 1,
             "max": 9},
            {"trait": "a", "kind": "text", "label": "A", "group": "G"},
        ]  # fmt: skip
        assert Demo._live_traits == ("b",) and Demo._restart_traits == ("a", "c")
        assert w._settings() == {"a": "x", "b": 4, "c": 0}
        with pytest.raises(t.TraitError, match="between 1 and 9"):
            w.b = 10
        with pytest.raises(TypeError, match=r"unknown argument\(s\) 'fact'; valid: .*\ba\b"):
            Demo(fact=1)  # a read-only fact, not a setting
        with pytest.raises(TypeError, match="unknown argument"):
            Demo(bb=1)
    finally:
        w.close()


def test_a_widget_refuses_a_read_only_trait_as_argument(tiny_handle) -> None:
    from cnnvis_widgets.widgets.activation_max import ActivationMaximization

    with pytest.raises(TypeError, match="unknown argument"):
        ActivationMaximization(tiny_handle, layer="conv2", unit_max=3)


if __name__ == "__main__":  # regenerate (only on the code whose tables are the reference)
    import torch

    torch.set_num_threads(1)
    h = _tiny()
    out = {}
    for key, make in _makers().items():
        w = make(h)
        out[key] = snapshot(w)
        w.close()
    SNAPSHOT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print("wrote", SNAPSHOT)
