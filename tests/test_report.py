"""Lab-report export: self-contained HTML, escaping, PDF pages."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
import torch

from cnnvis_widgets.report import Report, find_chromium
from tests.helpers import run_without


def build() -> Report:
    import plotly.graph_objects as go

    r = Report("Lab <3>", author="Ada & Bob")
    r.add_heading("Units of <_blocks.8>")
    r.add_text("first <script>alert(1)</script>\n\nsecond paragraph")
    r.add_image(torch.rand(4, 3, 16, 16), caption="grid of <b>four</b>")
    r.add_record({"class": "<img src=x onerror=alert(1)>", "seed": 3})
    r.add_table([{"unit": 1, "concept": "<red>"}], caption="labels")
    r.add_figure(go.Figure(go.Bar(x=["a", "b"], y=[1, 2])), "a chart")
    return r


def test_html_is_self_contained_and_escaped() -> None:
    html = build().to_html()
    assert "<h1>Lab &lt;3&gt;</h1>" in html and "Ada &amp; Bob" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "&lt;red&gt;" in html and "&lt;b&gt;four" in html
    assert html.count("<p>") >= 2
    # images are embedded PNGs that decode
    srcs = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    assert len(srcs) == 1 and base64.b64decode(srcs[0])[:4] == b"\x89PNG"
    # plotly is inlined (one script), nothing is loaded from elsewhere
    assert "Plotly" in html and "<script src=" not in html and "<link" not in html
    assert "default-src 'none'" in html


def test_widget_and_bad_images() -> None:
    r = Report()
    with pytest.raises(TypeError):
        r.add_image(object())
    with pytest.raises(ValueError, match="PNG or JPEG"):
        r.add_image(b"not an image")

    class NoPicture:
        image = b""

    with pytest.raises(ValueError, match="run"):
        r.add_image(NoPicture())


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler-utils (pdfinfo) missing")
def test_pdf_has_pages(tmp_path) -> None:
    try:
        find_chromium()
    except FileNotFoundError:
        pytest.skip("no Chromium")
    import subprocess

    pdf = build().save_pdf(tmp_path / "r.pdf")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 1 and pdf.read_bytes()[:4] == b"%PDF"


# ------------------------------------------------------------------------------- layering
_WIDGET_PACKAGES = ("anywidget", "ipywidgets", "traitlets")


def _source(module: str) -> tuple[Path, bool] | None:
    """``(file, is_package)`` of a module of an importable top-level package, without importing
    anything but the top-level package's location."""
    import importlib.util

    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    return None


