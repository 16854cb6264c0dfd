"""The HTML pages of the static atlas and its search index, from a checked :class:`SiteAtlas`.

Every string that comes from the atlas (layer, class and concept names, sources, settings) goes
through :func:`esc` (HTML) or :func:`href` (URL path, then HTML): a label ``<script>`` shows as
text. Links are relative, so the site opens from ``file://`` and from any static host.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlencode

from ._read import SiteAtlas, SiteLayer, SiteUnit

__all__ = [
    "esc",
    "href",
    "layer_folder",
    "unit_page",
    "network_page",
    "layer_page",
    "unit_card_page",
    "search_page",
    "search_index_js",
]

#: units shown in the network view's strip of each layer
STRIP_UNITS = 12
#: the global the search index assigns (read by static/site.js)
INDEX_GLOBAL = "CNNVIS_ATLAS_INDEX"


def esc(value: Any) -> str:
    """HTML-escape ``str(value)`` (quotes too: safe in text and in attribute values)."""
    return html.escape(str(value), quote=True)


def href(path: str) -> str:
    """A relative posix path -> a percent-encoded URL path, HTML-escaped for an attribute."""
    return esc(quote(path, safe="/"))


def layer_folder(layer: SiteLayer) -> str:
    """The layer's folder in the site: ``layers/<NNN>-<safe name>`` (as in the atlas format)."""
    return f"layers/{layer.position:03d}-{re.sub(r'[^A-Za-z0-9._-]', '_', layer.name)}"


def unit_page(layer: SiteLayer, unit: int) -> str:
    """The unit card's path in the site (relative to the site's root)."""
    return f"{layer_folder(layer)}/units/{unit}.html"


def _search_link(root: str, by: str, q: str) -> str:
    return esc(f"{root}search.html?{urlencode({'by': by, 'q': q})}")


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _share(layer: SiteLayer) -> str:
    """The interpretable share, with the IoU threshold when the atlas gives it (HTML)."""
    x = layer.interpretable
    if x is None:
        return "not computed"
    thr = f" (IoU ≥ {_num(layer.iou_threshold)})" if layer.iou_threshold is not None else ""
    return f"{100 * x:.0f}%{thr}"


def _shape(layer: SiteLayer) -> str:
    return " × ".join(str(s) for s in layer.shape)


# ---------------------------------------------------------------------------------- the frame
def _page(
    atlas: SiteAtlas,
    title: str,
    root: str,
    crumbs: list[tuple[str, str | None]],
    body: str,
    scripts: tuple[str, ...] = (),
) -> str:
    model = esc(atlas.model["name"])
    trail = "".join(
        f'<li><a href="{esc(link)}">{esc(text)}</a></li>'
        if link
        else f'<li aria-current="page">{esc(text)}</li>'
        for text, link in crumbs
    )
    tags = "".join(f'<script src="{esc(root + s)}"></script>' for s in scripts)
    made = f"cnnvis_widgets {esc(atlas.version)}" if atlas.version else "cnnvis_widgets"
    built = f", built {esc(atlas.created)}" if atlas.created else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · {model} atlas</title>
<link rel="stylesheet" href="{esc(root)}static/site.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="site-header">
<a class="brand" href="{esc(root)}index.html">{model} atlas</a>
<form class="quick-search" role="search" action="{esc(root)}search.html" method="get">
<label for="quick-q">Search concepts or classes</label>
<input id="quick-q" name="q" type="search" placeholder="e.g. stripes, tabby">
<button type="submit">Search</button>
</form>
</header>
<nav class="crumbs" aria-label="Breadcrumb"><ol>{trail}</ol></nav>
<main id="main">
{body}
</main>
<footer class="site-footer">A static atlas written by {made}{built}.
No server, no kernel, no network request.</footer>
{tags}
</body>
</html>
"""


def _img(src: str, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} src="{href(src)}" alt="{esc(alt)}" loading="lazy">'


def _dl(rows: list[tuple[str, str]]) -> str:
    """A definition list; the values are HTML already (escape them before)."""
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _table(caption: str, head: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    cells = "".join(f'<tr><td>{a}</td><td class="num">{b}</td></tr>' for a, b in rows)
    return (
        f'<table><caption>{caption}</caption><thead><tr><th scope="col">{head[0]}</th>'
        f'<th scope="col">{head[1]}</th></tr></thead><tbody>{cells}</tbody></table>'
    )


def _unit_tile(layer: SiteLayer, u: SiteUnit, base: str, root: str, label: bool = True) -> str:
    """A link to the unit's card with its AM image (``base``: from the page to the layer folder)."""
    name = f"unit {u.unit} of layer {layer.name}"
    pic = (
        _img(base + u.am, f"activation maximization image of {name}", "am")
        if u.am
        else '<span class="no-image">no image</span>'
    )
    concept = ""
    if label and u.concept:
        concept = f'<span class="concept">{esc(u.concept)}</span>'
    link = href(f"{root}{unit_page(layer, u.unit)}")
    return f'<li><a href="{link}">{pic}<span class="unit-no">unit {u.unit}</span>{concept}</a></li>'


