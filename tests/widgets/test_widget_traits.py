"""Every widget's synced traits: numbers bounded (validator and control from one range), no path
the browser could set."""

from __future__ import annotations

import math

import pytest
import traitlets

from cnnvis_widgets.widgets import _base
from cnnvis_widgets.widgets.activation_max import ActivationMaximization
from cnnvis_widgets.widgets.adversarial import Adversarial
from cnnvis_widgets.widgets.atlas import Atlas
from cnnvis_widgets.widgets.attribution import Attribution
from cnnvis_widgets.widgets.deconvnet import DeconvNet
from cnnvis_widgets.widgets.dissection import Dissection
from cnnvis_widgets.widgets.invariance import Invariance
from cnnvis_widgets.widgets.inversion import Inversion
from cnnvis_widgets.widgets.training import Training

MAKERS = {
    "ActivationMaximization": lambda h: ActivationMaximization(h, layer="conv2", size=32),
    "Inversion": lambda h: Inversion(h, layer="conv2", size=32),
    "DeconvNet": lambda h: DeconvNet(h, layer="conv2", n_images=16),
    "Attribution": lambda h: Attribution(h, image="cat"),
    "Dissection": lambda h: Dissection(h, layers=["relu2"], n_images=16, image_size=32),
    "Adversarial": lambda h: Adversarial(h),
    "Atlas": lambda h: Atlas(h),
    "Invariance": lambda h: Invariance(h, steps=3),
    "Training": lambda h: Training(h),
}


@pytest.fixture(params=sorted(MAKERS))
def widget(request, tiny_handle):
    w = MAKERS[request.param](tiny_handle)
    yield w
    w.close()


def numeric_settings(w) -> list[str]:
    """Int/Float traits a user sets: in a control or among the recorded settings."""
    names = {c["trait"] for c in w.controls if c.get("trait")} | set(w._settings())
    names |= set(w._restart_traits) | set(w._live_traits)
    out = []
    for n in sorted(names):
        trait = w.traits().get(n)
        if isinstance(trait, (traitlets.Int, traitlets.Float)) and trait.metadata.get("sync"):
            out.append(n)
    return out


def test_every_numeric_setting_refuses_absurd_values_naming_a_range(widget) -> None:
    names = numeric_settings(widget)
    assert names, "no numeric setting found"
    for name in names:
        before = getattr(widget, name)
        bad = [10**12, -(10**12)]
        if isinstance(widget.traits()[name], traitlets.Float):
            bad += [math.nan, math.inf]
        for value in bad:
            with pytest.raises(traitlets.TraitError) as info:
                setattr(widget, name, value)
            text = str(info.value)
            assert any(part in text for part in name.split("_")), (name, text)
            assert any(w in text for w in ("between", "valid", "range")), (name, text)
            assert getattr(widget, name) == before or (math.isnan(before) and math.isnan(before))


def test_controls_take_their_range_from_the_trait(widget) -> None:
    for spec in widget.controls:
        name = spec.get("trait")
        if spec.get("kind") not in ("slider", "int", "float") or not name:
            continue
        trait = widget.traits()[name]
        if isinstance(trait, _base._Bounded):
            assert (spec["min"], spec["max"]) == (trait.low, trait.high), name
        else:  # a range that follows other settings (a layer's units): given by a trait
            assert "max_trait" in spec or "max" not in spec, (name, spec)


def test_no_synced_trait_names_a_file_path(widget) -> None:
    """A trait the browser can set never names a path on the kernel's machine (in a Voila app
    any visitor could read or write files there): paths are Python-only (not synced)."""
    for name in widget.trait_names(sync=True):
        trait = widget.traits()[name]
        if isinstance(trait, traitlets.Enum):  # a choice among fixed values
            continue
        help_text = (trait.help or "").lower()
        hits = [w for w in ("path", "dir", "folder", "file") if w in name.lower()]
        hits += [w for w in ("path", "folder", "directory") if w in help_text]
        assert not hits, f"{type(widget).__name__}.{name} ({help_text!r}) mentions {hits}"


ADVANCED = {
    "ActivationMaximization": {"Regularizers", "Transforms"},
    "Inversion": {"Priors"},
    "DeconvNet": {"Dataset"},
    "Dissection": {"Probe set"},
    "Adversarial": {"Inside the network"},
    "Atlas": {"Settings"},
    "Training": {"Label randomization"},
}


def test_advanced_groups_start_collapsed(widget) -> None:
    """The first control of a group carries the group's ``collapsed`` flag (js/PROTOCOL.md)."""
    first: dict[str, dict] = {}
    for spec in widget.controls:
        first.setdefault(spec.get("group", ""), spec)
    collapsed = {g for g, spec in first.items() if spec.get("collapsed")}
    assert collapsed == ADVANCED.get(type(widget).__name__, set())
    assert all(not s.get("collapsed") for s in widget.controls if s not in first.values())


def test_status_before_the_first_run_is_meaningful(widget) -> None:
    assert widget.status == _base.STATUS_AUTO  # auto_run: the run starts with the view
    widget.auto_run = False
    assert widget.status == "ready: press Run"