def _imports_of(module: str) -> set[str]:
    """The modules of ``module``'s own package that it imports anywhere (inside functions too)."""
    import ast

    found_src = _source(module)
    assert found_src is not None, module
    path, is_package = found_src
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import topk`
    top = module.split(".")[0]
    return {m for m in found if m.split(".")[0] == top and _source(m) is not None}


def test_report_never_imports_the_widget_layer() -> None:
    """Follow every import of cnnvis_widgets.report* (module level and inside functions, through
    core, data and models): none reaches cnnvis_widgets.widgets."""
    seen: set[str] = set()
    todo = ["cnnvis_widgets.report", "cnnvis_widgets.report_sections"]
    paths: dict[str, str] = {}
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        for dep in _imports_of(mod):
            paths.setdefault(dep, mod)
            todo.append(dep)
    assert "cnnvis_widgets.core.projections" in seen  # the walk does follow function imports
    bad = sorted(m for m in seen if m.startswith("cnnvis_widgets.widgets"))
    assert not bad, {m: paths[m] for m in bad}


def test_layering_check_sees_a_widget_import(tmp_path, monkeypatch) -> None:
    """The check above would fail for a report module importing from widgets inside a function."""
    pkg = tmp_path / "probe_pkg"
    (pkg / "widgets").mkdir(parents=True)
    for name in ("__init__.py", "widgets/__init__.py", "widgets/atlas.py"):
        (pkg / name).write_text("")
    (pkg / "sections.py").write_text("def f():\n    from .widgets import atlas\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "probe_pkg.widgets.atlas" in _imports_of("probe_pkg.sections")


def test_every_report_section_builds_without_widget_packages(tmp_path) -> None:
    """The whole report (DeconvNet's patches and projections included) with anywidget, ipywidgets
    and traitlets blocked: no section says "not available", none fails."""
    code = r"""
from tests.conftest import make_tiny
from cnnvis_widgets import load_model, report_sections
from cnnvis_widgets.cli import _section
from cnnvis_widgets.report import Report
h = load_model(make_tiny(), device='cpu', input_size=32)
ctx = report_sections.Context(handle=h, steps=3, quick=True)
report, failures = Report('blocked'), []
for title, fn in report_sections.SECTIONS:
    _section(report, title, lambda r, fn=fn: fn(ctx, r), failures, required=True)
html = report.to_html()
open(sys.argv[1], 'w').write(html)
print('failures', failures)
print('images', html.count("src='data:image/png"))
print('widgets', sorted(m for m in sys.modules if m.startswith('cnnvis_widgets.widgets')
      or m.split('.')[0] in BLOCKED))
"""
    out_html = tmp_path / "report.html"
    out = run_without(code, str(out_html), blocked=_WIDGET_PACKAGES, timeout=600)
    assert "failures []" in out.stdout, out.stdout
    assert "widgets []" in out.stdout, out.stdout
    html = out_html.read_text()
    assert "Not available in this installation" not in html
    assert "This section failed" not in html
    assert "DeconvNet projections below" in html  # the projections, not only the patches
    # AM, inversion, DeconvNet (one per unit, 3), attribution, adversarial
    assert int(re.search(r"images (\d+)", out.stdout).group(1)) >= 7


def test_attribution_evidence_section_has_the_curves_the_auc_table_and_the_verdicts(
    tiny_handle,
) -> None:
    """The faithfulness chart (deletion and insertion, one line per map and baseline order, the
    AUC in the legend), the AUC table that matches the curves, and a sanity verdict per method."""
    from cnnvis_widgets import report_sections
    from cnnvis_widgets.core import attribution as A
    from cnnvis_widgets.core.attribution.faithfulness import auc

    assert ("Attribution evidence", report_sections.attribution_evidence_section) in (
        report_sections.SECTIONS
    )
    ctx = report_sections.Context(handle=tiny_handle, steps=3, quick=True)
    r = Report("evidence")
    report_sections.attribution_evidence_section(ctx, r)
    figures = [i.payload for i in r.items if i.kind == "figure"]
    tables = {i.caption.split(" ")[0]: i.payload for i in r.items if i.kind == "table"}
    assert len(figures) == 1
    fig = figures[0]
    orders = [*A.ALL_METHODS, "random", "centre"]  # every method, then the baselines
    names = [t.name for t in fig.data]
    assert len(names) == 2 * len(orders)
    assert [n.split(" ")[0] for n in names] == orders * 2
    assert {t.legendgroup for t in fig.data} == {"deletion", "insertion"}
    dashed = [t.name.split(" ")[0] for t in fig.data if t.line.dash]
    assert dashed == ["random", "centre"] * 2  # the baselines, beside every map
    first = fig.data[0]  # saliency's deletion curve: starts at the photo's probability
    assert len(first.x) == 9 and first.x[0] == 0.0 and first.x[-1] == 1.0
    cols, rows = tables["Area"]
    assert cols == ["order", "deletion AUC", "insertion AUC"]
    assert [row["order"] for row in rows] == orders
    assert rows[0]["deletion AUC"] == f"{auc(torch.tensor(first.y)):.3f}"
    assert f"({rows[0]['deletion AUC']})" in first.name
    cols, rows = tables["Spearman"]
    assert [row["stage"] for row in rows] == ["trained", "fc", "conv2"]
    assert rows[0]["saliency"] == "1.00" and rows[0]["guided_backprop"] == "1.00"
    cols, rows = tables["Sanity"]
    assert [row["method"] for row in rows] == ["saliency", "guided_backprop"]
    assert all(row["verdict"].startswith(("passes", "fails")) for row in rows)
    html = r.to_html()
    assert "deletion AUC" in html and "Plotly" in html and "passes: " in html


@pytest.mark.parametrize("channels", [3, 1])
def test_design_section_has_filters_dead_units_ranking_and_invariance(channels) -> None:
    """Issue 16's section: the first-layer filter grid, a dead-unit row per activation layer, the
    ranking of units by accuracy drop (sorted), and one invariance panel per transformation with
    a line per layer and the class probability; a grey 28-pixel network is measured on digits."""
    from cnnvis_widgets import load_model, report_sections
    from cnnvis_widgets.report_design import design_section
    from tests.conftest import make_tiny

    titles = [title for title, _ in report_sections.SECTIONS]
    assert any(t.startswith("Design by looking") for t in titles)
    if channels == 3:
        h = load_model(make_tiny(), device="cpu", input_size=32)
    else:
        h = load_model(
            make_tiny(in_channels=1, classes=10), device="cpu", input_size=28, mean=(0.1,),
            std=(0.3,),
        )  # fmt: skip
    r = Report("design")
    ctx = report_sections.Context(handle=h, steps=3, quick=True)
    design_section(ctx, r)
    kinds = [i.kind for i in r.items]
    assert kinds.count("image") == 1 and kinds.count("figure") == 1
    tables = {i.caption.split(" ")[0]: i.payload for i in r.items if i.kind == "table"}
    cols, rows = tables["Dead"]
    assert [row["layer"] for row in rows] == ["relu1", "relu2"]
    cols, rows = tables["Units"]
    drops = [float(row["accuracy drop"]) for row in rows]
    assert drops == sorted(drops, reverse=True)
    assert sorted(row["unit"] for row in rows) == list(range(h.layer(ctx.middle_layer()).channels))
    text = " ".join(i.payload for i in r.items if i.kind == "text")
    assert ("their labels" in text) == (channels == 1)  # digits have labels; photos do not
    fig = next(i.payload for i in r.items if i.kind == "figure")
    names = [t.name for t in fig.data]
    assert all(names.count(n) == 3 for n in names)  # a line per panel: translate, scale, rotate
    dashed = {t.name for t in fig.data if t.line.dash == "dash"}
    assert len(dashed) == 1 and next(iter(dashed)).startswith("p(")
    assert len(set(names)) >= 3  # at least two layers and the probability
