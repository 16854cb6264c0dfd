"""Decoder checkpoints: where a layer's decoder is cached, how it is written and read back.

A checkpoint holds the decoder's architecture (``config``), its weights, the number of training
steps behind them and, to resume training, the optimizer's state. In the results cache
(:mod:`cnnvis_widgets.cache`) it is keyed by the model's content fingerprint, the layer and the
architecture (rule 4: the content used, never a name); a damaged entry or an unusable cache
folder reads as "not trained yet" (warned once). Files are read with
``torch.load(weights_only=True)``: no code runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ... import cache
from ...models.handle import ModelHandle
from .decoder import UpconvDecoder, build_decoder

__all__ = [
    "decoder_path",
    "save_decoder",
    "read_checkpoint",
    "load_decoder",
    "cache_entry",
    "trained_steps",
]

FORMAT = "cnnvis-upconv-1"


def decoder_path(
    handle: ModelHandle,
    layer: str,
    decoder: UpconvDecoder | None = None,
    *,
    size: int | None = None,
    width: int | None = None,
) -> Path:
    """Where the decoder of ``layer`` is cached: keyed by the model's content fingerprint
    (every weight and buffer, the input spec), the layer and the decoder's architecture
    (``size``, ``width``: as for :meth:`UpconvDecoder.for_layer`, when ``decoder`` is not
    given). ``OSError`` when the cache folder cannot be used."""
    handle.layer(layer)
    if decoder is None:
        decoder = UpconvDecoder.for_layer(handle, layer, size=size, width=width).cpu()
    config = decoder.config
    key = cache.cache_key(
        "upconv",
        model=handle.fingerprint(),
        layer=layer,
        config=config,
    )
    return cache.cache_path("upconv", key, ".pt")


def cache_entry(
    handle: ModelHandle, layer: str, decoder: UpconvDecoder | None = None, **architecture: Any
) -> Path | None:
    """:func:`decoder_path` (``architecture``: its ``size``, ``width``), or None (warned once)
    when the cache folder cannot be used: the caller then runs without a cache."""
    try:
        return decoder_path(handle, layer, decoder, **architecture)
    except OSError:
        return cache.entry_path("upconv", "unusable", ".pt")  # None, with the warning


def save_decoder(
    decoder: UpconvDecoder,
    path: str | Path,
    *,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the decoder (and the optimizer state, to resume training) atomically."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "config": dict(decoder.config),
        "state": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
        "step": int(step),
        "meta": dict(meta or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    return cache.save_tensors(path, payload)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint written by :func:`save_decoder` (``ValueError`` for a file
    that is not one)."""
    data = cache.load_tensors(path)  # weights_only=True: no code runs
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cnnvis decoder checkpoint")
    return data


def _decoder_from(path: Path) -> UpconvDecoder:
    data = read_checkpoint(path)
    dec = build_decoder(data["config"])
    dec.load_state_dict(data["state"])
    dec.trained_steps = int(data.get("step", 0))
    dec.meta = dict(data.get("meta", {}))
    return dec


def load_decoder(
    handle: ModelHandle,
    layer: str,
    *,
    path: str | Path | None = None,
    size: int | None = None,
    width: int | None = None,
) -> UpconvDecoder | None:
    """The trained decoder of ``layer`` from the cache (or ``path``), on the handle's device;
    None when none was trained yet. ``decoder.trained_steps`` says how long it trained.

    ``size`` and ``width`` select the architecture as in :meth:`UpconvDecoder.for_layer` (the
    size matters for fully connected layers only). Loaded with ``torch.load(weights_only=True)``.

    Examples
    --------
    >>> dec = load_decoder(h, "_blocks.3")            # doctest: +SKIP
    >>> dec is None or dec.trained_steps > 0          # doctest: +SKIP
    True
    """
    if path is not None:  # your own file: its errors are yours to see
        path = Path(path)
        return _decoder_from(path).to(handle.device).eval() if path.is_file() else None
    # the cache: a damaged entry or an unusable folder is "not trained yet" (warned once)
    entry = cache_entry(handle, layer, size=size, width=width)
    dec = cache.read_entry(entry, _decoder_from)
    return None if dec is None else dec.to(handle.device).eval()


def trained_steps(
    handle: ModelHandle, layer: str, size: int, decoder: UpconvDecoder | None = None
) -> int | None:
    """How many steps the decoder of ``layer`` was trained: the one in memory, else on disk.

    Returns None (or 0) when there is none.

    Examples
    --------
    >>> trained_steps(h, "_blocks.2", 128)                                 # doctest: +SKIP
    2000
    """
    steps = decoder.trained_steps if decoder is not None else None
    path = decoder_path(handle, layer, size=size)
    if steps is None and path.is_file():
        steps = int(read_checkpoint(path).get("step", 0))
    return steps
