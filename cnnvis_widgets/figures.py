"""Plotly figures, in one place for the widgets and the report (plotly is optional).

Below the widgets and the report, above core: the builders take core results (duck-typed; core is
imported lazily where a builder needs a core function) and import plotly only when called, so
importing this module needs neither plotly nor the widget stack.

Examples
--------
>>> from cnnvis_widgets.figures import summary_figure          # doctest: +SKIP
>>> summary_figure(dissect(handle, layers, probe)).show()      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .core.attribution.faithfulness import Curves
    from .core.dissection import Dissection

__all__ = [
    "plotly",
    "plotly_js",
    "figure_html",
    "summary_figure",
    "comparison_figure",
    "faithfulness_figure",
]


def plotly() -> Any:
    """``plotly.graph_objects``, or an ImportError that says how to get it."""
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - plotly is optional
        raise ImportError(
            "this figure needs plotly: pip install plotly (the widget itself does not)"
        ) from exc
    return go


def plotly_js() -> str:
    """Plotly's JavaScript bundle (to inline once in a self-contained page; no CDN)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def figure_html(figure: Any) -> str:
    """One figure as an HTML fragment that expects :func:`plotly_js` loaded once in the page."""
    return str(figure.to_html(full_html=False, include_plotlyjs=False))


def summary_figure(result: Dissection) -> Any:
    """Grouped bars (plotly): unique detectors per category for every dissected layer.

    Examples
    --------
    >>> summary_figure(dissect(handle, layers, probe)).show()   # doctest: +SKIP
    """
    go = plotly()
    rows = result.summary()
    fig = go.Figure()
    for cat in result.categories:
        fig.add_bar(name=cat, x=[s["layer"] for s in rows], y=[s["unique"][cat] for s in rows])
    fig.update_layout(
        barmode="group",
        title=f"Unique detectors per category ({result.model.get('name', '')})",
        xaxis_title="layer",
        yaxis_title="unique detectors",
    )
    return fig


def comparison_figure(results: Sequence[Dissection], names: Sequence[str] | None = None) -> Any:
    """Grouped bars (plotly): interpretable units per layer for several dissections.

    Examples
    --------
    >>> comparison_figure([pretrained, random], ["imagenet", "random"])   # doctest: +SKIP
    """
    from .core.dissection import compare_dissections

    go = plotly()
    cmp = compare_dissections(results, names)
    fig = go.Figure()
    for m, name in enumerate(cmp.names):
        fig.add_bar(name=name, x=cmp.layers, y=cmp.interpretable[m])
    fig.update_layout(
        barmode="group",
        title="Interpretable units per layer",
        xaxis_title="layer",
        yaxis_title="interpretable units",
    )
    return fig


#: the baseline orders of the faithfulness curves, drawn dashed and grey beside the maps
_BASELINE_STYLE = {"random": "dot", "centre": "dash"}


def faithfulness_figure(curves: Curves, title: str = "") -> Any:
    """Deletion and insertion curves side by side (plotly), one line per map and baseline order.

    ``curves`` is a :class:`~cnnvis_widgets.core.attribution.faithfulness.Curves`; the legend
    gives each line's area under the curve (deletion: lower is better; insertion: higher). The
    baseline orders (random, centre-first) are grey and dashed, so the maps stand out.

    Examples
    --------
    >>> faithfulness_figure(faithfulness(handle, x, 281, maps, steps=20)).show()  # doctest: +SKIP
    """
    go = plotly()
    from plotly.subplots import make_subplots

    kinds = [k for k in ("deletion", "insertion") if curves.curves.get(k)]
    fig = make_subplots(
        rows=1,
        cols=max(1, len(kinds)),
        subplot_titles=[f"{k} (AUC {'lower' if k == 'deletion' else 'higher'} is better)"
                        for k in kinds],
    )  # fmt: skip
    fractions = [float(f) for f in curves.fractions]
    for col, kind in enumerate(kinds, start=1):
        areas = curves.auc(kind)
        for name, values in curves.curves[kind].items():
            dash = _BASELINE_STYLE.get(name)
            fig.add_trace(
                go.Scatter(
                    x=fractions,
                    y=[float(v) for v in values],
                    mode="lines",
                    name=f"{name} ({areas[name]:.3f})",
                    legendgroup=kind,
                    legendgrouptitle_text=kind,
                    line={"dash": dash, "color": "#888"} if dash else {},
                ),
                row=1,
                col=col,
            )
        verb = "removed" if kind == "deletion" else "revealed"
        fig.update_xaxes(title_text=f"fraction of pixels {verb}", range=[0, 1], row=1, col=col)
        fig.update_yaxes(title_text="class probability", row=1, col=col)
    fig.update_layout(
        title=title or f"Deletion and insertion curves (class {curves.target})",
        legend={"groupclick": "toggleitem"},
    )
    return fig
