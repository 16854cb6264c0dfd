"""A built atlas on disk: the writer and the reader of the directory format ``cnnvis-atlas/1``.

This format is the contract between ``cnnvis atlas build`` (:mod:`.build`), the Atlas widget
(``Atlas(model, atlas=DIR)``) and ``cnnvis atlas export`` (the static site)::

    DIR/
      atlas.json                      the manifest, written last (atomically) after every change
      layers/<NNN>-<safe>/            one folder per layer, NNN = 3-digit position, <safe> = the
                                      layer name with every char outside [A-Za-z0-9._-] -> "_"
        layer.json                    the layer's results (below)
        am/<unit>.png                 activation-maximization image of the unit (RGB PNG)
        am/<unit>_d<i>.png            diversity variants (optional)
        top/<unit>_<i>.png            top-k dataset patches, i = 0..k-1, strongest first
        proj/<unit>_<i>.png           their DeconvNet projections (optional)
        inversion.png                 regularized inversion of the reference photo (optional)
      parts/                          the builder's private resumable state; readers ignore it

``atlas.json``::

    {"format": "cnnvis-atlas/1",
     "model": {"name": str, "fingerprint": str, "input_size": [h, w], "num_classes": int},
     "settings": {...everything that made the results...},
     "dataset": {"name": str, "images": int, "fingerprint": str} | null,
     "layers": [{"name": str, "dir": "layers/000-_blocks.0", "channels": int,
                 "shape": [C, H, W], "complete": {"am": bool, "top": bool, "dissection": bool,
                 "classes": bool, "inversion": bool, "ablation": bool}}],
     "created": ISO-8601 str, "version": cnnvis_widgets version str}

``layer.json``::

    {"name": str, "channels": int,
     "interpretable": float | null,        share of units whose IoU >= the threshold
     "inversion": {"image": "inversion.png", "error": float} | null,
     "units": [{"unit": int, "am": "am/7.png" | null, "diversity": ["am/7_d0.png", ...],
                "max_activation": float | null,
                "top": [{"image": "top/7_0.png", "projection": "proj/7_0.png" | null,
                         "score": float, "source": str}],
                "dissection": {"label": str, "category": str, "iou": float} | null,
                "classes": [[class name, weight], ...],
                "ablation": {"accuracy_drop": float, "classes": [[name, drop], ...]} | null},
               ...]}

A unit's ``ablation`` is what setting it to zero alone does over the build's dataset
(:func:`~cnnvis_widgets.core.importance.ablate`, ``how="zero"``): ``accuracy_drop`` is the
intact accuracy minus the accuracy without it, and ``classes`` the classes whose mean
probability on their own images falls most, ``[name, drop]`` with drop > 0, largest first. An
unlabelled dataset (the default) is labelled by the intact network's own top-1, so
``accuracy_drop`` is then the share of the dataset's images whose top-1 changes. Null when not
measured (``--no-ablation``).

All paths in ``layer.json`` are relative to the layer's folder; all floats are finite (null
otherwise). Additions to the contract, backward-compatible (readers may ignore them):
a unit's ``"best_concept"`` (``{"label", "category", "iou"}``: its best concept even below the
IoU threshold, where ``dissection`` is null; absent when the layer was not dissected),
``layer.json``'s ``"iou_threshold"``, the manifest's ``layers[].kind`` (block, conv...) and
the ablation's ``"accuracy"`` (without the unit), ``"baseline_accuracy"`` (intact),
``"images"`` (measured) and ``"labels"`` (``"model"``: the intact network's top-1, or
``"dataset"``).

:func:`write_json` / :func:`write_png` write atomically; :class:`BuiltAtlas` (:func:`open_atlas`)
reads a directory back: the manifest, each layer's record, a layer's AM images as a
:class:`~.grid.LayerGrid` and its dissection labels.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from ... import cache
from ..imaging import encode, pil_to_tensor

__all__ = [
    "FORMAT",
    "safe_name",
    "layer_dir",
    "finite",
    "write_json",
    "write_png",
    "read_png",
    "BuiltAtlas",
    "open_atlas",
]

FORMAT = "cnnvis-atlas/1"
PARTS = ("am", "top", "dissection", "classes", "inversion", "ablation")


def safe_name(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``.

    >>> safe_name("features.3/conv 1")
    'features.3_conv_1'
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def layer_dir(index: int, name: str) -> str:
    """The layer folder relative to the atlas root.

    >>> layer_dir(4, "_blocks.4")
    'layers/004-_blocks.4'
    """
    return f"layers/{int(index):03d}-{safe_name(name)}"


def finite(value: Any) -> float | None:
    """A finite float, else None (JSON has no NaN or infinity in this format).

    >>> finite(1.5), finite(float("nan")), finite(None)
    (1.5, None, None)
    """
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return finite(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any, *, sync: bool = False) -> Path:
    """Write ``obj`` as JSON atomically (non-finite floats become null; keys in order given);
    ``sync``: flushed to the disk before it replaces the old file (the manifest)."""
    text = json.dumps(_clean(obj), indent=1, allow_nan=False, ensure_ascii=False)
    if sync:
        return cache.atomic_write_bytes(path, (text + "\n").encode())
    return _replace_write(Path(path), (text + "\n").encode())


def _replace_write(path: Path, data: bytes) -> Path:
    # atomic (a temporary file renamed over the target) without an fsync per picture: the
    # manifest, written last with an fsync, is what says the pictures are there
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_png(path: str | Path, pixels: torch.Tensor) -> Path:
    """Write a pixel image ``(C, H, W)`` in [0, 1] (float) or uint8 as an RGB PNG, atomically
    (renamed into place)."""
    p = pixels.detach().cpu()
    if p.dtype == torch.uint8:
        p = p.float().div(255)
    if p.dim() == 4:
        p = p[0]
    if p.shape[0] == 1:
        p = p.expand(3, -1, -1)
    return _replace_write(Path(path), encode(p.clamp(0, 1), "png"))


def read_png(path: str | Path) -> torch.Tensor:
    """A PNG written by :func:`write_png` as pixels ``(3, H, W)`` in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        return pil_to_tensor(img.convert("RGB"))[0]


