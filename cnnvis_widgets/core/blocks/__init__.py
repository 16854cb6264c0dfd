"""Building blocks the methods are made of (Lucid/Lucent's ``param / objectives / transform``).

* ``hooks``: :func:`capture` layer outputs with forward hooks (always removed), ``forward_to``.
* ``rules``: :func:`relu_rule`, the backward rule at the rectifiers (gradient, DeconvNet, guided).
* ``params``: image parameterizations (pixel; FFT with decorrelated colour), ``ImageParam``.
* ``transforms``: random image transforms (pad, jitter, scale, rotate, affine) and ``compose``.
* ``regularizers``: L2 decay, blur, clipping, total variation, alpha-norm.
* ``objectives``: composable objectives (unit, channel, class logit, layer, diversity).
* ``optimize``: the one optimization loop, a generator of ``Step`` s.
* ``streaming``: :class:`StreamingQuantile`, per-unit quantiles in one pass (mergeable).
* ``receptive``: exact receptive fields of a unit (:func:`receptive_field`).

The package imports nothing itself: ``from cnnvis_widgets.core.blocks import hooks`` (the old
paths ``cnnvis_widgets.core.hooks``, ``.params``... keep working as re-exports).
"""
