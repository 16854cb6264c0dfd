"""Activation maximization in marimo.

Run it as an app (nothing leaves the machine; the model is the embedded EfficientNet-Lite0):

    marimo run notebooks/marimo_activation_max.py

or edit it with ``marimo edit notebooks/marimo_activation_max.py``. marimo hosts the widget through
``mo.ui.anywidget``; the picture streams live while the optimization runs, and moving a slider
restarts it, as in JupyterLab. ``CNNVIS_NOTEBOOK_STEPS`` (an environment variable) shortens the
run, e.g. for a quick check.
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import os

    import marimo as mo

    from cnnvis_widgets import ActivationMaximization

    return ActivationMaximization, mo, os


@app.cell
def _(ActivationMaximization, mo, os):
    steps = int(os.environ.get("CNNVIS_NOTEBOOK_STEPS", "256"))
    am = mo.ui.anywidget(ActivationMaximization(size=96, steps=steps))
    am  # noqa: B018 - the last expression is what marimo shows
    return (am,)


if __name__ == "__main__":
    app.run()
