"""Read and check a built atlas directory (format ``cnnvis-atlas/1``) for the static site.

The reader reads the JSON and the image files directly (no torch, no model) and checks everything
the site relies on: the manifest's format and fields, each layer's ``layer.json``, the types of
every field, finite numbers, and that every image a unit names is a PNG file inside its layer's
folder. The first problem found raises :class:`AtlasFormatError`, naming the file and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["AtlasFormatError", "FORMAT", "SiteAtlas", "SiteLayer", "SiteUnit", "read_atlas"]

#: the directory format this reader understands
FORMAT = "cnnvis-atlas/1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_JSON_BYTES = 512 * 1024 * 1024  # a layer.json of 26,000 units is a few MB


class AtlasFormatError(ValueError):
    """A built atlas directory is missing a file or holds a field of the wrong kind."""


@dataclass(frozen=True)
class TopPatch:
    image: str  # path relative to the layer's folder (posix)
    projection: str | None
    score: float | None
    source: str


@dataclass(frozen=True)
class SiteUnit:
    unit: int
    am: str | None
    diversity: tuple[str, ...]
    max_activation: float | None
    top: tuple[TopPatch, ...]
    #: {"label": str, "category": str, "iou": float | None, "interpretable": bool}
    dissection: dict[str, Any] | None
    classes: tuple[tuple[str, float | None], ...]
    #: {"accuracy_drop": float | None, "classes": ((name, drop), ...)}
    ablation: dict[str, Any] | None

    @property
    def concept(self) -> str | None:
        """The unit's concept label when it reaches the layer's IoU threshold, else None."""
        d = self.dissection
        return d["label"] if d and d["interpretable"] else None

    def is_empty(self) -> bool:
        """Nothing computed for this unit (a build limited to some units lists the others)."""
        return not (self.am or self.top or self.dissection or self.classes or self.ablation)

    def images(self) -> list[str]:
        """Every image file of the unit (relative to its layer's folder)."""
        out = ([self.am] if self.am else []) + list(self.diversity)
        for p in self.top:
            out += [p.image] + ([p.projection] if p.projection else [])
        return out


@dataclass(frozen=True)
class SiteLayer:
    position: int
    name: str
    folder: Path  # the layer's folder in the atlas
    channels: int
    shape: tuple[int, ...]
    complete: dict[str, bool]
    interpretable: float | None
    iou_threshold: float | None
    inversion: dict[str, Any] | None  # {"image": str, "error": float | None}
    units: tuple[SiteUnit, ...]


@dataclass(frozen=True)
class SiteAtlas:
    root: Path
    model: dict[str, Any]
    settings: dict[str, Any]
    dataset: dict[str, Any] | None
    created: str
    version: str
    layers: tuple[SiteLayer, ...] = field(default=())


# ------------------------------------------------------------------------------------ checks
class _Where:
    """Names the place of a value in error messages: ``layers/000-a/layer.json: units[3].top``."""

    def __init__(self, file: str, path: str = "") -> None:
        self.file, self.path = file, path

    def at(self, key: str | int) -> _Where:
        sub = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.path else key)
        return _Where(self.file, self.path + sub)

    def fail(self, what: str) -> AtlasFormatError:
        place = f"{self.file}: {self.path}" if self.path else self.file
        return AtlasFormatError(f"{place} {what}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _need(obj: dict, key: str, where: _Where) -> Any:
    if key not in obj:
        raise where.fail(f"has no {key!r} (format {FORMAT})")
    return obj[key]


def _dict(value: Any, where: _Where) -> dict:
    if not isinstance(value, dict):
        raise where.fail(f"should be an object, not {_kind(value)}")
    return value


def _list(value: Any, where: _Where) -> list:
    if not isinstance(value, list):
        raise where.fail(f"should be a list, not {_kind(value)}")
    return value


def _str(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.fail(f"should be a string, not {_kind(value)}")
    return value


def _int(value: Any, where: _Where, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.fail(f"should be an integer >= {minimum}, not {value!r}")
    return value


def _float(value: Any, where: _Where, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.fail(f"should be a number{' or null' if optional else ''}, not {value!r}")
    if not math.isfinite(value):
        raise where.fail(f"should be finite, not {value!r}")
    return float(value)


def _named_numbers(value: Any, where: _Where) -> tuple[tuple[str, float | None], ...]:
    out = []
    for i, pair in enumerate(_list(value, where)):
        w = where.at(i)
        if not isinstance(pair, list) or len(pair) != 2:
            raise w.fail(f"should be a [class name, number] pair, not {pair!r}")
        out.append((_str(pair[0], w.at(0)), _float(pair[1], w.at(1), optional=True)))
    return tuple(out)


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise AtlasFormatError(f"{what} is missing: {path}")
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise AtlasFormatError(f"{path} is larger than {_MAX_JSON_BYTES} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AtlasFormatError(f"{path} is not valid JSON: {exc}") from None


def _inside(root: Path, rel: str, where: _Where) -> Path:
    """``root / rel`` for a relative posix path that stays inside ``root`` (no ``..``)."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or "\\" in rel or any(part in ("..", "") for part in p.parts):
        raise where.fail(f"should be a relative path inside the folder, not {rel!r}")
    return root.joinpath(*p.parts)


def _png(folder: Path, rel: Any, where: _Where, optional: bool = False) -> str | None:
    if rel is None and optional:
        return None
    rel = _str(rel, where)
    path = _inside(folder, rel, where)
    if not path.is_file():
        raise where.fail(f"names an image that is missing: {path}")
    with path.open("rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            raise where.fail(f"names a file that is not a PNG image: {path}")
    return PurePosixPath(rel).as_posix()


# ------------------------------------------------------------------------------------ reading
def _unit(raw: Any, folder: Path, where: _Where) -> SiteUnit:
    u = _dict(raw, where)
    number = _int(_need(u, "unit", where), where.at("unit"))
    top = []
    for i, t in enumerate(_list(u.get("top") or [], where.at("top"))):
        w = where.at("top").at(i)
        t = _dict(t, w)
        top.append(
            TopPatch(
                image=_png(folder, _need(t, "image", w), w.at("image")) or "",
                projection=_png(folder, t.get("projection"), w.at("projection"), optional=True),
                score=_float(t.get("score"), w.at("score"), optional=True),
                source=_str(t.get("source") or "", w.at("source")),
            )
        )
    dissection = u.get("dissection")
    key = "dissection"
    if dissection is None and u.get("best_concept") is not None:
        # the writer's best concept below the IoU threshold: shown as a match, never as the label
        key, dissection = "best_concept", {**_dict(u["best_concept"], where.at("best_concept"))}
        dissection["interpretable"] = False
    if dissection is not None:
        w = where.at(key)
        d = _dict(dissection, w)
        flag = d.get("interpretable", True)  # a later addition: absent = the label counts
        if not isinstance(flag, bool):
            raise w.at("interpretable").fail(f"should be true or false, not {flag!r}")
        dissection = {
            "label": _str(_need(d, "label", w), w.at("label")),
            "category": _str(d.get("category") or "", w.at("category")),
            "iou": _float(d.get("iou"), w.at("iou"), optional=True),
            "interpretable": flag,
        }
    ablation = u.get("ablation")
    if ablation is not None:
        w = where.at("ablation")
        a = _dict(ablation, w)
        ablation = {
            "accuracy_drop": _float(a.get("accuracy_drop"), w.at("accuracy_drop"), optional=True),
            "classes": _named_numbers(a.get("classes") or [], w.at("classes")),
        }
    return SiteUnit(
        unit=number,
        am=_png(folder, u.get("am"), where.at("am"), optional=True),
        diversity=tuple(
            _png(folder, d, where.at("diversity").at(i)) or ""
            for i, d in enumerate(_list(u.get("diversity") or [], where.at("diversity")))
        ),
        max_activation=_float(u.get("max_activation"), where.at("max_activation"), optional=True),
        top=tuple(top),
        dissection=dissection,
        classes=_named_numbers(u.get("classes") or [], where.at("classes")),
        ablation=ablation,
    )


def _layer(root: Path, position: int, entry: Any, where: _Where) -> SiteLayer:
    e = _dict(entry, where)
    name = _str(_need(e, "name", where), where.at("name"))
    rel = _str(_need(e, "dir", where), where.at("dir"))
    folder = _inside(root, rel, where.at("dir"))
    if not folder.is_dir():
        raise where.at("dir").fail(f"names a layer folder that is missing: {folder}")
    shape = tuple(
        _int(s, where.at("shape").at(i), 1)
        for i, s in enumerate(_list(_need(e, "shape", where), where.at("shape")))
    )
    complete_raw = _dict(e.get("complete") or {}, where.at("complete"))
    complete = {str(k): bool(v) for k, v in complete_raw.items()}
    layer_file = f"{rel}/layer.json"
    data = _dict(
        _load_json(folder / "layer.json", f"the layer file of {name!r}"), _Where(layer_file)
    )
    lw = _Where(layer_file)
    if _need(data, "name", lw) != name:
        raise lw.at("name").fail(f"is {data['name']!r} but atlas.json names this layer {name!r}")
    channels = _int(_need(data, "channels", lw), lw.at("channels"), 1)
    units = tuple(
        _unit(u, folder, lw.at("units").at(i))
        for i, u in enumerate(_list(_need(data, "units", lw), lw.at("units")))
    )
    seen: set[int] = set()
    for i, u in enumerate(units):
        if u.unit in seen:
            raise lw.at("units").at(i).fail(f"repeats unit {u.unit}")
        if u.unit >= channels:
            raise lw.at("units").at(i).fail(f"is unit {u.unit} of a layer of {channels} channels")
        seen.add(u.unit)
    inversion = data.get("inversion")
    if inversion is not None:
        iw = lw.at("inversion")
        inv = _dict(inversion, iw)
        inversion = {
            "image": _png(folder, _need(inv, "image", iw), iw.at("image")),
            "error": _float(inv.get("error"), iw.at("error"), optional=True),
        }
    return SiteLayer(
        position=position,
        name=name,
        folder=folder,
        channels=channels,
        shape=shape,
        complete=complete,
        interpretable=_float(data.get("interpretable"), lw.at("interpretable"), optional=True),
        iou_threshold=_float(data.get("iou_threshold"), lw.at("iou_threshold"), optional=True),
        inversion=inversion,
        # a build limited to some units lists the others with nothing computed: left out
        units=tuple(sorted((u for u in units if not u.is_empty()), key=lambda u: u.unit)),
    )


def read_atlas(atlas_dir: str | os.PathLike) -> SiteAtlas:
    """Read and check the built atlas in ``atlas_dir``.

    Raises
    ------
    AtlasFormatError
        When ``atlas.json`` or a ``layer.json`` is missing, is not JSON, has the wrong format or
        a field of the wrong kind, or names an image that is missing or not a PNG.
    """
    root = Path(atlas_dir)
    if not root.is_dir():
        raise AtlasFormatError(f"the atlas directory does not exist: {root}")
    manifest = root / "atlas.json"
    if not manifest.is_file():
        raise AtlasFormatError(
            f"{root} has no atlas.json: not a built atlas (write one with `cnnvis atlas build`)"
        )
    where = _Where("atlas.json")
    m = _dict(_load_json(manifest, "atlas.json"), where)
    fmt = m.get("format")
    if fmt != FORMAT:
        raise where.at("format").fail(f"is {fmt!r}; this version reads {FORMAT!r}")
    model = _dict(_need(m, "model", where), where.at("model"))
    _str(_need(model, "name", where.at("model")), where.at("model").at("name"))
    dataset = m.get("dataset")
    if dataset is not None:
        _dict(dataset, where.at("dataset"))
    entries = _list(_need(m, "layers", where), where.at("layers"))
    if not entries:
        raise where.at("layers").fail("is empty: the atlas has no layer")
    layers = tuple(_layer(root, i, e, where.at("layers").at(i)) for i, e in enumerate(entries))
    names = [layer.name for layer in layers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise where.at("layers").at(i).fail(f"repeats the layer name {name!r}")
    return SiteAtlas(
        root=root,
        model=model,
        settings=_dict(m.get("settings") or {}, where.at("settings")),
        dataset=dataset,
        created=str(m.get("created", "")),
        version=str(m.get("version", "")),
        layers=layers,
    )
