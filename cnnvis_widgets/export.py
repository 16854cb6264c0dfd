"""Export an executed notebook to HTML whose widgets render with no network.

nbconvert's HTML loads require.js, the widget HTML manager and anywidget from CDNs, so offline
the widgets are blank. Here the three are vendored (copied from npm at build time, shipped in the
wheel under ``widgets/static/vendor``) into a ``cnnvis_vendor/`` folder next to the HTML, and the
page is pointed at them. MathJax is not loaded (no CDN).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["export_notebook", "vendor_dir"]

VENDOR_FOLDER = "cnnvis_vendor"


def vendor_dir() -> Path:
    """The vendored front-end files shipped with the package."""
    path = Path(__file__).resolve().parent / "widgets" / "static" / "vendor"
    if not (path / "embed-amd.js").exists():
        raise FileNotFoundError(
            f"the vendored widget manager is missing from {path}: build the front end "
            "(`make js` or `npm --prefix js run build`) in the source tree"
        )
    return path


def export_notebook(
    notebook: str | Path,
    out_dir: str | Path | None = None,
    *,
    execute: bool = True,
    timeout: int = 900,
    kernel_name: str = "python3",
) -> Path:
    """Execute ``notebook`` (keeping widget state) and write ``<name>.html`` that renders offline.

    Returns the path of the HTML file; ``cnnvis_vendor/`` is written beside it.
    """
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    out = Path(out_dir).resolve() if out_dir else notebook.parent
    out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(notebook, as_version=4)
    if execute:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError

        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=kernel_name,
            resources={"metadata": {"path": str(notebook.parent)}},
            store_widget_state=True,
        )
        try:
            client.execute()
        except CellExecutionError as exc:
            raise RuntimeError(f"executing {notebook.name} failed: {exc}") from exc
    exporter = HTMLExporter(template_name="lab")
    exporter.require_js_url = f"{VENDOR_FOLDER}/require.js"
    exporter.widget_renderer_url = f"{VENDOR_FOLDER}/embed-amd.js"
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(nb)
    config = (
        "<script>require.config({paths: {anywidget: "
        f'"{VENDOR_FOLDER}/anywidget"' + "}});</script>"
    )
    pattern = re.compile(
        r'(<script[^>]*src="' + re.escape(exporter.require_js_url) + r'"[^>]*>\s*</script>)'
    )
    body, n = pattern.subn(lambda m: m.group(1) + config, body, count=1)
    if n == 0:
        raise RuntimeError("could not find the require.js tag in nbconvert's output")
    body = _strip_cdn_links(body)
    html_path = out / f"{notebook.stem}.html"
    html_path.write_text(body, encoding="utf-8")
    dest = out / VENDOR_FOLDER
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(vendor_dir(), dest)
    return html_path


def _strip_cdn_links(body: str) -> str:
    """Drop <script>/<link> tags that point to another host (MathJax, fonts...)."""
    return re.sub(
        r"<(script|link)\b[^>]*(src|href)=\"https?://[^\"]*\"[^>]*>(\s*</script>)?", "", body
    )
