"""Settings declared once: :func:`setting` (the trait with its range and help, its control in the
front end, whether it acts live or restarts the run) and the ranged traits :class:`BoundedInt`
and :class:`BoundedFloat`. :class:`DeclaredSettings`, mixed into the widget base, derives from
the declarations the controls sent to the front end (with each numeric control's range taken
from its trait), the live and restart sets, ``record()``'s settings and the one check of
unknown keyword arguments."""

from __future__ import annotations

import itertools
import math
from typing import Any

import traitlets as t

__all__ = ["BoundedFloat", "BoundedInt", "DeclaredSettings", "button", "seed_setting", "setting"]


class _Bounded:
    """Mixin of :class:`BoundedInt` / :class:`BoundedFloat`: the range lives in the trait
    declaration, the validator names it, and the front end's control takes it from there."""

    low: float
    high: float

    def _check(self, obj: Any, value: Any) -> Any:
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (finite and self.low <= value <= self.high):  # NaN fails every comparison
            name = self.name  # type: ignore[attr-defined]
            raise t.TraitError(
                f"{name} must be between {self.low:g} and {self.high:g}, got {value}"
            )
        return value


class BoundedInt(_Bounded, t.Int):
    """An ``Int`` trait with a range: ``BoundedInt(12, 0, 64, help=...)``."""

    def __init__(self, default_value: int, low: int, high: int, **kwargs: Any) -> None:
        self.low, self.high = low, high
        super().__init__(default_value, **kwargs)

    def validate(self, obj: Any, value: Any) -> int:
        if hasattr(value, "item") and not isinstance(value, (int, float)):
            value = value.item()  # numpy / torch scalars
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(obj, value)
        return self._check(obj, int(value))


class BoundedFloat(_Bounded, t.Float):
    """A ``Float`` trait with a range (NaN and infinities refused): ``BoundedFloat(0.1, 0, 1)``."""

    def __init__(self, default_value: float, low: float, high: float, **kwargs: Any) -> None:
        self.low, self.high = float(low), float(high)
        super().__init__(default_value, **kwargs)

    def validate(self, obj: Any, value: Any) -> float:
        if hasattr(value, "item") and not isinstance(value, (int, float)):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(obj, value)
        return self._check(obj, float(value))


_ORDER = itertools.count()  # declaration order of settings: the order of the controls


def setting(
    trait: t.TraitType,
    kind: str | None = None,
    label: str | None = None,
    group: str | None = None,
    *,
    live: bool = False,
    restart: bool = False,
    sync: bool = True,
    record: bool = True,
    **control: Any,
) -> t.TraitType:
    """Declare a widget setting once: the trait (its range and help), its control and its effect.

    Parameters
    ----------
    trait : TraitType
        The trait, with its default, range (:class:`BoundedInt`, :class:`BoundedFloat`) and help.
    kind : str, optional
        The front end's control: ``slider``, ``int``, ``float``, ``select``, ``search``,
        ``toggle``, ``checkbox``, ``text``, ``upload``, ``button``... None: a setting without a
        control (still synced, recorded and checked).
    label, group : str, optional
        The control's label and the group (section) it is drawn in.
    live : bool
        The running algorithm reads the value at every step (no restart).
    restart : bool
        A change cancels the current run and starts a new one.
    sync : bool
        False for a setting the browser must not set (a path on the kernel's machine, rule 8).
    record : bool
        False leaves it out of ``record()["settings"]`` (a widget may add it when it counts).
    **control
        Further keys of the control spec, as the front end reads them: ``step``, ``log``,
        ``format`` (e.g. ``"fraction255"``), ``collapsed``, ``visible_when``, ``options``,
        ``options_trait``, ``max_trait``, ``help``... A numeric control's ``min``/``max`` come
        from the trait's range.

    Returns
    -------
    TraitType
        The trait, tagged ``sync=True`` with the declaration in its metadata.

    Examples
    --------
    >>> steps = setting(BoundedInt(512, 1, 100_000, help="Number of steps."), "slider",
    ...                 "Iterations", "Run", live=True, log=True, step=1)
    >>> steps.metadata["control"]["label"], steps.metadata["live"]
    ('Iterations', True)
    """
    spec: dict[str, Any] | None = None
    if kind is not None:
        spec = {"kind": kind, "label": label}
        if group is not None:
            spec["group"] = group
        spec.update(control)
    meta = {"setting": next(_ORDER), "control": spec, "live": live, "restart": restart}
    return trait.tag(**meta, record=record, **({"sync": True} if sync else {}))


def seed_setting(help: str, group: str | None = None, **control: Any) -> t.TraitType:
    """Declare the random seed of a widget: an integer in ``0 .. 2**31 - 1`` (default 0) whose
    change restarts the run, with an ``int`` control labelled "Seed" in ``group`` (no control
    without a group).

    Examples
    --------
    >>> seed = seed_setting("Seed of the generated probe set.", "Probe set")
    >>> seed.metadata["control"]["group"], seed.metadata["restart"], (seed.low, seed.high)
    ('Probe set', True, (0, 2147483647))
    """
    trait = BoundedInt(0, 0, 2**31 - 1, help=help)
    kind = "int" if group is not None else None
    return setting(trait, kind, "Seed", group, restart=True, **control)


