"""What dissection found: :class:`Dissection` (per layer a :class:`LayerDissection`) with its
summaries, CSV export and save / load (JSON + npz)."""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...data.concepts import Concept

SAVE_VERSION = 1


@dataclass
class LayerDissection:
    """What dissection found in one layer.

    Attributes
    ----------
    name : str
    thresholds : np.ndarray
        ``(units,)`` activation threshold of each unit (top-``quantile`` value).
    threshold_error : np.ndarray
        ``(units,)`` bound on the error of each threshold (the histogram's bin width).
    iou : np.ndarray
        ``(units, n_labels)`` float32 IoU of every unit with every label (column 0 is unused).
    top_images : np.ndarray
        ``(units, k)`` probe indices of the images where the unit's thresholded map covers the
        most mask pixels (ties: the lower index).
    top_values : np.ndarray
        ``(units, k)`` those areas, in mask pixels.
    activated : np.ndarray
        ``(units,)`` activated mask pixels over the probe set.
    """

    name: str
    thresholds: np.ndarray
    threshold_error: np.ndarray
    iou: np.ndarray
    top_images: np.ndarray
    top_values: np.ndarray
    activated: np.ndarray

    @property
    def units(self) -> int:
        """Number of units (channels)."""
        return int(self.iou.shape[0])

    @property
    def best_label(self) -> np.ndarray:
        """``(units,)`` label number of each unit's best concept."""
        if self.iou.shape[1] <= 1:
            return np.zeros(self.units, dtype=np.int64)
        return self.iou[:, 1:].argmax(axis=1) + 1

    @property
    def best_iou(self) -> np.ndarray:
        """``(units,)`` IoU of each unit's best concept."""
        if self.iou.shape[1] <= 1:
            return np.zeros(self.units, dtype=np.float32)
        return self.iou[:, 1:].max(axis=1)


