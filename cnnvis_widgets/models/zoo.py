"""Any torchvision classifier by name, with an input spec and offline-safe weights.

Nothing here downloads unless the caller asks for ``weights="imagenet"`` (or a named torchvision
weight such as ``"IMAGENET1K_V1"``). Offline, such a request fails with
:class:`WeightsUnavailableError`, whose message says where to put the file.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from .imagenet import IMAGENET_SPEC, input_spec

__all__ = [
    "IMAGENET_SPEC",
    "WeightsUnavailableError",
    "build_torchvision",
    "cached_weights_path",
    "torchvision_archs",
]


# Architectures whose auxiliary heads must be switched off to build without weights.
_AUX_ARCHS = ("googlenet", "inception_v3")
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
_HASH = re.compile(r"-([a-f0-9]*)\.")  # the same rule as torch.hub's file-name hash


class WeightsUnavailableError(RuntimeError):
    """Published weights were asked for but are neither cached nor downloadable."""


def torchvision_archs() -> list[str]:
    """Names of every torchvision image classifier (``torchvision.models.list_models``).

    Examples
    --------
    >>> "resnet18" in torchvision_archs()
    True
    """
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_arch(arch: str) -> str:
    known = torchvision_archs()
    if arch in known:
        return arch
    if arch.lower() in known:
        return arch.lower()
    near = difflib.get_close_matches(arch.lower(), known, n=6, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}?" if near else f"valid names: {', '.join(known)}"
    raise ValueError(f"unknown torchvision classifier {arch!r}; {hint}")


def _weights_enum(arch: str) -> Any | None:
    try:
        return torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return None


def _spec(weights: Any | None) -> dict:
    if weights is None:
        return dict(IMAGENET_SPEC)
    t = weights.transforms()
    return input_spec(t.crop_size[0], t.resize_size[0], t.interpolation.value, t.mean, t.std)


def cached_weights_path(weights: Any) -> Path:
    """Where torch hub caches a torchvision weight file: ``<hub dir>/checkpoints/<file name>``.

    Examples
    --------
    >>> from torchvision.models import ResNet18_Weights
    >>> cached_weights_path(ResNet18_Weights.DEFAULT).name
    'resnet18-f37072fd.pth'
    """
    name = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _ensure_cached(arch: str, weights: Any) -> Path:
    path = cached_weights_path(weights)
    if path.is_file():
        return path
    match = _HASH.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            weights.url, str(path), hash_prefix=match.group(1) if match else None, progress=False
        )
    except Exception as exc:  # offline, proxy, disk, hash mismatch: all mean "not available"
        raise WeightsUnavailableError(
            f"torchvision's {arch} weights ({weights}) are not in the local cache and could not "
            f"be downloaded ({type(exc).__name__}: {exc}). Download {weights.url} on a machine "
            f"with network access and place the file at {path} , or pass "
            f'weights="/path/to/file.pth" with the file wherever you keep it.'
        ) from exc
    return path


def _load_file(path: str | os.PathLike[str]) -> dict:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TypeError(f"{p} does not hold a state_dict (found {type(state).__name__})")
    return state


def build_torchvision(
    arch: str, weights: str | os.PathLike[str] | None, seed: int = 0, **kwargs: Any
) -> tuple[nn.Module, dict]:
    """Build a torchvision classifier by name, in eval mode, with its input spec.

    Parameters
    ----------
    arch : str
        A name from :func:`torchvision_archs`, e.g. ``"alexnet"``, ``"vgg16"``, ``"googlenet"``,
        ``"resnet18"``.
    weights : str, path-like or None
        ``None``: random initialization seeded by ``seed`` (the global RNG is left untouched).
        ``"imagenet"``: torchvision's default published weights, read from the torch hub cache
        (``torch.hub.get_dir()/checkpoints``) or downloaded into it; the only value that may
        download. A member name of the arch's weights enum (``"IMAGENET1K_V1"``) works the same
        way. Anything else: path of a ``state_dict`` file, loaded with ``weights_only=True``
        (auxiliary-head keys of GoogLeNet/Inception are dropped).
    seed : int
        Seed of the random initialization.
    **kwargs
        Passed to the torchvision builder (e.g. ``num_classes=10``).

    Returns
    -------
    model : nn.Module
        The classifier in eval mode, on the CPU.
    spec : dict
        ``size``, ``resize``, ``interpolation``, ``mean``, ``std`` from the weights' transforms
        (the arch's default weights for ``None`` or a path); ImageNet statistics when torchvision
        publishes none.

    Raises
    ------
    ValueError
        Unknown ``arch``; the message lists the closest valid names.
    WeightsUnavailableError
        ``"imagenet"`` was asked for, the file is not cached and the download failed.
    FileNotFoundError
        ``weights`` is a path that does not exist.

    Examples
    --------
    >>> model, spec = build_torchvision("resnet18", weights=None, seed=0)
    >>> spec["size"], spec["mean"]
    (224, (0.485, 0.456, 0.406))
    """
    arch = _check_arch(arch)
    enum = _weights_enum(arch)
    default = enum.DEFAULT if enum is not None else None
    named = None
    members = enum.__members__ if enum is not None else {}
    if isinstance(weights, str) and (weights == "imagenet" or weights in members):
        if enum is None:
            raise WeightsUnavailableError(f"torchvision publishes no weights for {arch!r}")
        named = default if weights == "imagenet" else enum[weights]

    if named is not None:
        _ensure_cached(arch, named)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(arch, weights=named, **kwargs)
        return model.eval(), _spec(named)

    state = _load_file(weights) if weights is not None else None
    build = dict(kwargs)
    if arch in _AUX_ARCHS:
        build.setdefault("aux_logits", False)
        build.setdefault("init_weights", True)
        if weights is not None and default is not None:
            # torchvision's own checkpoints expect its ImageNet-to-[-1, 1] input transform.
            published = cached_weights_path(default).name == Path(weights).name
            build.setdefault("transform_input", published)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.get_model(arch, weights=None, **build)
    if state is not None:
        if not any(k.startswith(_AUX_PREFIXES) for k in model.state_dict()):
            state = {k: v for k, v in state.items() if not k.startswith(_AUX_PREFIXES)}
        model.load_state_dict(state, strict=True)
    return model.eval(), _spec(default)
