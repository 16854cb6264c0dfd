"""Reconstructions by trained decoders, and the metrics of a finished inversion.

Both inversion methods end in the same numbers: the normalized feature error of the final image
at its layer (without jitter), and its pixel correlation and pixel error against the original.

- :func:`decode_layers` reconstructs one photo from several layers with their trained decoders
  (Dosovitskiy & Brox 2016) in one pass each; a layer without a decoder gives a grey image.
- :func:`reconstruction_metrics` recomputes those numbers for final images, one per layer.
- :func:`metric_lines` writes them as the text a person reads.
- :func:`trained_steps` says how far the decoder of a layer was trained (memory or disk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..models import ModelHandle
from . import inversion as inv
from . import upconv

__all__ = ["decode_layers", "reconstruction_metrics", "metric_lines", "trained_steps"]

#: the last line of :func:`metric_lines`: what the numbers mean
METRICS_NOTE = (
    "feature error ‖φ(x) − φ₀‖² / ‖φ₀‖² of the final image, without jitter; "
    "pixel error = mean squared difference / variance of the original"
)


def decode_layers(
    handle: ModelHandle,
    target: torch.Tensor,
    layers: Sequence[str],
    decoder_of: Callable[[str], upconv.UpconvDecoder | None],
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Reconstruct ``target`` from each layer's features with that layer's decoder.

    Parameters
    ----------
    handle : ModelHandle
        The model whose features are decoded.
    target : torch.Tensor
        The photo, pixel space ``(1, C, H, W)``.
    layers : sequence of str
        The layers, in the order of the images returned.
    decoder_of : callable
        Layer name -> its trained decoder, or None when there is none (e.g.
        ``lambda name: upconv.load_decoder(handle, name, size=128)``).

    Returns
    -------
    (torch.Tensor, torch.Tensor, list of str)
        Reconstructions ``(len(layers), C, H, W)`` (grey 0.5 for a layer without a decoder),
        their feature errors (NaN without a decoder) and the layers without a decoder.

    Raises
    ------
    FileNotFoundError
        When no layer has a decoder (the message says how to train one).

    Examples
    --------
    >>> load = lambda name: upconv.load_decoder(h, name, size=128)
    >>> images, errors, missing = decode_layers(h, photo, ["_blocks.2"], load)  # doctest: +SKIP
    """
    images, errors, missing = [], [], []
    for name in layers:
        dec = decoder_of(name)
        if dec is None:
            missing.append(name)
            images.append(torch.full_like(target, 0.5))
            errors.append(float("nan"))
            continue
        phi0 = inv.layer_features(handle, target, name)[name]
        rec = dec.decode(phi0, size=target.shape[-2:])
        images.append(rec)
        errors.append(float(inv.feature_error(handle, rec, name, phi0)[0]))
    if len(missing) == len(layers):
        raise FileNotFoundError(
            f"no decoder trained for {', '.join(missing)} yet: press 'Train decoder' (it "
            "trains the decoder of the selected layer) or use the regularized method"
        )
    return torch.cat(images), torch.tensor(errors), missing


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
        fe = []
        for i, name in enumerate(layers):
            phi0 = inv.layer_features(handle, target, name)[name]
            fe.append(float(inv.feature_error(handle, images[i : i + 1], name, phi0)))
    else:
        fe = [float(v) for v in feature_errors]
    return {
        "feature_error": fe,
        "pixel_correlation": [float(v) for v in inv.pixel_correlation(images, target)],
        "pixel_error": [float(v) for v in inv.pixel_error(images, target)],
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


def trained_steps(
    handle: ModelHandle, layer: str, size: int, decoder: upconv.UpconvDecoder | None = None
) -> int | None:
    """How many steps the decoder of ``layer`` was trained: the one in memory, else on disk.

    Returns None (or 0) when there is none.

    Examples
    --------
    >>> trained_steps(h, "_blocks.2", 128)                                 # doctest: +SKIP
    2000
    """
    steps = decoder.trained_steps if decoder is not None else None
    path = upconv.decoder_path(handle, layer, size=size)
    if steps is None and path.is_file():
        steps = int(upconv._read(path).get("step", 0))
    return steps
