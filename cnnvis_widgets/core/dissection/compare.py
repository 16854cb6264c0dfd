"""Comparing dissections: interpretable units per layer of several models or checkpoints.

Checkpoints of one network and its random twin share their layer names, so layers are paired by
name. Two *architectures* do not: ``_blocks.15`` is the last block of EfficientNet-Lite0 but the
first block of the sixth stage of Lite2 (21 blocks). :func:`matching_layers` finds, for each layer
of one network, the layer of another at the same place (the same stage, at the same relative
position in it), :func:`layers_per_model` does it for every model of a comparison, and
:func:`compare_models` dissects each model at its own layers and pairs them by position.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...models.handle import LayerInfo, ModelHandle
from .results import Dissection

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ...data.concepts import Probe

__all__ = [
    "DissectionComparison",
    "compare_dissections",
    "compare_models",
    "layers_per_model",
    "matching_layers",
    "stages",
]


def _blocks(handle: ModelHandle) -> list[LayerInfo]:
    """The top-level blocks with feature maps (``_blocks.3``, ``layer2.1``), else the top-level
    conv-like layers, else every conv-like layer, in execution order."""
    layers = sorted(handle.conv_layers(), key=lambda li: li.order)
    for picks in (
        [li for li in layers if li.kind == "block" and li.name.count(".") <= 1],
        [li for li in layers if li.kind in ("conv", "act") and li.name.count(".") <= 1],
        layers,
    ):
        if len(picks) >= 2:
            return picks
    return layers


def stages(handle: ModelHandle) -> list[list[str]]:
    """The network's stages: runs of consecutive top-level blocks with the same output shape
    (channels, height, width), in order.

    Examples
    --------
    >>> [len(s) for s in stages(load_model("efficientnet_lite0"))]      # doctest: +SKIP
    [1, 2, 2, 3, 3, 4, 1]
    """
    out: list[list[str]] = []
    shape: tuple[Any, ...] | None = None
    for li in _blocks(handle):
        here = (li.channels, li.height, li.width)
        if here != shape:
            out.append([])
            shape = here
        out[-1].append(li.name)
    return out


def _at(position: float, names: Sequence[str]) -> str:
    return names[round(position * (len(names) - 1))]


def _position(name: str, names: Sequence[str]) -> float:
    """Relative position of ``name`` in ``names`` (0 first, 1 last; a lone name counts as the
    last: the output of its stage)."""
    return names.index(name) / (len(names) - 1) if len(names) > 1 else 1.0


def matching_layers(
    handle: ModelHandle, other: ModelHandle, layers: str | Sequence[str]
) -> list[str]:
    """For each of ``handle``'s ``layers``, the layer of ``other`` at the same place.

    A top-level block maps to the block of ``other`` in the same stage (:func:`stages`; when both
    networks have as many stages) at the same relative position within it, else at the same
    relative depth among the blocks; a layer inside a block (``_blocks.3._act1``) maps into the
    matching block (``_blocks.4._act1``) when ``other`` has that layer; any other layer maps to
    the layer of the same name (stem, head) or, failing that, to the conv-like layer at the same
    relative depth.

    Raises
    ------
    KeyError
        A layer ``handle`` does not have.

    Examples
    --------
    >>> lite0, lite2 = load_model(), load_model("efficientnet_lite2")   # doctest: +SKIP
    >>> matching_layers(lite0, lite2, ["_blocks.6", "_blocks.15"])       # doctest: +SKIP
    ['_blocks.9', '_blocks.20']
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    mine, theirs = stages(handle), stages(other)
    my_blocks = [n for s in mine for n in s]
    their_blocks = [n for s in theirs for n in s]
    my_all = [li.name for li in sorted(handle.conv_layers(), key=lambda li: li.order)]
    their_all = [li.name for li in sorted(other.conv_layers(), key=lambda li: li.order)]

    def block_of(name: str) -> str:
        if len(mine) == len(theirs):
            k = next(i for i, s in enumerate(mine) if name in s)
            return _at(_position(name, mine[k]), theirs[k])
        return _at(_position(name, my_blocks), their_blocks)

    out = []
    for name in names:
        handle.layer(name)
        if name in my_blocks and their_blocks:
            out.append(block_of(name))
            continue
        parent = next((b for b in my_blocks if name.startswith(b + ".")), None)
        if parent is not None and their_blocks:
            inside = block_of(parent) + name[len(parent) :]
            if inside in other.layers:
                out.append(inside)
                continue
        if name in other.layers:
            out.append(name)
        elif name in my_all and their_all:
            out.append(_at(_position(name, my_all), their_all))
        else:
            raise KeyError(f"no layer of {other.name!r} matches {name!r} of {handle.name!r}")
    return out


