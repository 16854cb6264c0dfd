"""One way to change a method's settings and one way to start from a preset.

A method's settings are a dataclass that mixes in :class:`Settings`: ``update(**fields)`` checks
each name (``TypeError`` listing the valid ones) and each value (through
:func:`cnnvis_widgets.limits.setting_value`, plus the class's own :meth:`Settings.check`);
:func:`from_preset` copies a preset's settings and applies explicit values on top, so an
explicit setting always wins over the preset.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo(Settings):
...     steps: int = 10
...     lr: float = 0.1
>>> Demo().update(steps=20)
Demo(steps=20, lr=0.1)
>>> base = Demo(steps=5)
>>> from_preset(base, lr=0.5), base
(Demo(steps=5, lr=0.5), Demo(steps=5, lr=0.1))
>>> Demo().update(step=3)
Traceback (most recent call last):
...
TypeError: unknown setting 'step'; valid: lr, steps
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Settings", "Knob", "knob", "knobs", "from_preset", "pick_preset", "field_names"]

T = TypeVar("T", bound="Settings")
P = TypeVar("P")


def field_names(settings: Any) -> set[str]:
    """The field names of a settings dataclass (an instance or the class)."""
    return {f.name for f in dataclasses.fields(settings)}


@dataclass(frozen=True)
class Knob:
    """How a settings field is shown where it can be turned (a widget's slider): its range, its
    help, its label and its step. Declared once, on the field (:func:`knob`)."""

    low: float
    high: float
    help: str
    label: str
    step: float


def knob(default: Any, low: float, high: float, help: str, label: str, step: float) -> Any:
    """A dataclass field with its :class:`Knob` (range ``low..high``, help, label, step).

    >>> @dataclass
    ... class Demo(Settings):
    ...     blur: float = knob(0.0, 0.0, 8.0, "Gaussian blur width (pixels).", "Blur", 0.05)
    >>> Demo().blur, knobs(Demo)["blur"][1].label
    (0.0, 'Blur')
    """
    return dataclasses.field(default=default, metadata={"knob": Knob(low, high, help, label, step)})


def knobs(settings: Any) -> dict[str, tuple[Any, Knob]]:
    """``{field: (default, Knob)}`` of the fields of a settings dataclass declared with
    :func:`knob`, in field order."""
    return {
        f.name: (f.default, f.metadata["knob"])
        for f in dataclasses.fields(settings)
        if "knob" in f.metadata
    }


class Settings:
    """Mixin for settings dataclasses: :meth:`update` with checked names and values."""

    def check(self, name: str, value: Any) -> Any:
        """Check one value before it is set (override for fields with a closed set of values);
        returns the value to set."""
        return value

    def update(self: T, **kwargs: Any) -> T:
        """Set fields by name (``TypeError`` for unknown names); returns self."""
        from ...limits import setting_value

        names = field_names(self)
        for k, v in kwargs.items():
            if k not in names:
                raise TypeError(f"unknown setting {k!r}; valid: {', '.join(sorted(names))}")
            v = self.check(k, v)
            setattr(self, k, setting_value(getattr(self, k), v, k))
        return self


def from_preset(base: T, **explicit: Any) -> T:
    """A copy of ``base`` (a preset's settings) with ``explicit`` values set on top; ``None``
    values are ignored (an argument left at its default)."""
    copy: T = dataclasses.replace(base)  # type: ignore[type-var]
    return copy.update(**{k: v for k, v in explicit.items() if v is not None})


def pick_preset(presets: Mapping[str, P], name: str) -> P:
    """``presets[name]``, or a ``KeyError`` naming the choices."""
    if name not in presets:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]
