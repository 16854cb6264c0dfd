"""The report's "design by looking" section (issue 16): first-layer filters, dead units, what
each unit is worth, and invariance (Zeiler & Fergus 2014, Figs. 5 and 6; Morcos et al. 2018).

Built from :mod:`cnnvis_widgets.core` only (never the widget layer), like every section in
:mod:`cnnvis_widgets.report_sections`.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["design_section", "invariance_figure", "design_dataset"]


def design_dataset(handle: Any, n: int) -> Any:
    """``n`` images to measure units on: held-out digits (with labels) for a grey 28-pixel network,
    else augmented packaged photos (no labels: the intact network's answers are the labels)."""
    if handle.in_channels == 1:
        from .data.digits import load_digits, train_test_split

        _, test = train_test_split(load_digits())
        step = max(1, len(test) // n)
        x, y = test.subset(list(range(0, len(test), step))[:n]).tensors()
        if tuple(x.shape[-2:]) != handle.input_size:
            x = torch.nn.functional.interpolate(x, size=handle.input_size, mode="bilinear")
        return x.clamp(0, 1), y if handle.num_outputs == 10 else None
    from .data import datasets

    return datasets.augmented_samples(n=n, size=handle.input_size[0], seed=0)


def invariance_figure(result: Any, title: str = "") -> Any:
    """One plotly panel per transformation: a line per layer (feature distance) and the class
    probability dashed."""
    from plotly.subplots import make_subplots

    from .figures import plotly

    go = plotly()
    kinds = list(result.curves)
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    for col, kind in enumerate(kinds, start=1):
        curve = result.curves[kind]
        for i, (layer, ds) in enumerate(curve.distances.items()):
            fig.add_trace(
                go.Scatter(
                    x=curve.values,
                    y=ds,
                    mode="lines+markers",
                    name=layer,
                    legendgroup=layer,
                    showlegend=col == 1,
                    line={"color": palette[i % len(palette)]},
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=curve.values,
                y=curve.probability,
                mode="lines",
                name=f"p({result.class_name})",
                legendgroup="p",
                showlegend=col == 1,
                line={"dash": "dash", "color": "#444"},
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text=curve.unit, row=1, col=col)
    fig.update_yaxes(title_text=f"distance (vs {result.normalized}) / probability", row=1, col=1)
    fig.update_layout(title=title or "Invariance (Zeiler & Fergus 2014, Fig. 5)")
    return fig


def design_section(ctx: Any, report: Any) -> None:
    """First-layer filters, dead units per layer, units ranked by what removing them costs, and
    the invariance chart of a photo."""
    from .core import filters, importance, invariance
    from .data import sample_image

    h = ctx.handle
    try:
        grid = filters.filter_grid(
            h, scale=4 if h.layer(filters.first_conv(h)).channels > 32 else 8
        )
    except ValueError as exc:
        report.add_text(f"First-layer filters: {exc}")
    else:
        report.add_text(
            "The first convolution's filters, each normalized on its own (Zeiler & Fergus 2014 "
            "looked at these to fix AlexNet's design: no mid frequencies, dead filters)."
        )
        report.add_image(grid, f"First-layer filters of {filters.first_conv(h)}")
    n = 8 if ctx.quick else 48
    data = design_dataset(h, n)
    live = filters.dead_units(h, data, batch=16)
    report.add_table(
        [
            {
                "layer": name,
                "units": int(lv.peak.numel()),
                "dead": len(lv.dead),
                "dead units": ", ".join(map(str, lv.dead[:12]))
                + (" ..." if len(lv.dead) > 12 else ""),
            }
            for name, lv in list(live.items())[:12]
        ],
        ["layer", "units", "dead", "dead units"],
        f"Dead units (never above zero over {n} images)",
    )
    layer = ctx.middle_layer()
    units = list(range(min(16, h.layer(layer).channels)))
    res = importance.ablate(h, layer, units, data, batch=16)
    measured = (
        "their labels" if res.labels_from == "dataset" else "agreement with the intact network"
    )
    report.add_text(
        f"What each unit of {layer} is worth: the drop in accuracy when it is set to zero, over "
        f"{res.count} images ({measured}; intact: {res.baseline_accuracy:.1%}), and the classes "
        "whose probability it lowers most (Morcos et al. 2018)."
        + (f" The first {len(units)} units only." if len(units) < h.layer(layer).channels else "")
    )
    report.add_table(
        [
            {
                "rank": i + 1,
                "unit": w.units[0],
                "accuracy drop": f"{w.accuracy_drop:+.3f}",
                "hurts most": ", ".join(f"{c} ({d:+.3f})" for c, d in w.hurts) or "-",
            }
            for i, w in enumerate(res.worth())
        ],
        ["rank", "unit", "accuracy drop", "hurts most"],
        f"Units of {layer} ranked by importance",
    )
    if h.in_channels == 3:
        image: Any = sample_image("cat")
        reference: Any = "photos"
        name = "cat photo"
    else:
        x = data[0] if isinstance(data, tuple) else None
        if x is None:
            return
        image, reference, name = x[:1], x[1:9], "first digit"
    inv = invariance.invariance(h, image, steps=3 if ctx.quick else 7, reference=reference)
    report.add_text(
        f"Invariance (Zeiler & Fergus 2014, Fig. 5): the {name} shifted, scaled and rotated; per "
        "layer the distance of its features from the unmoved image's (relative to "
        f"{inv.normalized}), and the probability of '{inv.class_name}'. Lower layers change most; "
        "the top is stable."
    )
    report.add_figure(invariance_figure(inv), "Feature distance per layer and class probability")
