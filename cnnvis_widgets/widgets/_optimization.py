"""What the optimization widgets (ActivationMaximization, Inversion) share.

Both optimize an image from a recipe of the literature (a core method's ``PRESETS``) with
settings the loop reads at every step. The settings they both have are declared here once
(:func:`preset_setting`, :func:`steps_setting`, :func:`lr_setting`, :func:`size_setting`,
:func:`seed_setting`; a factory call in the class body keeps the controls in declaration order),
and :class:`PresetSliders` moves the sliders when the preset changes and the running settings
when a live slider moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import traitlets as t

from ..core.blocks.settings import field_names, knobs, pick_preset
from ._base import BoundedFloat, BoundedInt, setting

__all__ = [
    "PresetSliders",
    "choice_setting",
    "live_slider",
    "live_sliders",
    "lr_setting",
    "preset_setting",
    "seed_setting",
    "size_setting",
    "steps_setting",
]


def preset_setting(presets: Mapping[str, Any], default: str, group: str, **control: Any):
    """The ``preset`` setting: a recipe of ``presets`` (restarts the run; sets the sliders)."""
    return setting(
        t.Enum(list(presets), default, help="Recipe from the literature; sets the sliders below."),
        "select", "Preset", group, restart=True, options=[[k, k] for k in presets], **control,
    )  # fmt: skip


def steps_setting(default: int, group: str, help: str, **control: Any):
    """The ``steps`` setting: the number of optimization steps (live, log slider)."""
    return setting(
        BoundedInt(default, 1, 100_000, help=help),
        "slider", "Iterations", group, live=True, log=True, step=1, **control,
    )  # fmt: skip


def lr_setting(default: float, minimum: float, group: str, help: str, **control: Any):
    """The ``lr`` setting: the learning rate, ``minimum`` to 10 (live, log slider)."""
    return setting(
        BoundedFloat(default, minimum, 10.0, help=help),
        "slider", "Learning rate", group, live=True, log=True, **control,
    )  # fmt: skip


def size_setting(group: str, help: str):
    """The ``size`` setting: the side of the image, 16 to 1024 px, 128 by default."""
    return setting(
        BoundedInt(128, 16, 1024, help=help),
        "slider", "Size (px)", group, restart=True, step=16,
    )  # fmt: skip


def seed_setting(group: str):
    """The ``seed`` setting: the same seed repeats the run."""
    return setting(
        BoundedInt(0, 0, 2**31 - 1, help="Random seed: the same seed repeats the run."),
        "int", "Seed", group, restart=True,
    )  # fmt: skip


def live_slider(trait: t.TraitType, label: str, group: str, step: float, **control: Any):
    """A slider the running loop reads at every step (a regularizer, a transform, a prior)."""
    return setting(trait, "slider", label, group, live=True, step=step, **control)


def live_sliders(
    settings: Any, group: str, names: str, *, collapsed: bool = False, **control: Any
) -> tuple[t.TraitType, ...]:
    """Live sliders for the fields ``names`` (space-separated) of a core settings dataclass,
    from the fields' own :func:`~cnnvis_widgets.core.blocks.settings.knob` declarations (default,
    range, help, label, step): a setting's range and help are written once, in core.
    ``collapsed`` applies to the group (its first control); ``control`` to every slider."""
    declared = knobs(settings)
    out = []
    for i, name in enumerate(names.split()):
        default, k = declared[name]
        bounded = BoundedInt if isinstance(default, int) else BoundedFloat
        trait = bounded(default, k.low, k.high, help=k.help)
        first = {"collapsed": True} if collapsed and i == 0 else {}
        out.append(live_slider(trait, k.label, group, k.step, **first, **control))
    return tuple(out)


def choice_setting(
    choices: dict[str, str], default: str, help: str, kind: str, label: str, group: str, **kw: Any
):
    """A setting with a closed set of values, ``{value: label}`` (the trait's values and the
    control's options from one table)."""
    return setting(
        t.Enum(list(choices), default, help=help), kind, label, group,
        options=[[lab, v] for v, lab in choices.items()], **kw,
    )  # fmt: skip


class PresetSliders:
    """Mixin for a widget with a ``preset`` trait over ``_presets`` (a core method's
    ``PRESETS``) and a ``_live`` settings object that the running loop reads (None between runs).

    The subclass defines :meth:`_preset_values`; a new preset sets those traits, and a live
    trait that names a field of the running settings updates it through ``Settings.update``
    (the settings' own rules apply, e.g. AM's second jitter follows the first).
    """

    _presets: Mapping[str, Any] = {}
    _live: Any = None  # a settings dataclass with update() (blocks.settings.Settings)

    def _preset_values(self, name: str) -> dict[str, Any]:  # pragma: no cover - subclasses
        """The trait values that the preset ``name`` sets."""
        raise NotImplementedError

    def _known_preset(self, name: str) -> str:
        """``name`` when it is a preset, else a ``TraitError`` naming the choices."""
        try:
            pick_preset(self._presets, name)
        except KeyError as exc:
            raise t.TraitError(exc.args[0]) from None
        return name

    def _on_preset(self, change: dict) -> None:
        with self.hold_sync(), self.hold_trait_notifications():  # type: ignore[attr-defined]
            for k, v in self._preset_values(change["new"]).items():
                setattr(self, k, v)

    def _on_live_trait(self, change: dict) -> None:
        live = self._live
        if live is not None and change["name"] in field_names(live):
            live.update(**{change["name"]: change["new"]})