def _inversion(layer: SiteLayer, base: str, cls: str = "inversion") -> str:
    if not layer.inversion:
        return ""
    err = layer.inversion["error"]
    cap = "inversion of the reference photo" + (
        f" (normalized feature error {_num(err)})" if err is not None else ""
    )
    alt = f"regularized inversion of the reference photo at layer {layer.name}"
    return (
        f'<figure class="{cls}">{_img(base + layer.inversion["image"], alt)}'
        f"<figcaption>{cap}</figcaption></figure>"
    )


# ---------------------------------------------------------------------------------- the pages
def network_page(atlas: SiteAtlas) -> str:
    """index.html: the model, then every layer with its shape, interpretable share, inversion
    thumbnail and a strip of unit images."""
    m = atlas.model
    units = sum(len(layer.units) for layer in atlas.layers)
    rows = [("Model", esc(m["name"]))]
    if m.get("input_size"):
        rows.append(("Input size", esc(" × ".join(str(s) for s in m["input_size"]))))
    if m.get("num_classes") is not None:
        rows.append(("Classes", esc(m["num_classes"])))
    if m.get("fingerprint"):
        rows.append(("Weights fingerprint", f"<code>{esc(m['fingerprint'])}</code>"))
    if atlas.dataset:
        d = atlas.dataset
        rows.append(("Dataset", f"{esc(d.get('name', ''))} ({esc(d.get('images', '?'))} images)"))
    rows.append(("Layers", str(len(atlas.layers))))
    rows.append(("Units in the atlas", str(units)))
    sections = []
    for i, layer in enumerate(atlas.layers):
        folder = layer_folder(layer)
        strip = "".join(
            _unit_tile(layer, u, f"{folder}/", "", False) for u in layer.units[:STRIP_UNITS]
        )
        more = len(layer.units) - min(len(layer.units), STRIP_UNITS)
        facts = _dl(
            [
                ("Shape", esc(_shape(layer))),
                ("Units", f"{len(layer.units)} of {layer.channels}"),
                ("Interpretable", esc(_share(layer))),
            ]
        )
        sections.append(
            f'<section class="layer-row" aria-labelledby="layer-{i}">'
            f'<h3 id="layer-{i}"><a href="{href(folder + "/index.html")}">{esc(layer.name)}</a>'
            f"</h3>{facts}{_inversion(layer, folder + '/', 'inversion thumb')}"
            f'<ul class="strip" aria-label="units of {esc(layer.name)}">{strip}</ul>'
            f'<p><a href="{href(folder + "/index.html")}">All {len(layer.units)} units of '
            f"{esc(layer.name)}</a>{f' ({more} more)' if more else ''}</p></section>"
        )
    settings = esc(json.dumps(atlas.settings, indent=1, sort_keys=True, default=str))
    body = (
        f"<h1>{esc(m['name'])}: the network</h1>{_dl(rows)}"
        f"<h2>Layers</h2>{''.join(sections)}"
        f'<h2>How it was built</h2><pre class="settings">{settings}</pre>'
    )
    return _page(atlas, "Network", "", [("Network", None)], body)


def _neighbours(items: list[tuple[str, str]], index: int, what: str) -> str:
    """Previous / next links: ``items`` are ``(text, url)``."""
    parts = []
    if index > 0:
        parts.append(
            f'<a rel="prev" href="{href(items[index - 1][1])}">Previous {what}: '
            f"{esc(items[index - 1][0])}</a>"
        )
    if index + 1 < len(items):
        parts.append(
            f'<a rel="next" href="{href(items[index + 1][1])}">Next {what}: '
            f"{esc(items[index + 1][0])}</a>"
        )
    return f'<nav class="pager" aria-label="{what}s">{" ".join(parts)}</nav>' if parts else ""


