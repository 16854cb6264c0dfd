"""The lab report renders in Chromium with no network request: images and chart visible."""

from __future__ import annotations

import pytest
import torch
from e2e_helpers import image_stats

from cnnvis_widgets.report import Report

pytestmark = pytest.mark.e2e


def test_report_renders_offline(page, blocked_requests, artifacts_dir, tmp_path) -> None:
    import plotly.graph_objects as go

    g = torch.Generator().manual_seed(0)
    r = Report("Offline report")
    r.add_image(torch.rand(1, 3, 64, 64, generator=g), caption="noise")
    r.add_figure(go.Figure(go.Bar(x=["a", "b", "c"], y=[3, 1, 2])), "bars")
    r.add_record({"seed": 0})
    path = r.save_html(tmp_path / "report.html")
    # the page's own content only (the route of the fixture aborts every non-loopback URL,
    # file:// included): anything the report tried to load would show up in blocked_requests
    page.set_content(path.read_text(), wait_until="load")
    img = page.locator("figure img").first
    stats = image_stats(img)
    assert stats["width"] == 64 and stats["colors"] > 100
    page.locator(".js-plotly-plot .main-svg").first.wait_for(state="attached", timeout=60_000)
    assert page.locator(".js-plotly-plot .bars path").count() == 3
    page.screenshot(path=str(artifacts_dir / "report.png"), full_page=True)
    assert blocked_requests == []
