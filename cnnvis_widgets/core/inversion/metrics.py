"""The numbers of a finished inversion, whichever method made it (optimization or decoder).

The normalized feature error of the final image at its layer (without jitter), and its pixel
correlation and pixel error against the original:

- :func:`feature_error`, :func:`pixel_correlation`, :func:`pixel_error` for a batch;
- :func:`reconstruction_metrics` all three for final images, one per layer;
- :func:`metric_lines` writes them as the text a person reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...models.handle import ModelHandle
from .features import layer_features, sq_norm

__all__ = [
    "feature_error",
    "pixel_correlation",
    "pixel_error",
    "reconstruction_metrics",
    "metric_lines",
    "METRICS_NOTE",
]

#: the last line of :func:`metric_lines`: what the numbers mean
METRICS_NOTE = (
    "feature error ‖φ(x) − φ₀‖² / ‖φ₀‖² of the final image, without jitter; "
    "pixel error = mean squared difference / variance of the original"
)


def feature_error(
    handle: ModelHandle, pixels: torch.Tensor, layer: str, target: torch.Tensor
) -> torch.Tensor:
    """Normalized feature error ``||phi(x) - phi0||^2 / ||phi0||^2`` per image ``(B,)``.

    ``pixels``: pixel-space batch; ``target``: ``phi0``, the layer's features of the original
    (a batch of one broadcasts).
    """
    phi = layer_features(handle, pixels, layer)[layer]
    return (sq_norm(phi - target) / sq_norm(target).clamp_min(1e-12)).cpu()


def pixel_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over all pixels of each image of ``a`` with ``b``, ``(B,)``.

    >>> a, b = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 6.0]])
    >>> round(float(pixel_correlation(a, b)[0]), 6), round(float(pixel_correlation(a, -b)[0]), 6)
    (1.0, -1.0)
    """
    a = a.detach().float().flatten(1)
    b = b.detach().float().to(a.device).flatten(1).expand_as(a)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).cpu()


def pixel_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel difference of each image of ``a`` with ``b``, over ``b``'s variance."""
    a = a.detach().float().flatten(1)
    b = b.detach().float().to(a.device).flatten(1).expand_as(a)
    return ((a - b).pow(2).mean(1) / b.var(dim=1).clamp_min(1e-12)).cpu()


def final_feature_errors(
    handle: ModelHandle, target: torch.Tensor, images: torch.Tensor, layers: Sequence[str]
) -> torch.Tensor:
    """Feature error of ``images[i]`` at ``layers[i]`` against the original ``target``,
    without jitter, ``(len(layers),)``."""
    errors = []
    for i, name in enumerate(layers):
        phi0 = layer_features(handle, target, name)[name]
        errors.append(feature_error(handle, images[i : i + 1], name, phi0))
    return torch.cat(errors)


def reconstruction_metrics(
    handle: ModelHandle,
    target: torch.Tensor,
    images: torch.Tensor,
    layers: Sequence[str],
    feature_errors: Sequence[float] | torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """Feature error, pixel correlation and pixel error of final reconstructions.

    Parameters
    ----------
    handle : ModelHandle
        The model.
    target : torch.Tensor
        The original, pixel space ``(1, C, H, W)``.
    images : torch.Tensor
        One reconstruction per layer ``(len(layers), C, H, W)`` in ``[0, 1]``.
    layers : sequence of str
        The layer of each image.
    feature_errors : sequence of float, optional
        Known feature errors (a decoder's); recomputed at each layer, without jitter, when None.

    Returns
    -------
    dict
        ``feature_error``, ``pixel_correlation``, ``pixel_error``: one float per layer.

    Examples
    --------
    >>> m = reconstruction_metrics(h, photo, result.image, ["_blocks.2"])  # doctest: +SKIP
    >>> sorted(m)                                                          # doctest: +SKIP
    ['feature_error', 'pixel_correlation', 'pixel_error']
    """
    if feature_errors is None:
        feature_errors = final_feature_errors(handle, target, images, layers)
    return {
        "feature_error": [float(v) for v in feature_errors],
        "pixel_correlation": [float(v) for v in pixel_correlation(images, target)],
        "pixel_error": [float(v) for v in pixel_error(images, target)],
    }


def metric_lines(
    layers: Sequence[str],
    metrics: dict[str, list[float]],
    missing: Sequence[str] = (),
    stopped: tuple[int, int] | None = None,
) -> list[str]:
    """The text of :func:`reconstruction_metrics`: one line per layer, then what they mean.

    ``missing``: layers without a decoder (a line names them); ``stopped``: ``(step, total)``
    of a run stopped early (a first line says the result is partial).

    Examples
    --------
    >>> metric_lines(["conv2"], {"feature_error": [0.1], "pixel_correlation": [0.9],
    ...                          "pixel_error": [0.2]})[0]
    'conv2: feature error 0.1000, pixel correlation 0.900, pixel error 0.200'
    """
    lines = [
        f"{name}: feature error {f:.4f}, pixel correlation {c:.3f}, pixel error {p:.3f}"
        for name, f, c, p in zip(
            layers,
            metrics["feature_error"],
            metrics["pixel_correlation"],
            metrics["pixel_error"],
        )
    ]
    if missing:
        lines.append(f"no decoder yet (grey): {', '.join(missing)}")
    lines.append(METRICS_NOTE)
    if stopped is not None:
        lines.insert(0, f"stopped at step {stopped[0]} of {stopped[1]}: partial result")
    return lines