def layer_page(atlas: SiteAtlas, layer: SiteLayer) -> str:
    """layers/NNN-name/index.html: every unit's AM image, each a link to its card."""
    root = "../../"
    labelled = sum(1 for u in layer.units if u.concept)
    facts = _dl(
        [
            ("Shape", esc(_shape(layer))),
            ("Units", f"{len(layer.units)} of {layer.channels}"),
            ("Interpretable", esc(_share(layer))),
            ("Units with a concept label", str(labelled)),
        ]
    )
    tiles = "".join(_unit_tile(layer, u, "", root) for u in layer.units)
    pos = atlas.layers.index(layer)
    pager = _neighbours(
        [(x.name, f"{root}{layer_folder(x)}/index.html") for x in atlas.layers], pos, "layer"
    )
    body = (
        f"<h1>Layer {esc(layer.name)}</h1>{facts}{_inversion(layer, '')}"
        f'<h2>Units</h2><ul class="units">{tiles}</ul>{pager}'
    )
    crumbs = [("Network", f"{root}index.html"), (f"Layer {layer.name}", None)]
    return _page(atlas, f"Layer {layer.name}", root, crumbs, body)


def _figure(src: str, alt: str, caption: str) -> str:
    return f"<figure>{_img(src, alt)}<figcaption>{caption}</figcaption></figure>"


def unit_card_page(atlas: SiteAtlas, layer: SiteLayer, index: int) -> str:
    """layers/NNN-name/units/N.html: everything about one unit."""
    u = layer.units[index]
    root, base = "../../../", "../"
    name = f"unit {u.unit} of layer {layer.name}"
    parts = ["<h2>Activation maximization</h2>"]
    if u.am:
        cap = "the image that maximizes the unit" + (
            f" (objective {_num(u.max_activation)})" if u.max_activation is not None else ""
        )
        figs = [_figure(base + u.am, f"activation maximization image of {name}", cap)]
        figs += [
            _figure(base + d, f"diversity variant {i + 1} of {name}", f"diversity variant {i + 1}")
            for i, d in enumerate(u.diversity)
        ]
        parts.append(f'<div class="figures am">{"".join(figs)}</div>')
    else:
        parts.append("<p>Not computed for this unit.</p>")
    parts.append(f"<h2>Top {len(u.top)} dataset patches</h2>" if u.top else "<h2>Top patches</h2>")
    if u.top:
        items = []
        for i, p in enumerate(u.top):
            pics = _img(base + p.image, f"dataset patch {i + 1} that most activates {name}")
            if p.projection:
                pics += _img(base + p.projection, f"DeconvNet projection of patch {i + 1}")
            src = f", from {esc(p.source)}" if p.source else ""
            items.append(
                f'<li><figure><div class="pair">{pics}</div><figcaption>#{i + 1}: activation '
                f"{_num(p.score)}{src}</figcaption></figure></li>"
            )
        parts.append(f'<ol class="patches">{"".join(items)}</ol>')
    else:
        parts.append("<p>Not computed for this unit.</p>")
    parts.append("<h2>Dissection</h2>")
    d = u.dissection
    if d and d["interpretable"]:
        rows = [
            (
                "Concept",
                f'<a href="{_search_link(root, "concept", d["label"])}">{esc(d["label"])}</a>',
            ),
            ("Category", esc(d["category"]) or "n/a"),
            ("IoU", esc(_num(d["iou"]))),
        ]
        parts.append(_dl(rows))
    elif d:
        thr = f" ({_num(layer.iou_threshold)})" if layer.iou_threshold is not None else ""
        cat = f", {esc(d['category'])}" if d["category"] else ""
        parts.append(
            f"<p>No concept label: no probe concept reached the IoU threshold{thr}. The best "
            f'match was <a href="{_search_link(root, "concept", d["label"])}">'
            f"{esc(d['label'])}</a>{cat}, IoU {esc(_num(d['iou']))}.</p>"
        )
    elif layer.complete.get("dissection"):
        parts.append("<p>No concept label for this unit.</p>")
    else:
        parts.append("<p>Dissection was not computed for this layer.</p>")
    parts.append("<h2>Classes it feeds</h2>")
    if u.classes:
        rows = [
            (f'<a href="{_search_link(root, "class", c)}">{esc(c)}</a>', esc(_num(w)))
            for c, w in u.classes
        ]
        parts.append(_table(f"The classes {esc(name)} feeds most", ("Class", "Weight"), rows))
    else:
        parts.append("<p>Not computed for this unit.</p>")
    if u.ablation:
        a = u.ablation
        parts.append("<h2>What ablating it does</h2>")
        parts.append(_dl([("Accuracy drop", esc(_num(a["accuracy_drop"])))]))
        if a["classes"]:
            rows = [
                (f'<a href="{_search_link(root, "class", c)}">{esc(c)}</a>', esc(_num(v)))
                for c, v in a["classes"]
            ]
            cap = f"Classes hurt most when {esc(name)} is ablated"
            parts.append(_table(cap, ("Class", "Probability drop"), rows))
    lo = max(0, index - 1)  # only the neighbours: a layer of 2,048 units stays linear
    near = [(f"unit {x.unit}", f"{x.unit}.html") for x in layer.units[lo : index + 2]]
    pager = _neighbours(near, index - lo, "unit")
    body = f"<h1>Unit {u.unit} of layer {esc(layer.name)}</h1>{''.join(parts)}{pager}"
    crumbs = [
        ("Network", f"{root}index.html"),
        (f"Layer {layer.name}", f"{base}index.html"),
        (f"Unit {u.unit}", None),
    ]
    return _page(atlas, f"Unit {u.unit} of layer {layer.name}", root, crumbs, body)


