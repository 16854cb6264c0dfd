"""A model's top-k predictions for one picture, and the ways the widgets show them.

:func:`top_predictions` runs the model once (no gradients) and returns the top-k classes with
their softmax probabilities; :func:`prediction_rows`, :func:`class_options` and
:func:`prediction_record` turn them into a bar chart's rows, a class picker's options (the top-k
first) and JSON-able records.
"""

from __future__ import annotations

import torch

from ...models import ModelHandle

__all__ = ["top_predictions", "prediction_rows", "class_options", "prediction_record"]


def top_predictions(
    handle: ModelHandle, x: torch.Tensor, k: int = 5
) -> tuple[list[int], list[float]]:
    """The ``k`` most probable classes of one model input and their softmax probabilities.

    Parameters
    ----------
    handle : ModelHandle
        The model (run without gradients; a tuple output's first element is the logits).
    x : torch.Tensor
        One model-input batch ``(1, C, H, W)`` (normalized, as :meth:`ModelHandle.preprocess`
        returns it).
    k : int
        How many classes (at most the number of outputs).

    Returns
    -------
    (list of int, list of float)
        Classes, most probable first, and their probabilities.

    Raises
    ------
    FloatingPointError
        When the model's output is NaN or infinite.

    Examples
    --------
    >>> top, probs = top_predictions(handle, handle.preprocess(photo))      # doctest: +SKIP
    >>> top[0], round(probs[0], 3)                                          # doctest: +SKIP
    (281, 0.612)
    """
    with torch.no_grad():
        out = handle.logits(x)
    if not torch.isfinite(out).all():
        raise FloatingPointError(
            "the model's output is NaN or infinite for this picture; check its weights"
        )
    probs = out.float().softmax(dim=1)[0]
    p, idx = probs.topk(min(k, probs.numel()))
    return [int(i) for i in idx], [float(v) for v in p]


def prediction_rows(
    handle: ModelHandle, top: list[int], probs: list[float], digits: int = 4
) -> list[list]:
    """``[["281 tabby", 0.612], ...]``: a bar chart's rows (probabilities rounded).

    Examples
    --------
    >>> prediction_rows(handle, [281], [0.61234])                           # doctest: +SKIP
    [['281 tabby', 0.6123]]
    """
    return [[f"{c} {handle.class_name(c)}", round(p, digits)] for c, p in zip(top, probs)]


def class_options(
    handle: ModelHandle, top: list[int], probs: list[float] | None = None
) -> list[list]:
    """``[label, index]`` options of a class picker: "top-1 prediction" (-1), the top-k, then all.

    Examples
    --------
    >>> class_options(handle, [281], [0.6])[:2]                             # doctest: +SKIP
    [['top-1 prediction (tabby)', -1], ['#1 60.0%: 281 tabby', 281]]
    """
    names = handle.class_names or [f"class {i}" for i in range(handle.num_outputs)]
    label = f"top-1 prediction ({handle.class_name(top[0])})" if top else "top-1 prediction"
    first: list[list] = [[label, -1]]
    for rank, c in enumerate(top):
        p = f" {probs[rank]:.1%}" if probs else ""
        first.append([f"#{rank + 1}{p}: {c} {names[c]}", c])
    rest = [[f"{i}: {n}", i] for i, n in enumerate(names)]
    return first + rest


def prediction_record(handle: ModelHandle, top: list[int], probs: list[float]) -> list[dict]:
    """JSON-able ``{"class", "name", "probability"}`` per predicted class.

    Examples
    --------
    >>> prediction_record(handle, [281], [0.6123456789])                    # doctest: +SKIP
    [{'class': 281, 'name': 'tabby', 'probability': 0.612346}]
    """
    return [
        {"class": c, "name": handle.class_name(c), "probability": round(p, 6)}
        for c, p in zip(top, probs)
    ]