def _architecture(handle: ModelHandle) -> tuple[tuple[str, int], ...]:
    return tuple((li.name, li.channels) for li in handle.layers.values())


def _kin(a: ModelHandle, b: ModelHandle) -> bool:
    """True when two networks are built of top-level blocks in as many stages (EfficientNet-Lite0
    and Lite2, ResNet-18 and -50): their layers correspond by stage."""

    def blocky(h: ModelHandle) -> bool:
        return sum(li.kind == "block" and li.name.count(".") <= 1 for li in h.conv_layers()) >= 2

    return blocky(a) and blocky(b) and len(stages(a)) == len(stages(b))


def layers_per_model(
    handles: Sequence[ModelHandle], layers: str | Sequence[str]
) -> list[list[str]]:
    """The layers to dissect in each model for ``layers`` of the first: :func:`matching_layers`
    for another architecture of the same kind (top-level blocks in as many :func:`stages`:
    EfficientNet-Lite0 and Lite2), else the same names (the random twin, a checkpoint, or
    networks that do not correspond stage by stage, whose layers must then exist by name).

    Raises
    ------
    ValueError
        Two layers of the first model match one layer of another (a shallower network).
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    first = handles[0]
    out = [names]
    for h in handles[1:]:
        same = h is first or _architecture(h) == _architecture(first)
        mapped = list(names) if same or not _kin(first, h) else matching_layers(first, h, names)
        if len(set(mapped)) < len(mapped):
            pairs = ", ".join(f"{a} -> {b}" for a, b in zip(names, mapped))
            raise ValueError(
                f"two of these layers of {first.name!r} match one layer of {h.name!r} "
                f"({pairs}): dissect fewer or farther apart layers"
            )
        out.append(mapped)
    return out


@dataclass
class DissectionComparison:
    """Interpretable units per layer for several models (or checkpoints).

    Attributes
    ----------
    names : list of str
        One name per model.
    layers : list of str
        Layers dissected in every model.
    units : list of int
        Units per layer (of the first model).
    interpretable : list of list of int
        ``interpretable[m][l]``: interpretable units of model ``m`` in layer ``l``.
    unique : list of list of dict
        ``unique[m][l]``: unique detectors per category.
    categories : list of str
    model_layers : list of list of str
        ``model_layers[m][l]``: the layer of model ``m`` paired with ``layers[l]`` (the same
        names when paired by name).
    model_units : list of list of int
        ``model_units[m][l]``: its units.
    """

    names: list[str]
    layers: list[str]
    units: list[int]
    interpretable: list[list[int]]
    unique: list[list[dict[str, int]]]
    categories: list[str] = field(default_factory=list)
    model_layers: list[list[str]] = field(default_factory=list)
    model_units: list[list[int]] = field(default_factory=list)

    @property
    def paired_by_position(self) -> bool:
        """True when some model's layers or widths differ from the first's (two
        architectures): the rows then name every model's layer and units."""
        return any(
            ls != self.layers or us != self.units
            for ls, us in zip(self.model_layers, self.model_units)
        )

    def _columns(self) -> list[str]:
        extra = []
        if self.paired_by_position:
            for name in self.names[1:]:
                extra += [f"{name} layer", f"{name} units"]
        return [*self.names, *extra]

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: ``layer``, ``units`` and the interpretable count of every model;
        for two architectures also ``"<name> layer"`` and ``"<name> units"`` of the others."""
        out = []
        for li, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": layer, "units": self.units[li]}
            for m, name in enumerate(self.names):
                row[name] = self.interpretable[m][li]
            if self.paired_by_position:
                for m, name in enumerate(self.names[1:], start=1):
                    row[f"{name} layer"] = self.model_layers[m][li]
                    row[f"{name} units"] = self.model_units[m][li]
            out.append(row)
        return out

    def to_csv(self) -> str:
        """The rows as CSV text."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        cols = self._columns()
        w.writerow(["layer", "units", *cols])
        for row in self.rows():
            w.writerow([row["layer"], row["units"], *(row[n] for n in cols)])
        return buf.getvalue()

    def __repr__(self) -> str:
        cols = self._columns()
        width = max(12, *(len(n) for n in cols))
        head = f"{'layer':<16}{'units':>6}  " + "  ".join(f"{n:>{width}}" for n in cols)
        lines = [head]
        for row in self.rows():
            lines.append(
                f"{row['layer']:<16}{row['units']:>6}  "
                + "  ".join(f"{row[n]:>{width}}" for n in cols)
            )
        return "\n".join(lines)


