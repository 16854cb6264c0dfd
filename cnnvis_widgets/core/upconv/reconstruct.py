"""Reconstructions by trained decoders: one forward pass from a layer's features to pixels.

:func:`reconstruct` decodes one photo at one layer; :func:`decode_layers` reconstructs a photo
from several layers with their decoders (a layer without one gives a grey image).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image

from ...models.handle import ModelHandle
from ..inversion import feature_error, layer_features, target_pixels
from .checkpoints import load_decoder
from .decoder import UpconvDecoder, autocast

__all__ = ["reconstruct", "decode_layers", "decoded_features"]


def decoded_features(handle: ModelHandle, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    """The features of ``pixels`` at ``layer`` as a decoder takes them: float32, computed in
    mixed precision on CUDA."""
    with autocast(handle.device):
        return layer_features(handle, pixels, layer)[layer].float()


def reconstruct(
    handle: ModelHandle,
    image: Image.Image | torch.Tensor,
    layer: str,
    decoder: UpconvDecoder | None = None,
    *,
    size: int | None = None,
) -> torch.Tensor:
    """Features of ``image`` at ``layer``, decoded: pixel space ``(1, C, H, W)`` on the device.

    ``decoder`` defaults to the cached one (``FileNotFoundError`` when none was trained).

    Examples
    --------
    >>> pixels = reconstruct(h, sample_image("cat"), "_blocks.3", size=128)  # doctest: +SKIP
    """
    if decoder is None:
        decoder = load_decoder(handle, layer, size=size)
        if decoder is None:
            raise FileNotFoundError(
                f"no decoder trained for layer {layer!r} of {handle.name!r} yet: run "
                f"train_decoder_steps(handle, {layer!r}) (or press 'Train decoder' in the widget)"
            )
    pixels = target_pixels(handle, image, size)
    phi = decoded_features(handle, layer, pixels)
    return decoder.decode(phi, size=pixels.shape[-2:])


def decode_layers(
    handle: ModelHandle,
    target: torch.Tensor,
    layers: Sequence[str],
    decoder_of: Callable[[str], UpconvDecoder | None],
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
        phi0 = layer_features(handle, target, name)[name]
        rec = dec.decode(phi0, size=target.shape[-2:])
        images.append(rec)
        errors.append(float(feature_error(handle, rec, name, phi0)[0]))
    if len(missing) == len(layers):
        raise FileNotFoundError(
            f"no decoder trained for {', '.join(missing)} yet: press 'Train decoder' (it "
            "trains the decoder of the selected layer) or use the regularized method"
        )
    return torch.cat(images), torch.tensor(errors), missing
