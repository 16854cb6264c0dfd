"""Dissections as files: one CSV of several models (:func:`combined_csv`), the export folder
(:func:`export_files`: CSV, JSON + npz per model, the static picture) and the same as bytes for a
browser download (:func:`export_bytes`)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ...imaging import to_pil
from .results import Dissection

__all__ = ["combined_csv", "export_files", "export_bytes", "EXPORT_KINDS"]

#: what :func:`export_files` writes by default
EXPORT_KINDS = ("csv", "json", "png")
_MIME = {".csv": "text/csv", ".png": "image/png", ".json": "application/json"}


def combined_csv(results: Sequence[Dissection], names: Sequence[str]) -> str:
    """:meth:`Dissection.to_csv` of one model; of several, one table with a first ``model``
    column (``names[i]`` on the rows of ``results[i]``)."""
    if len(results) == 1:
        return results[0].to_csv()
    tables = [r.to_csv().splitlines() for r in results]
    lines = ["model," + tables[0][0]]
    for name, table in zip(names, tables):
        lines += [f"{name},{row}" for row in table[1:]]
    return "\n".join(lines) + "\n"


def export_files(
    folder: str | Path,
    results: Sequence[Dissection],
    names: Sequence[str],
    picture: torch.Tensor | None,
    kinds: Sequence[str] = EXPORT_KINDS,
) -> dict[str, Path]:
    """Write ``dissection.csv`` (:func:`combined_csv`), ``dissection.json`` + ``.npz`` (and
    ``compare.json`` + npz for a second model) and ``dissection.png`` (``picture``, pixel space
    ``(3, H, W)``) into ``folder``; returns the paths by kind (``csv``, ``json``,
    ``compare_json``, ``png``).

    Examples
    --------
    >>> export_files("out", [pretrained, random], ["imagenet", "random"], picture)  # doctest: +SKIP
    {'csv': ..., 'json': ..., 'compare_json': ..., 'png': ...}
    """
    from ...cache import atomic_write_bytes

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if "csv" in kinds:
        out["csv"] = folder / "dissection.csv"
        atomic_write_bytes(out["csv"], combined_csv(results, names).encode())
    if "json" in kinds:
        out["json"] = results[0].save(folder / "dissection")
        if len(results) > 1:
            out["compare_json"] = results[1].save(folder / "compare")
    if "png" in kinds:
        if picture is None:
            raise RuntimeError("nothing to save yet: no picture of the dissection")
        out["png"] = folder / "dissection.png"
        to_pil(picture.float().clamp(0, 1)).save(out["png"], format="PNG")
    return out


def export_bytes(
    results: Sequence[Dissection],
    names: Sequence[str],
    picture: torch.Tensor | None,
    kinds: Sequence[str] = EXPORT_KINDS,
) -> tuple[str, str, bytes]:
    """``(file name, mime type, bytes)`` of :func:`export_files`: one file as it is
    (``dissection.csv``, ``dissection.png``), several (JSON + arrays, or every kind) as one zip.
    Nothing stays on disk."""
    with tempfile.TemporaryDirectory(prefix="cnnvis-export-") as tmp:
        export_files(tmp, results, names, picture, kinds)
        files = sorted(p for p in Path(tmp).iterdir() if p.is_file())
        if len(files) == 1:
            f = files[0]
            return f.name, _MIME.get(f.suffix, "application/octet-stream"), f.read_bytes()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in files:
                z.write(f, f.name)
    name = "dissection.zip" if len(kinds) > 1 else f"dissection-{kinds[0]}.zip"
    return name, "application/zip", buf.getvalue()
