"""The static atlas (cnnvis_widgets.site): pages, links, search index, escaping, bad input."""

from __future__ import annotations

import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from cnnvis_widgets.site import (
    MARKER,
    STATIC_FILES,
    AtlasFormatError,
    SiteFolderError,
    export_site,
)
from tests.site_helpers import write_tiny_atlas

HOSTILE = '<script>alert("x")</script>'


class _Links(HTMLParser):
    """Every href/src of a page, the text of the page, and the alt of every image."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.headings: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        for key in ("href", "src", "action"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "img":
            self.images.append(a)
        if tag == "script":
            self.scripts.append(a.get("src") or "")
        if tag in ("h1", "h2", "h3"):
            self.headings.append(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _index(site: Path) -> dict:
    text = (site / "search-index.js").read_text(encoding="utf-8")
    prefix = "window.CNNVIS_ATLAS_INDEX = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix) :].rstrip().rstrip(";"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("site")
    atlas = write_tiny_atlas(root / "atlas")
    index = export_site(atlas, root / "site")
    return atlas, index.parent


def test_every_page_is_written(built) -> None:
    atlas, site = built
    assert (site / "index.html").is_file() and (site / "search.html").is_file()
    for name in STATIC_FILES:
        assert (site / "static" / name).read_bytes() == (
            Path(__import__("cnnvis_widgets.site").site.__file__).parent / "static" / name
        ).read_bytes()
    for folder, units in (("layers/000-conv.1", (0, 1, 2)), ("layers/001-head_2", (0, 1))):
        assert (site / folder / "index.html").is_file()
        assert sorted(p.name for p in (site / folder / "units").iterdir()) == [
            f"{u}.html" for u in units
        ]
    # the images are the atlas's own bytes
    assert (site / "layers/000-conv.1/proj/2_1.png").read_bytes() == (
        atlas / "layers/000-conv.1/proj/2_1.png"
    ).read_bytes()


def test_every_link_and_image_resolves_inside_the_site(built) -> None:
    _, site = built
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 2 + 2 + 5
    seen_targets: set[Path] = set()
    for page in pages:
        parsed = _parse(page)
        assert parsed.urls, page
        for url in parsed.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{page}: absolute URL {url}"
            if not parts.path:
                assert parts.fragment == "main"  # the skip link
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_relative_to(site.resolve()), f"{page}: {url} leaves the site"
            assert target.is_file(), f"{page}: {url} -> {target} is missing"
            seen_targets.add(target)
        for img in parsed.images:
            assert img.get("alt"), f"{page}: an image without alt text"
        assert parsed.headings[0] == "h1" and parsed.headings.count("h1") == 1, page
    # every page is reachable from another page
    assert {p.resolve() for p in pages} - {(site / "index.html").resolve()} <= seen_targets


def test_network_view_lists_every_layer_with_its_facts(built) -> None:
    _, site = built
    text = (site / "index.html").read_text(encoding="utf-8")
    assert "4 × 8 × 8" in text and "2 × 4 × 4" in text
    assert "67% (IoU ≥ 0.04)" in text and "not computed" in text  # 2/3 with the threshold
    parsed = _parse(site / "index.html")
    srcs = [i["src"] for i in parsed.images]
    assert "layers/000-conv.1/inversion.png" in srcs
    assert [s for s in srcs if "/am/" in s] == [
        "layers/000-conv.1/am/0.png",
        "layers/000-conv.1/am/1.png",
        "layers/000-conv.1/am/2.png",
        "layers/001-head_2/am/0.png",
        "layers/001-head_2/am/1.png",
    ]


def test_unit_cards_show_what_the_atlas_holds(built) -> None:
    _, site = built
    card = (site / "layers/000-conv.1/units/0.html").read_text(encoding="utf-8")
    for piece in ("stripes", "texture", "0.21", "tabby cat", "zebra", "What ablating it does"):
        assert piece in card, piece
    assert "0.04" in card and "0.12" in card  # accuracy drop, the class's probability drop
    srcs = [i["src"] for i in _parse(site / "layers/000-conv.1/units/0.html").images]
    assert srcs == [
        "../am/0.png",
        "../am/0_d0.png",
        "../am/0_d1.png",
        *[f"../{d}/0_{i}.png" for i in range(3) for d in ("top", "proj")],
    ]
    unlabelled = (site / "layers/000-conv.1/units/1.html").read_text(encoding="utf-8")
    assert "No concept label" in unlabelled and "What ablating it does" not in unlabelled
    # dissected below the threshold: the best match is named as such, never as the label
    assert "reached the IoU threshold (0.04). The best match was" in unlabelled
    assert "grass" in unlabelled and "<dt>Concept</dt>" not in unlabelled
    assert '<td class="num">n/a</td>' in unlabelled  # a class weight that was null
    pager = [u for u in _parse(site / "layers/000-conv.1/units/1.html").urls if "units" not in u]
    assert pager[-2:] == ["0.html", "2.html"]  # previous and next unit
    bare = (site / "layers/001-head_2/units/1.html").read_text(encoding="utf-8")
    assert "Dissection was not computed" in bare and "What ablating it does" not in bare
    assert "projection" not in bare.lower().split("<main")[1]


def test_units_with_nothing_computed_are_left_out_and_weak_matches_are_no_labels(built) -> None:
    _, site = built
    layer = (site / "layers/000-conv.1/index.html").read_text(encoding="utf-8")
    assert not (site / "layers/000-conv.1/units/3.html").exists()  # listed, nothing computed
    assert "3 of 4" in layer and "units/3.html" not in layer
    assert "<dt>Units with a concept label</dt><dd>2</dd>" in layer
    tiles = [t for t in _parse(site / "layers/000-conv.1/index.html").text if t.strip()]
    assert "stripes" in tiles and "sky" in tiles and "grass" not in tiles
    search = _parse(site / "search.html").text
    assert "stripes" in search and "grass" not in search  # the concept list: labels only


def test_search_index_holds_every_unit_with_concept_and_classes(built) -> None:
    _, site = built
    data = _index(site)
    assert data["model"] == "tiny"
    rows = {(u["layer"], u["unit"]): u for u in data["units"]}
    assert sorted(rows) == [
        ("conv.1", 0),
        ("conv.1", 1),
        ("conv.1", 2),
        ("head/2", 0),
        ("head/2", 1),
    ]
    u0 = rows[("conv.1", 0)]
    assert (u0["concept"], u0["category"], u0["iou"]) == ("stripes", "texture", 0.21)
    assert u0["classes"] == [["tabby cat", 0.8], ["zebra", 0.5]]
    assert rows[("head/2", 0)]["concept"] is None
    assert [rows[("conv.1", u)]["interpretable"] for u in (0, 1, 2)] == [True, False, True]
    assert rows[("conv.1", 1)]["concept"] == "grass"  # searchable, marked as a weak match
    for u in data["units"]:
        assert (site / u["href"]).is_file() and (site / u["image"]).is_file()
    search = _parse(site / "search.html")
    assert search.scripts == ["search-index.js", "static/site.js"]  # the index loads first
    assert "stripes" in search.text and "tabby cat" in search.text


def test_every_string_from_the_atlas_is_escaped(tmp_path) -> None:
    layer = '<img src=x onerror="alert(1)">&'
    atlas = write_tiny_atlas(tmp_path / "atlas", label=HOSTILE, layer_name=layer)
    site = export_site(atlas, tmp_path / "site").parent
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img src=x" not in text, page
        # the only scripts are the site's own
        assert set(_parse(page).scripts) <= {"search-index.js", "static/site.js"}, page
    (card,) = site.glob("layers/000-*/units/0.html")
    parsed = _parse(card)
    assert HOSTILE in parsed.text  # shown as text, exactly
    assert f"Unit 0 of layer {layer}" in parsed.text
    js = (site / "search-index.js").read_text(encoding="utf-8")
    assert "<" not in js  # inert even if pasted into a page
    assert _index(site)["units"][0]["concept"] == HOSTILE


def test_hard_links_and_a_second_export_replace_the_first(tmp_path) -> None:
    atlas = write_tiny_atlas(tmp_path / "atlas")
    site = export_site(atlas, tmp_path / "site", link=True).parent
    src, dst = atlas / "layers/000-conv.1/am/0.png", site / "layers/000-conv.1/am/0.png"
    assert dst.stat().st_ino == src.stat().st_ino
    (site / "stale.html").write_text("old")
    again = export_site(atlas, tmp_path / "site").parent
    assert again == site and (site / MARKER).is_file() and not (site / "stale.html").exists()
    assert dst.stat().st_ino != src.stat().st_ino  # copied this time
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_a_folder_that_is_not_a_site_is_refused_and_kept(tmp_path) -> None:
    atlas = write_tiny_atlas(tmp_path / "atlas")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty") as info:
        export_site(atlas, mine)
    assert isinstance(info.value, ValueError)  # what `cnnvis atlas export` reports as an error
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    with pytest.raises(SiteFolderError, match="is not a folder"):
        export_site(atlas, mine / "thesis.tex")
    assert (mine / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="would replace the atlas"):
        export_site(atlas, atlas)
    with pytest.raises(ValueError, match="would replace the atlas"):
        export_site(atlas, tmp_path)
    assert (atlas / "atlas.json").is_file()


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


L0 = "layers/000-conv.1"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda a: (a / "atlas.json").unlink(), "has no atlas.json: not a built atlas"),
        (lambda a: (a / "atlas.json").write_text("{nope"), "atlas.json is not valid JSON"),
        (
            lambda a: _edit(a / "atlas.json", lambda m: m.update(format="cnnvis-atlas/9")),
            "atlas.json: format is 'cnnvis-atlas/9'; this version reads 'cnnvis-atlas/1'",
        ),
        (
            lambda a: _edit(a / "atlas.json", lambda m: m.pop("layers")),
            "atlas.json has no 'layers'",
        ),
        (
            lambda a: _edit(a / "atlas.json", lambda m: m["layers"][1].pop("shape")),
            "atlas.json: layers[1] has no 'shape'",
        ),
        (lambda a: shutil.rmtree(a / "layers/001-head_2"), "names a layer folder that is missing"),
        (lambda a: (a / L0 / "layer.json").unlink(), "the layer file of 'conv.1' is missing"),
        (
            lambda a: (a / L0 / "am/1.png").unlink(),
            f"{L0}/layer.json: units[1].am names an image that is missing",
        ),
        (
            lambda a: (a / L0 / "top/2_1.png").write_text("GIF89a"),
            f"{L0}/layer.json: units[2].top[1].image names a file that is not a PNG",
        ),
        (
            lambda a: _edit(
                a / L0 / "layer.json", lambda d: d["units"][0].update(am="../../x.png")
            ),
            "units[0].am should be a relative path inside the folder, not '../../x.png'",
        ),
        (
            lambda a: _edit(
                a / L0 / "layer.json", lambda d: d["units"][0]["dissection"].update(iou=math.nan)
            ),
            "units[0].dissection.iou should be finite, not nan",
        ),
        (
            lambda a: _edit(a / L0 / "layer.json", lambda d: d["units"][2].update(unit="2")),
            "units[2].unit should be an integer >= 0, not '2'",
        ),
        (
            lambda a: _edit(a / L0 / "layer.json", lambda d: d["units"][1].update(classes=[["a"]])),
            "units[1].classes[0] should be a [class name, number] pair",
        ),
        (
            lambda a: _edit(
                a / L0 / "layer.json",
                lambda d: d["units"][1]["dissection"].update(interpretable="no"),
            ),
            "units[1].dissection.interpretable should be true or false, not 'no'",
        ),
        (
            lambda a: _edit(a / L0 / "layer.json", lambda d: d.update(name="other")),
            "is 'other' but atlas.json names this layer 'conv.1'",
        ),
        (
            lambda a: _edit(a / L0 / "layer.json", lambda d: d["units"][1].update(unit=0)),
            "units[1] repeats unit 0",
        ),
    ],
)
def test_a_broken_atlas_is_named_and_nothing_is_written(tmp_path, damage, message) -> None:
    atlas = write_tiny_atlas(tmp_path / "atlas")
    damage(atlas)
    with pytest.raises(AtlasFormatError) as info:
        export_site(atlas, tmp_path / "site")
    assert message in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def test_a_missing_atlas_directory_is_named(tmp_path) -> None:
    with pytest.raises(AtlasFormatError, match="does not exist"):
        export_site(tmp_path / "nowhere", tmp_path / "site")


# ------------------------------------------------------------------------ a real (tiny) build
@pytest.fixture(scope="module")
def real_build(tmp_path_factory) -> Path:
    """`build_atlas` of the batch job on a tiny random CNN (a few steps, 10 images)."""
    import sys

    from cnnvis_widgets import load_model
    from cnnvis_widgets.core.atlas.build import BuildSettings, build_atlas

    sys.path.insert(0, str(Path(__file__).parent / "core"))
    import atlas_tiny

    out = tmp_path_factory.mktemp("real-build") / "atlas"
    small = dict(steps=3, size=32, batch=4, n_images=10, shard=4, probe_images=8,
                 inversion_steps=3, inversion_size=32)  # fmt: skip
    handle = load_model(atlas_tiny.tiny(0), device="cpu", input_size=32)
    build_atlas(handle, ["1", "4"], None, out, BuildSettings(**small))
    return out


def test_cnnvis_atlas_export_of_a_real_build(real_build, tmp_path, capsys) -> None:
    from cnnvis_widgets.cli import main

    site = tmp_path / "site"
    assert main(["atlas", "export", str(real_build), "--out", str(site)]) == 0
    assert f"wrote {site / 'index.html'}" in capsys.readouterr().out
    manifest = json.loads((real_build / "atlas.json").read_text())
    pages = ablated = 0
    for i, entry in enumerate(manifest["layers"]):
        layer = json.loads((real_build / entry["dir"] / "layer.json").read_text())
        folder = site / f"layers/{i:03d}-{entry['name']}"
        for u in layer["units"]:
            card = (folder / "units" / f"{u['unit']}.html").read_text(encoding="utf-8")
            pages += 1
            assert f"<h1>Unit {u['unit']} of layer {entry['name']}</h1>" in card
            assert card.count('class="pair"') == len(u["top"]) == 9
            a = u["ablation"]  # the build measured what removing the unit does
            assert a is not None and "<h2>What ablating it does</h2>" in card
            assert f"<dt>Accuracy drop</dt><dd>{a['accuracy_drop']:.3g}</dd>" in card
            ablated += bool(a["classes"])
            for c, v in a["classes"]:
                assert f'>{c}</a></td><td class="num">{v:.3g}</td>' in card
            # the build writes a label only at IoU >= the threshold (null below it)
            if u["dissection"] is not None:
                assert "<dt>Concept</dt>" in card
            else:
                assert "No concept label" in card and "<dt>Concept</dt>" not in card
                best = u.get("best_concept")  # the best match below the threshold, named as such
                assert best is None or "The best match was <a " in card and best["label"] in card
        for img in ("inversion.png", "am/0.png", "top/0_8.png", "proj/0_8.png"):
            assert (folder / img).read_bytes() == (real_build / entry["dir"] / img).read_bytes()
    assert pages == 8 + 12 == len(_index(site)["units"])
    assert ablated > 0  # some unit's card lists the classes it hurts
    for page in site.rglob("*.html"):
        for url in _parse(page).urls:
            path = unquote(urlsplit(url).path)
            assert not path or (page.parent / path).resolve().is_file(), (page, url)
    # a folder that is not a site: refused with the reason, no traceback, nothing lost
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["atlas", "export", str(real_build), "--out", str(tmp_path / "mine")]) == 1
    assert "is not empty and holds no earlier atlas site" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_file_names_with_url_characters_are_percent_encoded(tmp_path) -> None:
    atlas = write_tiny_atlas(tmp_path / "atlas")
    odd = 'am/0 #1?&"%.png'
    (atlas / "layers/001-head_2/am/0.png").rename(atlas / "layers/001-head_2" / odd)
    _edit(atlas / "layers/001-head_2/layer.json", lambda d: d["units"][0].update(am=odd))
    site = export_site(atlas, tmp_path / "site").parent
    page = site / "layers/001-head_2/units/0.html"
    (src,) = [i["src"] for i in _parse(page).images if "/am/" in i["src"]]
    assert src == "../am/0%20%231%3F%26%22%25.png"  # '#' and '?' would cut the URL short
    assert (page.parent / unquote(src)).resolve().is_file()
    row = next(u for u in _index(site)["units"] if u["layer"] == "head/2" and u["unit"] == 0)
    assert (site / unquote(row["image"])).is_file()