class BuiltAtlas:
    """A built atlas directory, read-only (see the module docstring for the format).

    Parameters
    ----------
    root : str or Path
        The directory (its ``atlas.json`` is read at once).

    Raises
    ------
    FileNotFoundError
        No ``atlas.json`` there.
    ValueError
        A manifest of another format.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        path = self.root / "atlas.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(self.root)!r} is not a built atlas (no atlas.json): build one with "
                "`cnnvis atlas build --out DIR`"
            )
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{str(path)!r} cannot be read: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(
                f"{str(path)!r} is not a {FORMAT} manifest (format "
                f"{manifest.get('format') if isinstance(manifest, dict) else None!r})"
            )
        self.manifest: dict[str, Any] = manifest
        self._records: dict[str, dict[str, Any]] = {}

    @property
    def layers(self) -> list[str]:
        """The layer names, in network order."""
        return [rec["name"] for rec in self.manifest.get("layers", [])]

    @property
    def fingerprint(self) -> str:
        """The model fingerprint the atlas was built with."""
        return str(self.manifest.get("model", {}).get("fingerprint", ""))

    @property
    def settings(self) -> dict[str, Any]:
        """The settings of the build."""
        return dict(self.manifest.get("settings", {}))

    def entry(self, layer: str) -> dict[str, Any]:
        """The manifest's entry of ``layer`` (``KeyError`` naming the layers it has)."""
        for rec in self.manifest.get("layers", []):
            if rec["name"] == layer:
                return rec
        raise KeyError(f"layer {layer!r} is not in this atlas; it has: {', '.join(self.layers)}")

    def folder(self, layer: str) -> Path:
        """The layer's folder."""
        return self.root / self.entry(layer)["dir"]

    def layer(self, layer: str) -> dict[str, Any]:
        """The layer's ``layer.json`` (read once)."""
        if layer not in self._records:
            self._records[layer] = json.loads((self.folder(layer) / "layer.json").read_text())
        return self._records[layer]

    def unit(self, layer: str, unit: int) -> dict[str, Any]:
        """The record of one unit of ``layer``."""
        for rec in self.layer(layer)["units"]:
            if rec["unit"] == int(unit):
                return rec
        raise KeyError(f"unit {unit} of {layer!r} is not in this atlas")

    def image(self, layer: str, relative: str) -> torch.Tensor:
        """A picture of the layer's folder (a path of ``layer.json``) as pixels ``(3, H, W)``."""
        return read_png(self.folder(layer) / relative)

    def grid(self, layer: str, size: int | None = None) -> Any:
        """The layer's AM images as a :class:`~.grid.LayerGrid` (units without an image are not
        done). ``size`` rescales the images (default: as stored)."""
        import torch.nn.functional as F

        from .grid import LayerGrid

        rec = self.layer(layer)
        n = int(rec["channels"])
        pics: dict[int, torch.Tensor] = {}
        act = torch.full((n,), float("nan"))
        for u in rec["units"]:
            if u.get("am"):
                p = self.image(layer, u["am"])
                if size is not None and p.shape[-1] != size:
                    p = F.interpolate(p[None], size=(size, size), mode="bilinear", antialias=True)[
                        0
                    ]
                pics[int(u["unit"])] = p
                a = u.get("max_activation")
                act[int(u["unit"])] = float("nan") if a is None else float(a)
        side = size or (next(iter(pics.values())).shape[-1] if pics else 64)
        images = torch.zeros(n, 3, side, side, dtype=torch.uint8)
        done = torch.zeros(n, dtype=torch.bool)
        for u, p in pics.items():
            images[u] = p.clamp(0, 1).mul(255).round().to(torch.uint8)
            done[u] = True
        return LayerGrid(layer, images, act, done, {"atlas": str(self.root)})

    def labels(self, layer: str) -> dict[int, tuple[str, float]]:
        """Unit -> ``(best concept, IoU)`` from the atlas's dissection, below the threshold too
        (like :meth:`~.network.NetworkSummary.labels`; empty when not dissected)."""
        out = {}
        for u in self.layer(layer)["units"]:
            d = u.get("best_concept") or u.get("dissection")
            if d:
                out[int(u["unit"])] = (str(d["label"]), float(d["iou"] or 0.0))
        return out

    def complete(self, layer: str, part: str) -> bool:
        """Whether ``part`` (one of am, top, dissection, classes, inversion) of ``layer`` is
        complete."""
        return bool(self.entry(layer).get("complete", {}).get(part, False))

    def rows(self) -> list[dict[str, Any]]:
        """The network view's rows (like :meth:`~.network.NetworkSummary.rows`)."""
        out = []
        for entry in self.manifest.get("layers", []):
            rec = self.layer(entry["name"])
            shape = entry.get("shape") or [entry["channels"]]
            inv = rec.get("inversion") or {}
            out.append(
                {
                    "layer": entry["name"],
                    "kind": entry.get("kind", ""),
                    "shape": "x".join(str(s) for s in shape),
                    "channels": entry["channels"],
                    "interpretable": rec.get("interpretable"),
                    "feature_error": inv.get("error"),
                }
            )
        return out

    def __repr__(self) -> str:
        return f"BuiltAtlas({str(self.root)!r}, {len(self.layers)} layers)"


def open_atlas(root: str | Path) -> BuiltAtlas:
    """Open a built atlas directory (:class:`BuiltAtlas`)."""
    return BuiltAtlas(root)
