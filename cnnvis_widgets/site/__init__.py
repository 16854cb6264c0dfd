"""The static atlas: a built atlas directory -> a website that needs no server, kernel or network.

:func:`export_site` reads a directory written by ``cnnvis atlas build`` (format
``cnnvis-atlas/1``, see :mod:`cnnvis_widgets.site._read`), checks it, and writes::

    SITE/
      index.html                        the network view: every layer with its shape,
                                        interpretable share, inversion thumbnail, unit strip
      search.html, search-index.js      search by concept (dissection label) or class
      static/site.css, static/site.js   the site's own style and script (shipped in the wheel)
      layers/<NNN>-<name>/index.html    a page per layer: every unit's AM image
      layers/<NNN>-<name>/units/<u>.html  a card per unit: AM + diversity, top-k + projections,
                                        dissection label and IoU, classes fed, ablation
      layers/<NNN>-<name>/am/, top/, proj/, inversion.png   the images, copied

Every link is relative and the data of the search is a script assigning a global (browsers refuse
``fetch()`` of ``file://`` URLs), so the site opens by double-clicking ``index.html`` as well as
from any static host. Every string from the atlas is HTML-escaped.

Examples
--------
>>> from cnnvis_widgets.site import export_site
>>> export_site("atlas-lite0", "atlas-site")                      # doctest: +SKIP
PosixPath('atlas-site/index.html')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ._pages import (
    layer_folder,
    layer_page,
    network_page,
    relative_images,
    search_index_js,
    search_page,
    unit_card_page,
)
from ._read import FORMAT, AtlasFormatError, SiteAtlas, read_atlas

__all__ = [
    "export_site",
    "read_atlas",
    "AtlasFormatError",
    "SiteFolderError",
    "FORMAT",
    "STATIC_FILES",
    "MARKER",
]

#: the site's own files, shipped in the wheel (cnnvis_widgets/site/static/)
STATIC_FILES = ("site.css", "site.js")
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: written into every site; a folder holding it may be replaced by a new export
MARKER = ".cnnvis-site.json"
SITE_FORMAT = "cnnvis-atlas-site/1"


class SiteFolderError(FileExistsError, ValueError):
    """The site's folder cannot take the site (a file, a folder of other things, the atlas).

    Both a :class:`FileExistsError` and a :class:`ValueError` (a wrong value of ``out``), as
    :class:`io.UnsupportedOperation` is both an ``OSError`` and a ``ValueError``."""


def _check_out(out: Path, atlas_root: Path) -> None:
    target = out.resolve()
    source = atlas_root.resolve()
    if target == source or target in source.parents:
        raise SiteFolderError(f"the site folder {out} would replace the atlas {atlas_root}")
    if target.exists() and not target.is_dir():
        raise SiteFolderError(f"{out} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise SiteFolderError(
            f"{out} is not empty and holds no earlier atlas site ({MARKER}): choose a new or an "
            "empty folder (nothing was written)"
        )


def _put(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or links not allowed: copy
            pass
    shutil.copyfile(src, dst)


def _write_site(atlas: SiteAtlas, site: Path, link: bool) -> None:
    def write(rel: str, text: str) -> None:
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    for name in STATIC_FILES:
        _put(STATIC_DIR / name, site / "static" / name, link=False)
    write("index.html", network_page(atlas))
    write("search.html", search_page(atlas))
    write("search-index.js", search_index_js(atlas))
    for layer in atlas.layers:
        folder = layer_folder(layer)
        for rel in relative_images(layer):
            _put(layer.folder / rel, site / folder / rel, link)
        write(f"{folder}/index.html", layer_page(atlas, layer))
        for i, u in enumerate(layer.units):
            write(f"{folder}/units/{u.unit}.html", unit_card_page(atlas, layer, i))
    write(".nojekyll", "")  # GitHub Pages: serve every file as it is
    marker = {"format": SITE_FORMAT, "atlas_format": FORMAT, "model": atlas.model["name"]}
    write(MARKER, json.dumps(marker, indent=1) + "\n")


def export_site(
    atlas_dir: str | os.PathLike, out: str | os.PathLike, *, link: bool = False
) -> Path:
    """Write the static site of the built atlas in ``atlas_dir`` into the folder ``out``.

    Parameters
    ----------
    atlas_dir
        A directory written by ``cnnvis atlas build`` (``atlas.json`` + ``layers/``). It is read
        and checked in full before anything is written.
    out
        The site's folder: new, empty, or a site an earlier export wrote (it is replaced whole,
        only once the new site is complete). Any other non-empty folder is refused.
    link
        Hard-link the images instead of copying them (falls back to a copy across file systems).

    Returns
    -------
    Path
        ``out / "index.html"``, the network view (open it in a browser).

    Raises
    ------
    AtlasFormatError
        The atlas directory is missing a file or holds a field of the wrong kind (the message
        names the file and the field).
    SiteFolderError
        ``out`` is a file, a non-empty folder that is not an earlier site, or holds the atlas
        (a ``FileExistsError`` and a ``ValueError``). Nothing is written then.
    """
    atlas = read_atlas(atlas_dir)
    out = Path(out)
    _check_out(out, atlas.root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a site is for reading
        _write_site(atlas, tmp, link)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"