def _counts(atlas: SiteAtlas) -> tuple[dict[str, int], dict[str, int]]:
    concepts: dict[str, int] = {}
    classes: dict[str, int] = {}
    for layer in atlas.layers:
        for u in layer.units:
            if u.concept:
                concepts[u.concept] = concepts.get(u.concept, 0) + 1
            for c, _ in u.classes:
                classes[c] = classes.get(c, 0) + 1
    return concepts, classes


def search_page(atlas: SiteAtlas) -> str:
    """search.html: the search form (static/site.js runs it on search-index.js) and every concept
    and class as a plain link."""
    concepts, classes = _counts(atlas)

    def links(by: str, counts: dict[str, int]) -> str:
        if not counts:
            return "<p>None in this atlas.</p>"
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].lower()))
        items = "".join(
            f'<li><a href="{_search_link("", by, k)}">{esc(k)}</a> ({n})</li>' for k, n in order
        )
        return f'<ul class="terms">{items}</ul>'

    body = f"""<h1>Search the atlas</h1>
<form id="atlas-search" class="search-form" role="search" action="search.html" method="get">
<label for="q">Concept or class</label>
<input id="q" name="q" type="search" autocomplete="off">
<label for="by">in</label>
<select id="by" name="by">
<option value="any">concepts and classes</option>
<option value="concept">concepts (dissection labels)</option>
<option value="class">classes the units feed</option>
</select>
<button type="submit">Search</button>
</form>
<noscript><p>The search needs JavaScript; the lists below and every page work without it.</p>
</noscript>
<p id="results-status" role="status" aria-live="polite"></p>
<ol id="results" class="results"></ol>
<h2>Concepts</h2>{links("concept", concepts)}
<h2>Classes</h2>{links("class", classes)}"""
    scripts = ("search-index.js", "static/site.js")
    return _page(atlas, "Search", "", [("Network", "index.html"), ("Search", None)], body, scripts)


def search_index(atlas: SiteAtlas) -> dict[str, Any]:
    """The data of the search: one row per unit (paths relative to the site's root)."""
    units = []
    for layer in atlas.layers:
        folder = layer_folder(layer)
        for u in layer.units:
            units.append(
                {
                    "layer": layer.name,
                    "unit": u.unit,
                    "href": quote(unit_page(layer, u.unit), safe="/"),
                    "image": quote(f"{folder}/{u.am}", safe="/") if u.am else None,
                    "concept": u.dissection["label"] if u.dissection else None,
                    "category": u.dissection["category"] if u.dissection else None,
                    "iou": u.dissection["iou"] if u.dissection else None,
                    # false: the best match, below the IoU threshold (not a label)
                    "interpretable": bool(u.dissection and u.dissection["interpretable"]),
                    "classes": [[c, w] for c, w in u.classes],
                }
            )
    return {"model": atlas.model["name"], "units": units}


def search_index_js(atlas: SiteAtlas) -> str:
    """search-index.js: ``window.CNNVIS_ATLAS_INDEX = {...};`` (a script, not fetched data:
    browsers refuse fetch() of file:// URLs). ASCII-only JSON: no U+2028 surprises."""
    data = json.dumps(search_index(atlas), ensure_ascii=True, separators=(",", ":"))
    # "<" escaped too, so that the text stays inert even if someone inlines it into a page
    data = data.replace("<", "\\u003c")
    return f"window.{INDEX_GLOBAL} = {data};\n"


def relative_images(layer: SiteLayer) -> list[str]:
    """Every image of the layer the site shows (relative to its folder, unique, sorted)."""
    out = {img for u in layer.units for img in u.images()}
    if layer.inversion:
        out.add(layer.inversion["image"])
    return sorted(out, key=lambda p: PurePosixPath(p).parts)
