"""Composable objectives: what activation maximization pushes up.

An :class:`Objective` maps the captured activations of a batch to one score per image ``(B,)``;
objectives combine with ``+``, ``-`` and ``*`` (by numbers or other objectives). Layer names are
dotted module names; ``"layer:unit"`` is shorthand for :func:`channel`.

Examples
--------
>>> obj = channel("_blocks.4", 7) + 0.5 * diversity("_blocks.4")  # higher = more diverse
>>> sorted(obj.layers)
['_blocks.4']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ... import limits

__all__ = [
    "Objective",
    "LOGITS",
    "channel",
    "neuron",
    "class_logit",
    "layer",
    "diversity",
    "as_objective",
]

LOGITS = "__logits__"

Acts = dict[str, torch.Tensor]


class Objective:
    """A score per image computed from activations.

    Parameters
    ----------
    fn : callable
        ``acts -> (B,)`` tensor, where ``acts`` maps layer names (and ``LOGITS``) to tensors.
    layers : sequence of str
        Layers the objective reads (``LOGITS`` for the network output).
    name : str
        Human-readable description, used in records and the widget.
    units : sequence of (layer, unit)
        Units to validate against the model before a run.
    classes : sequence of int
        Output indices to validate.
    """

    def __init__(
        self,
        fn: Callable[[Acts], torch.Tensor],
        layers: Sequence[str],
        name: str,
        units: Sequence[tuple[str, int]] = (),
        classes: Sequence[int] = (),
    ) -> None:
        self.fn = fn
        self.layers = tuple(dict.fromkeys(layers))
        self.name = name
        self.units = tuple(units)
        self.classes = tuple(classes)

    @property
    def needs_logits(self) -> bool:
        return LOGITS in self.layers

    @property
    def hidden_layers(self) -> tuple[str, ...]:
        return tuple(n for n in self.layers if n != LOGITS)

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def _combine(self, other: Objective, op: Callable, sym: str) -> Objective:
        return Objective(
            lambda a: op(self(a), other(a)),
            self.layers + other.layers,
            f"{self.name} {sym} {other.name}",
            self.units + other.units,
            self.classes + other.classes,
        )

    def __add__(self, other: object) -> Objective:
        if isinstance(other, (int, float)):
            return Objective(
                lambda a: self(a) + other,
                self.layers,
                f"{self.name} + {other}",
                self.units,
                self.classes,
            )
        return self._combine(as_objective(other), lambda x, y: x + y, "+")

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(
            lambda a: -self(a), self.layers, f"-({self.name})", self.units, self.classes
        )

    def __sub__(self, other: object) -> Objective:
        return self + (-as_objective(other) if not isinstance(other, (int, float)) else -other)

    def __rsub__(self, other: object) -> Objective:
        return (-self) + other

    def __mul__(self, other: object) -> Objective:
        if isinstance(other, (int, float)):
            return Objective(
                lambda a: other * self(a),
                self.layers,
                f"{other} * {self.name}",
                self.units,
                self.classes,
            )
        return self._combine(as_objective(other), lambda x, y: x * y, "*")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name!r})"


def _per_image(unit: int | Sequence[int], t: torch.Tensor) -> torch.Tensor:
    """Select channel ``unit`` (or one unit per image) of ``t (B, C, ...)`` -> ``(B, ...)``."""
    if limits.is_scalar(unit):
        return t[:, limits.as_int(unit, "unit")]
    idx = torch.as_tensor(_units(unit), device=t.device)
    if idx.numel() != t.shape[0]:
        raise ValueError(f"{idx.numel()} units given for a batch of {t.shape[0]} images")
    return t[torch.arange(t.shape[0], device=t.device), idx]


def _units(unit: int | Sequence[int]) -> list[int]:
    """One unit or a sequence of them as Python ints (numpy and torch integers too)."""
    if limits.is_scalar(unit):
        return [limits.as_int(unit, "unit")]
    return [limits.as_int(u, "unit") for u in unit]  # type: ignore[union-attr]


def channel(layer: str, unit: int | Sequence[int]) -> Objective:
    """Mean activation of channel ``unit`` of ``layer`` (one unit per image if a sequence)."""
    units = _units(unit)

    def fn(acts: Acts) -> torch.Tensor:
        t = _per_image(unit, acts[layer])
        return t.flatten(1).mean(dim=1) if t.dim() > 1 else t

    return Objective(fn, [layer], f"{layer}:{unit}", [(layer, u) for u in units])


def neuron(layer: str, unit: int | Sequence[int], y: int | None = None, x: int | None = None):
    """Activation of ``unit`` at one spatial position (the centre by default)."""
    units = _units(unit)

    def fn(acts: Acts) -> torch.Tensor:
        t = _per_image(unit, acts[layer])
        if t.dim() == 1:
            return t
        h, w = t.shape[-2:]
        yy = h // 2 if y is None else min(int(y), h - 1)
        xx = w // 2 if x is None else min(int(x), w - 1)
        return t[:, yy, xx]

    pos = "centre" if y is None and x is None else f"({y},{x})"
    return Objective(fn, [layer], f"{layer}:{unit}@{pos}", [(layer, u) for u in units])


def class_logit(index: int | Sequence[int]) -> Objective:
    """Pre-softmax logit of class ``index`` (one class per image if a sequence)."""
    classes = _units(index)
    return Objective(
        lambda acts: _per_image(index, acts[LOGITS]), [LOGITS], f"logit {index}", classes=classes
    )


def layer(name: str) -> Objective:
    """DeepDream: mean squared activation of the whole layer."""
    return Objective(lambda acts: acts[name].pow(2).flatten(1).mean(dim=1), [name], f"dream {name}")


def diversity(name: str) -> Objective:
    """Diversity across the batch (Olah et al. 2017): minus the cosine similarity of each image's
    Gram matrix to the others'. Per image ``(B,)``; zero for a batch of one.

    Higher is more diverse, like every objective here: *add* it (``channel(...) + w *
    diversity(...)``). Lucid's ``diversity`` returns the similarity itself and is subtracted;
    Lucent kept Lucid's ``-`` example with this sign, which rewards similarity.
    """

    def fn(acts: Acts) -> torch.Tensor:
        t = acts[name]
        b, c = t.shape[:2]
        if b < 2:
            return t.new_zeros(b)
        f = t.reshape(b, c, -1)
        gram = torch.bmm(f, f.transpose(1, 2)).reshape(b, -1)
        gram = torch.nn.functional.normalize(gram, dim=1)
        sim = gram @ gram.T
        off = sim.sum(dim=1) - sim.diagonal()
        return -off / b

    return Objective(fn, [name], f"diversity {name}")


def as_objective(obj: object) -> Objective:
    """An :class:`Objective`, or ``"layer:unit"`` shorthand (``"logit:243"`` for a class logit)."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        name, sep, unit = obj.rpartition(":")
        if not sep or not unit.strip().lstrip("-").isdigit():
            raise ValueError(f"objective {obj!r}: expected 'layer:unit', e.g. '_blocks.4:7'")
        if name in ("logit", "logits", "class"):
            return class_logit(int(unit))
        return channel(name, int(unit))
    raise TypeError(f"cannot make an objective from {obj!r}")
