"""`cnnvis export`: an executed notebook exported to HTML shows the widget's last state offline."""

from __future__ import annotations

import nbformat
import pytest
from e2e_helpers import image_stats, static_server, wait_until
from nbformat.v4 import new_code_cell, new_notebook

from cnnvis_widgets.export import export_notebook

pytestmark = pytest.mark.e2e

CODE = """import torch
torch.manual_seed(0)
from cnnvis_widgets import ActivationMaximization
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
w = ActivationMaximization(net, layer="0", unit=3, steps=20, size=48)
w.run(); w.wait()
w"""


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over tmp_path/out (the user opening the exported folder)."""
    nb = new_notebook(cells=[new_code_cell(CODE)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    src = tmp_path / "exported.ipynb"
    nbformat.write(nb, src)
    html = export_notebook(src, tmp_path / "out")
    with static_server(html.parent) as base:
        yield base + html.name


def test_exported_widget_renders_with_no_network(served, page, blocked_requests, artifacts_dir):
    page.goto(served)
    root = page.locator(".cv-root").first
    root.wait_for(state="visible", timeout=120_000)
    img = root.locator('img[data-cv="image"]').first
    stats = wait_until(lambda: image_stats(img), lambda s: s["width"] > 0, 60, "the saved image")
    assert stats["width"] == 48 and stats["colors"] > 16
    assert "unit 3" in root.locator('[data-cv="status"]').inner_text()
    page.screenshot(path=str(artifacts_dir / "exported_notebook.png"), full_page=True)
    assert blocked_requests == []