def button(label: str, action: str, group: str | None = None, **control: Any) -> dict[str, Any]:
    """The spec of a ``button`` control: pressing it calls the widget's ``_on_action(action,
    content)``. A widget lists its buttons in ``_buttons``; they follow the settings' controls.

    Examples
    --------
    >>> button("Export CSV", "export_csv", "Export")
    {'kind': 'button', 'label': 'Export CSV', 'action': 'export_csv', 'group': 'Export'}
    """
    spec = {"kind": "button", "label": label, "action": action}
    return spec | ({"group": group} if group is not None else {}) | control


class DeclaredSettings:
    """Mixin of the widget base: what follows from the :func:`setting` declarations.

    The class that mixes it in directly (the widget base) is the *root*: its traits (``title``,
    ``running``, ``error``...) are every widget's, no setting of a particular one.
    """

    #: traits whose change cancels the current run and starts a new one
    _restart_traits: tuple[str, ...] = ()
    #: traits read by the running algorithm at every step
    _live_traits: tuple[str, ...] = ()
    #: traits that hold results or read-only facts: left out of ``record()["settings"]``
    _result_traits: tuple[str, ...] = ()
    #: the :func:`button` controls, drawn after the settings' controls
    _buttons: tuple[dict[str, Any], ...] = ()
    #: download buttons, drawn last in group "Export": ``{action: (label, what)}``; pressing
    #: one has the browser save the file ``self.export_bytes(what)`` makes (see ``_frontend``)
    _downloads: dict[str, tuple[str, Any]] = {}
    #: names of the settings declared with :func:`setting`, in declaration order (derived)
    _declared: tuple[str, ...] = ()
    #: the widget base (set when it is defined)
    _root: type

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if DeclaredSettings in cls.__bases__:
            cls._root = cls
            return
        found: dict[str, t.TraitType] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, t.TraitType) and "setting" in value.metadata:
                    found[name] = value
        cls._declared = tuple(sorted(found, key=lambda n: found[n].metadata["setting"]))
        for attr, key in (("_restart_traits", "restart"), ("_live_traits", "live")):
            names = tuple(n for n in cls._declared if found[n].metadata.get(key))
            if names:
                setattr(cls, attr, names)

    @classmethod
    def _check_arguments(cls, kwargs: dict[str, Any], *, settings_only: bool = False) -> None:
        """A ``TypeError`` naming the keyword arguments that are no trait (and the valid ones).

        ``settings_only`` (a widget checking its user's arguments): a trait of the widget that
        is no declared :func:`setting` (a result or a read-only fact) is refused too."""
        traits = cls.class_traits()
        if settings_only and cls._declared:
            own = set(traits) - set(cls._root.class_traits())
            traits = {n: v for n, v in traits.items() if n not in own or n in cls._declared}
        unknown = [k for k in kwargs if k not in traits and not k.startswith("_")]
        if unknown:
            valid = sorted(
                n for n, v in traits.items() if v.metadata.get("sync") or n in cls._declared
            )
            valid = [n for n in valid if not n.startswith("_")]
            raise TypeError(
                f"{cls.__name__}() got unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(valid)}"
            )

    def _control_specs(self) -> list[dict]:
        """The controls, in declaration order, from the :func:`setting` declarations, then the
        :func:`button` s of ``_buttons`` and ``_downloads`` (each passed through
        :meth:`_control_spec` for what only the instance knows)."""
        traits = self.traits()
        specs = [
            {"trait": name, **traits[name].metadata["control"]}
            for name in self._declared
            if traits[name].metadata.get("control") is not None
        ]
        specs += [dict(b) for b in self._buttons]
        specs += [button(label, action, "Export") for action, (label, _) in self._downloads.items()]
        return [s for s in map(self._control_spec, specs) if s is not None]

    def _update_controls(self) -> None:
        """Send the controls again (after what :meth:`_control_spec` reads has changed)."""
        self.controls = self._control_specs()

    def _control_spec(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Hook: a declared control with what only the instance knows (e.g. options from the
        model); None leaves the control out. A button's spec has no ``trait``."""
        return spec

    def _settings(self) -> dict[str, Any]:
        """Every setting trait, for :meth:`record` (the declared ones, when declared)."""
        if self._declared:
            traits = self.traits()
            names = sorted(n for n in self._declared if traits[n].metadata.get("record", True))
            values = {n: getattr(self, n) for n in names}
            return {n: v for n, v in values.items() if isinstance(v, (int, float, str, bool))}
        skip = set(self._root.class_trait_names()) | set(self._result_traits)
        skip |= {"layer_options", "class_options"}
        out = {}
        for name in self.trait_names(sync=True):
            if name.startswith("_") or name in skip:
                continue
            value = getattr(self, name)
            if isinstance(value, (int, float, str, bool)):
                out[name] = value
        return out

    @t.validate("controls")
    def _controls_from_traits(self, proposal: dict) -> list[dict]:
        """A numeric control's ``min``/``max`` are its trait's declared range (one source)."""
        out = []
        for spec in proposal["value"]:
            trait = self.traits().get(spec.get("trait", "")) if isinstance(spec, dict) else None
            if isinstance(trait, _Bounded) and spec.get("kind") in ("slider", "int", "float"):
                spec = dict(spec, min=trait.low, max=trait.high)
                if spec.get("log") and spec["min"] <= 0:
                    raise ValueError(f"log slider {spec['trait']!r} needs a range above 0")
            out.append(spec)
        return out