class Dissection:
    """The result of :func:`dissect`: labels, IoUs and top images of every unit of every layer.

    Parameters
    ----------
    layers : dict of str to LayerDissection
    labels : list of Concept
        The probe set's labels (``labels[i]`` has number ``i``).
    categories : list of str
    quantile, iou_threshold : float
    n_images : int
        Probe images seen.
    model, probe : dict
        Descriptions of the model and the probe set, for records.
    complete : bool
        False for the partial results shown while a run is still tallying.

    Examples
    --------
    >>> result = dissect(handle, ["_blocks.4"], probe_set(128))      # doctest: +SKIP
    >>> result.units("_blocks.4")[0]                                # doctest: +SKIP
    {'unit': 0, 'concept': 'green', 'category': 'color', 'iou': 0.061, 'interpretable': True, ...}
    >>> result.save("lite0.dissection")                            # doctest: +SKIP
    >>> Dissection.load("lite0.dissection").summary()               # doctest: +SKIP
    """

    def __init__(
        self,
        layers: dict[str, LayerDissection],
        labels: Sequence[Concept],
        categories: Sequence[str],
        *,
        quantile: float,
        iou_threshold: float,
        n_images: int,
        model: dict[str, Any] | None = None,
        probe: dict[str, Any] | None = None,
        complete: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._layers = dict(layers)
        self.labels = list(labels)
        self.categories = list(categories)
        self.quantile = float(quantile)
        self.iou_threshold = float(iou_threshold)
        self.n_images = int(n_images)
        self.model = dict(model or {})
        self.probe = dict(probe or {})
        self.complete = bool(complete)
        self.meta = dict(meta or {})

    # ----------------------------------------------------------------------------- access
    @property
    def layers(self) -> list[str]:
        """Names of the dissected layers, in the order given."""
        return list(self._layers)

    def __getitem__(self, layer: str) -> LayerDissection:
        try:
            return self._layers[layer]
        except KeyError:
            raise KeyError(
                f"layer {layer!r} was not dissected; dissected layers: {', '.join(self._layers)}"
            ) from None

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{s['layer']}: {s['interpretable']}/{s['units']}" for s in self.summary()
        )
        name = self.model.get("name", "?")
        return f"Dissection({name}, {self.n_images} images, interpretable units {parts})"

    def label_name(self, index: int) -> str:
        """Name of label number ``index``."""
        return self.labels[int(index)].name

    def with_iou_threshold(self, iou_threshold: float) -> Dissection:
        """The same result judged with another interpretability threshold (no recomputation;
        the copy shares the arrays, which a result never changes)."""
        judged = copy.copy(self)
        judged.iou_threshold = float(iou_threshold)
        return judged

    def unit(self, layer: str, unit: int, top: int = 5) -> dict[str, Any]:
        """Everything about one unit: its label, IoU, threshold, top images and runner-up
        concepts (``top`` best ``(concept, iou)`` pairs)."""
        ld = self[layer]
        if not 0 <= int(unit) < ld.units:
            raise IndexError(
                f"unit {unit} is out of range for layer {layer!r}: valid 0..{ld.units - 1}"
            )
        u = int(unit)
        order = np.argsort(-ld.iou[u, 1:], kind="stable")[:top] + 1
        best = int(ld.best_label[u])
        c = self.labels[best]
        return {
            "layer": layer,
            "unit": u,
            "concept": c.name,
            "category": c.category,
            "iou": float(ld.iou[u, best]),
            "interpretable": bool(ld.iou[u, best] >= self.iou_threshold),
            "threshold": float(ld.thresholds[u]),
            "threshold_error": float(ld.threshold_error[u]),
            "top_images": [int(i) for i in ld.top_images[u] if i >= 0],
            "top_concepts": [(self.labels[int(j)].name, float(ld.iou[u, j])) for j in order],
        }

    def units(self, layer: str) -> list[dict[str, Any]]:
        """One record per unit of ``layer``: ``unit``, ``concept``, ``category``, ``iou``,
        ``interpretable``, ``threshold``."""
        ld = self[layer]
        best, ious = ld.best_label, ld.best_iou
        out = []
        for u in range(ld.units):
            c = self.labels[int(best[u])]
            out.append(
                {
                    "unit": u,
                    "concept": c.name,
                    "category": c.category,
                    "iou": float(ious[u]),
                    "interpretable": bool(ious[u] >= self.iou_threshold),
                    "threshold": float(ld.thresholds[u]),
                }
            )
        return out

    def unique_detectors(self, layer: str) -> dict[str, list[str]]:
        """Per category, the distinct concepts (texture scales merged) detected by interpretable
        units of ``layer``."""
        ld = self[layer]
        found: dict[str, set[str]] = {c: set() for c in self.categories}
        for u in np.nonzero(ld.best_iou >= self.iou_threshold)[0]:
            c = self.labels[int(ld.best_label[u])]
            found.setdefault(c.category, set()).add(c.root)
        return {cat: sorted(names) for cat, names in found.items()}

    def summary(self) -> list[dict[str, Any]]:
        """Per layer: ``units``, ``interpretable`` (count), ``fraction``, ``unique`` (unique
        detectors per category) and ``by_category`` (interpretable units per category)."""
        rows = []
        for name, ld in self._layers.items():
            good = ld.best_iou >= self.iou_threshold
            by_cat = {c: 0 for c in self.categories}
            for u in np.nonzero(good)[0]:
                cat = self.labels[int(ld.best_label[u])].category
                by_cat[cat] = by_cat.get(cat, 0) + 1
            unique = {cat: len(v) for cat, v in self.unique_detectors(name).items()}
            rows.append(
                {
                    "layer": name,
                    "units": ld.units,
                    "interpretable": int(good.sum()),
                    "fraction": float(good.mean()) if ld.units else 0.0,
                    "unique": unique,
                    "by_category": by_cat,
                }
            )
        return rows

    # ----------------------------------------------------------------------------- export
    def to_csv(self, path: str | Path | None = None) -> str:
        """All units of all layers as CSV (``layer, unit, concept, category, iou,
        interpretable, threshold, threshold_error``); written to ``path`` when given."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "layer",
                "unit",
                "concept",
                "category",
                "iou",
                "interpretable",
                "threshold",
                "threshold_error",
            ]
        )
        for name, ld in self._layers.items():
            for rec in self.units(name):
                w.writerow(
                    [
                        name,
                        rec["unit"],
                        rec["concept"],
                        rec["category"],
                        f"{rec['iou']:.6f}",
                        int(rec["interpretable"]),
                        f"{rec['threshold']:.9g}",
                        f"{float(ld.threshold_error[rec['unit']]):.3g}",
                    ]
                )
        text = buf.getvalue()
        if path is not None:
            from ...cache import atomic_write_bytes

            atomic_write_bytes(path, text.encode())
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: settings, labels, summary (the arrays go to the npz)."""
        return {
            "version": SAVE_VERSION,
            "kind": "cnnvis_widgets.dissection",
            "layers": self.layers,
            "labels": [c.to_dict() for c in self.labels],
            "categories": self.categories,
            "quantile": self.quantile,
            "iou_threshold": self.iou_threshold,
            "n_images": self.n_images,
            "model": self.model,
            "probe": self.probe,
            "complete": self.complete,
            "meta": self.meta,
            "summary": self.summary(),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.json`` (settings, labels, summary) and ``<path>.npz`` (arrays)
        atomically; returns the JSON path. :meth:`load` reads them back."""
        from ...cache import atomic_write_bytes, save_json

        base = Path(path)
        if base.suffix in (".json", ".npz"):
            base = base.with_suffix("")
        arrays: dict[str, np.ndarray] = {}
        for i, ld in enumerate(self._layers.values()):
            for key in (
                "thresholds",
                "threshold_error",
                "iou",
                "top_images",
                "top_values",
                "activated",
            ):
                arrays[f"{i}/{key}"] = np.asarray(getattr(ld, key))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(base.with_name(base.name + ".npz"), buf.getvalue())
        return save_json(base.with_name(base.name + ".json"), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Dissection:
        """Read what :meth:`save` wrote (``path`` with or without ``.json``)."""
        from ...cache import load_json

        base = Path(path)
        if base.suffix in (".json", ".npz"):
            base = base.with_suffix("")
        meta = load_json(base.with_name(base.name + ".json"))
        if meta.get("kind") != "cnnvis_widgets.dissection":
            raise ValueError(f"{base}.json is not a saved dissection")
        with np.load(base.with_name(base.name + ".npz"), allow_pickle=False) as z:
            layers = {}
            for i, name in enumerate(meta["layers"]):
                layers[name] = LayerDissection(
                    name=name,
                    thresholds=z[f"{i}/thresholds"],
                    threshold_error=z[f"{i}/threshold_error"],
                    iou=z[f"{i}/iou"],
                    top_images=z[f"{i}/top_images"],
                    top_values=z[f"{i}/top_values"],
                    activated=z[f"{i}/activated"],
                )
        labels = [
            Concept(d["index"], d["name"], d["category"], d.get("parent")) for d in meta["labels"]
        ]
        return cls(
            layers,
            labels,
            meta["categories"],
            quantile=meta["quantile"],
            iou_threshold=meta["iou_threshold"],
            n_images=meta["n_images"],
            model=meta.get("model"),
            probe=meta.get("probe"),
            complete=meta.get("complete", True),
            meta=meta.get("meta"),
        )
