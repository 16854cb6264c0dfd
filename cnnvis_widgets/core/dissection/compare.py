"""Comparing dissections: interpretable units per layer of several models or checkpoints."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .results import Dissection


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
    """

    names: list[str]
    layers: list[str]
    units: list[int]
    interpretable: list[list[int]]
    unique: list[list[dict[str, int]]]
    categories: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: ``layer``, ``units`` and the interpretable count of every model."""
        out = []
        for li, layer in enumerate(self.layers):
            row: dict[str, Any] = {"layer": layer, "units": self.units[li]}
            for m, name in enumerate(self.names):
                row[name] = self.interpretable[m][li]
            out.append(row)
        return out

    def to_csv(self) -> str:
        """The rows as CSV text."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["layer", "units", *self.names])
        for row in self.rows():
            w.writerow([row["layer"], row["units"], *(row[n] for n in self.names)])
        return buf.getvalue()

    def __repr__(self) -> str:
        width = max(12, *(len(n) for n in self.names))
        head = f"{'layer':<16}{'units':>6}  " + "  ".join(f"{n:>{width}}" for n in self.names)
        lines = [head]
        for row in self.rows():
            lines.append(
                f"{row['layer']:<16}{row['units']:>6}  "
                + "  ".join(f"{row[n]:>{width}}" for n in self.names)
            )
        return "\n".join(lines)


def compare_dissections(
    dissections: Sequence[Dissection], names: Sequence[str] | None = None
) -> DissectionComparison:
    """Interpretable units per layer of several dissections (pretrained vs random weights,
    checkpoints during training...), over the layers they share.

    Examples
    --------
    >>> cmp = compare_dissections([pretrained, random], ["imagenet", "random"])  # doctest: +SKIP
    >>> cmp.rows()[0]                                                          # doctest: +SKIP
    {'layer': '_blocks.4', 'units': 40, 'imagenet': 9, 'random': 2}
    """
    ds = list(dissections)
    if not ds:
        raise ValueError("give at least one dissection to compare")
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
    layers = [name for name in ds[0].layers if all(name in d.layers for d in ds[1:])]
    if not layers:
        raise ValueError(
            "the dissections share no layer: "
            + "; ".join(f"{n}: {', '.join(d.layers)}" for n, d in zip(unique_names, ds))
        )
    interpretable, unique = [], []
    for d in ds:
        by_layer = {s["layer"]: s for s in d.summary()}
        interpretable.append([by_layer[name]["interpretable"] for name in layers])
        unique.append([by_layer[name]["unique"] for name in layers])
    return DissectionComparison(
        names=unique_names,
        layers=layers,
        units=[ds[0][name].units for name in layers],
        interpretable=interpretable,
        unique=unique,
        categories=list(ds[0].categories),
    )