def compare_dissections(
    dissections: Sequence[Dissection],
    names: Sequence[str] | None = None,
    align: str = "auto",
) -> DissectionComparison:
    """Interpretable units per layer of several dissections (pretrained vs random weights,
    checkpoints during training, two architectures...).

    Parameters
    ----------
    dissections : sequence of Dissection
    names : sequence of str, optional
        One per dissection (default: the model's name and weights).
    align : ``"auto"``, ``"name"`` or ``"position"``
        ``"name"``: over the layers all share by name (one architecture); ``"position"``: the
        ``i``-th dissected layer of each (two architectures dissected at
        :func:`matching_layers`; every dissection needs as many layers); ``"auto"``: by name
        when the models have one name (a network, its checkpoints, its random twin), else by
        position.

    Raises
    ------
    ValueError
        No dissection, names that do not fit, no shared layer, or (by position) different
        numbers of layers.

    Examples
    --------
    >>> cmp = compare_dissections([pretrained, random], ["imagenet", "random"])  # doctest: +SKIP
    >>> cmp.rows()[0]                                                          # doctest: +SKIP
    {'layer': '_blocks.4', 'units': 40, 'imagenet': 9, 'random': 2}
    """
    ds = list(dissections)
    if not ds:
        raise ValueError("give at least one dissection to compare")
    if align not in ("auto", "name", "position"):
        raise ValueError(f"align must be 'auto', 'name' or 'position', got {align!r}")
    if names is None:
        names = []
        for d in ds:
            label = str(d.model.get("name", "model"))
            weights = d.model.get("weights")
            names.append(f"{label} [{weights}]" if weights else label)
    names = list(names)
    if len(names) != len(ds):
        raise ValueError(f"got {len(names)} names for {len(ds)} dissections")
    seen: dict[str, int] = {}
    unique_names = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique_names.append(n if seen[n] == 1 else f"{n} #{seen[n]}")
    if align == "auto":
        one_model = len({str(d.model.get("name", "")) for d in ds}) == 1
        align = "name" if one_model else "position"
    if align == "position":
        counts = {len(d.layers) for d in ds}
        if len(counts) != 1:
            raise ValueError(
                "to pair layers by position every dissection needs as many layers: "
                + "; ".join(f"{n}: {len(d.layers)}" for n, d in zip(unique_names, ds))
                + " (dissect each model at matching_layers(...))"
            )
        model_layers = [list(d.layers) for d in ds]
    else:
        shared = [name for name in ds[0].layers if all(name in d.layers for d in ds[1:])]
        if not shared:
            raise ValueError(
                "the dissections share no layer: "
                + "; ".join(f"{n}: {', '.join(d.layers)}" for n, d in zip(unique_names, ds))
            )
        model_layers = [list(shared) for _ in ds]
    interpretable, unique = [], []
    for d, layers in zip(ds, model_layers):
        by_layer = {s["layer"]: s for s in d.summary()}
        interpretable.append([by_layer[name]["interpretable"] for name in layers])
        unique.append([by_layer[name]["unique"] for name in layers])
    model_units = [[d[name].units for name in layers] for d, layers in zip(ds, model_layers)]
    return DissectionComparison(
        names=unique_names,
        layers=model_layers[0],
        units=model_units[0],
        interpretable=interpretable,
        unique=unique,
        categories=list(ds[0].categories),
        model_layers=model_layers,
        model_units=model_units,
    )


def compare_models(
    handles: Sequence[ModelHandle],
    layers: str | Sequence[str],
    probe: Probe,
    names: Sequence[str] | None = None,
    **settings: Any,
) -> tuple[list[Dissection], DissectionComparison]:
    """Dissect several models on one probe set, each at its own layers
    (:func:`layers_per_model` of the first model's ``layers``), and compare them by position.

    ``settings`` are :func:`~.run.dissect`'s (``batch_size``, ``quantile``...).

    Examples
    --------
    >>> results, cmp = compare_models([lite0, lite2], ["_blocks.6"], probe)  # doctest: +SKIP
    >>> cmp.model_layers                                                    # doctest: +SKIP
    [['_blocks.6'], ['_blocks.8']]
    """
    from .run import dissect

    hs = list(handles)
    if not hs:
        raise ValueError("give at least one model to compare")
    per_model = layers_per_model(hs, layers)
    results = [dissect(h, ls, probe, **settings) for h, ls in zip(hs, per_model)]
    return results, compare_dissections(results, names, align="position")
