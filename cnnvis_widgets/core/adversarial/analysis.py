"""What an attack changed: the perturbation made visible, predictions, units, attribution maps.

:func:`amplify` (the perturbation made visible), :func:`top_k` (predictions before/after),
:func:`unit_changes` (the units of a layer that change most), :func:`attribution_maps` (saliency
/ guided backprop / Grad-CAM of both images for the original and the new class) and
:func:`analyze`, which does all of them into a :class:`PairAnalysis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...imaging import normalize_map, reduce_channels
from ...models.handle import ModelHandle
from ..blocks.hooks import capture, forward_to
from .inputs import _check_images, _labels, _logits

ATTRIBUTION_METHODS = ("saliency", "guided_backprop", "grad_cam")


def amplify(perturbation: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Make a perturbation visible: grey 0.5 is no change, black/white the largest change.

    Parameters
    ----------
    perturbation : torch.Tensor
        ``adv - clean``, ``(B, C, H, W)``.
    eps : float, optional
        Scale so that ``+-eps`` maps to white/black (the same scale for every image). By default
        each image is scaled by its own largest absolute change.

    Examples
    --------
    >>> d = torch.tensor([[[[-0.01, 0.0, 0.02]]]])
    >>> amplify(d).flatten().tolist()
    [0.25, 0.5, 1.0]
    """
    d = perturbation.detach().float()
    view = (-1,) + (1,) * (d.dim() - 1)
    if eps is not None and eps > 0:
        scale = torch.full((d.shape[0],), float(eps), device=d.device)
    else:
        scale = d.flatten(1).abs().amax(dim=1)
    return (0.5 + 0.5 * d / scale.clamp_min(1e-12).view(view)).clamp(0, 1)


@torch.no_grad()
def predict(handle: ModelHandle, pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, classes)`` (softmax of the logits) on the CPU."""
    x = _check_images(handle, pixels)
    return _logits(handle, x).softmax(dim=1).cpu()


def _top(handle: ModelHandle, probs: torch.Tensor, k: int) -> list[list[dict[str, Any]]]:
    k = min(int(k), probs.shape[1])
    p, idx = probs.topk(k, dim=1)
    return [
        [
            {"index": int(c), "name": handle.class_name(int(c)), "prob": float(v)}
            for v, c in zip(pr.tolist(), ix.tolist())
        ]
        for pr, ix in zip(p, idx)
    ]


def top_k(handle: ModelHandle, pixels: torch.Tensor, k: int = 5) -> list[list[dict[str, Any]]]:
    """Top-``k`` predictions per image: ``[[{"index", "name", "prob"}, ...], ...]``.

    Examples
    --------
    >>> top_k(handle, x)[0][0]                                 # doctest: +SKIP
    {'index': 282, 'name': 'tiger cat', 'prob': 0.39...}
    """
    return _top(handle, predict(handle, pixels), k)


@torch.no_grad()
def unit_changes(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    layer: str,
    k: int = 8,
) -> list[list[dict[str, Any]]]:
    """The ``k`` units of ``layer`` whose activations change most, per image.

    The change of a unit is the root-mean-square difference of its feature maps over the
    spatial positions (for a non-spatial layer, the absolute difference): a unit can change
    where it fires without changing its mean. Both images go through the network as one batch,
    and the pass stops at ``layer``.

    Returns
    -------
    list of list of dict
        Per image, ``k`` dicts sorted by ``change`` (descending): ``unit``, ``change`` (RMS
        difference), ``clean`` and ``adversarial`` (spatial mean activation), ``delta_mean``.

    Examples
    --------
    >>> unit_changes(handle, x, adv, "_blocks.8", k=3)[0][0]["unit"]  # doctest: +SKIP
    17
    """
    info = handle.layer(layer)
    c = _check_images(handle, clean)
    a = _check_images(handle, adversarial)
    if c.shape != a.shape:
        raise ValueError(f"clean {tuple(c.shape)} and adversarial {tuple(a.shape)} differ")
    b = c.shape[0]
    with capture(handle, [layer], stop_early=True) as acts:
        forward_to(handle, handle.normalize(torch.cat([c, a])), acts, needs_logits=False)
        feats = acts[layer].float()
    fc, fa = feats[:b], feats[b:]
    diff = (fa - fc).flatten(2) if fc.dim() > 2 else (fa - fc).unsqueeze(2)
    change = diff.pow(2).mean(dim=2).sqrt()
    mc = fc.flatten(2).mean(dim=2) if fc.dim() > 2 else fc
    ma = fa.flatten(2).mean(dim=2) if fa.dim() > 2 else fa
    k = max(1, min(int(k), info.channels))
    vals, idx = change.topk(k, dim=1)
    out = []
    for i in range(b):
        rows = []
        for v, u in zip(vals[i].tolist(), idx[i].tolist()):
            rows.append(
                {
                    "unit": int(u),
                    "change": float(v),
                    "clean": float(mc[i, u]),
                    "adversarial": float(ma[i, u]),
                    "delta_mean": float(ma[i, u] - mc[i, u]),
                }
            )
        out.append(rows)
    return out


def _as_map(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Any attribution output -> a non-negative map ``(B, 1, H, W)`` in [0, 1] for display:
    channels reduced by their largest magnitude, scaled per map by its 99.5th percentile."""
    m = t.detach().float()
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.dim() != 4:
        raise ValueError(f"attribution map of unexpected shape {tuple(t.shape)}")
    if m.shape[1] > 1:
        m = reduce_channels(m, "abs_max")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return normalize_map(m, signed=False)


def attribution_maps(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    original: torch.Tensor | Sequence[int],
    new: torch.Tensor | Sequence[int],
    method: str = "grad_cam",
    layer: str | None = None,
) -> dict[str, Any]:
    """Attribution maps of both images for the original and the new class.

    Uses :mod:`cnnvis_widgets.core.attribution` (``saliency``, ``guided_backprop``,
    ``grad_cam``). All four maps of a batch are computed in one call per method: the images are
    stacked into one batch.

    Parameters
    ----------
    clean, adversarial : torch.Tensor
        Pixel-space batches.
    original, new : tensor or sequence of int
        One class per image.
    method : ``"saliency"``, ``"guided_backprop"`` or ``"grad_cam"``
    layer : str, optional
        Grad-CAM layer (default: ``attribution.default_cam_layer``, the last spatial layer).

    Returns
    -------
    dict
        ``"clean/original"``, ``"clean/new"``, ``"adversarial/original"``,
        ``"adversarial/new"``: maps ``(B, 1, H, W)`` in ``[0, 1]`` on the CPU; ``"method"``,
        ``"layer"``.

    Examples
    --------
    >>> maps = attribution_maps(handle, x, adv, [282], [611], "saliency")   # doctest: +SKIP
    >>> maps["adversarial/new"].shape                                       # doctest: +SKIP
    torch.Size([1, 1, 224, 224])
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(
            f"unknown attribution method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}"
        )
    c = _check_images(handle, clean)
    a = _check_images(handle, adversarial)
    b = c.shape[0]
    orig = torch.as_tensor(original, dtype=torch.long).flatten().to(handle.device)
    new_ = torch.as_tensor(new, dtype=torch.long).flatten().to(handle.device)
    if orig.numel() != b or new_.numel() != b:
        raise ValueError(f"give one original and one new class per image ({b})")
    for cls in orig.tolist() + new_.tolist():
        handle.check_class(cls)
    from .. import attribution as A

    if method == "grad_cam":
        layer = layer or A.default_cam_layer(handle)
        handle.layer(layer)  # KeyError listing the nearest names
    # one batch: clean/original, clean/new, adversarial/original, adversarial/new
    pixels = torch.cat([c, c, a, a])
    targets = torch.cat([orig, new_, orig, new_])
    x = handle.normalize(pixels)
    if method == "saliency":
        raw = A.saliency(handle, x, targets)
    elif method == "guided_backprop":
        raw = A.guided_backprop(handle, x, targets)
    else:
        raw = A.grad_cam(handle, x, targets, layer)
    maps = _as_map(raw, (int(c.shape[-2]), int(c.shape[-1]))).cpu()
    keys = ["clean/original", "clean/new", "adversarial/original", "adversarial/new"]
    out: dict[str, Any] = {k: maps[i * b : (i + 1) * b] for i, k in enumerate(keys)}
    out.update(method=method, layer=layer if method == "grad_cam" else None)
    return out


@dataclass
class PairAnalysis:
    """What an attack changed, for a batch of clean/adversarial pairs (tensors on the CPU).

    Attributes
    ----------
    clean, adversarial : torch.Tensor
        Pixel-space batches ``(B, C, H, W)``.
    perturbation : torch.Tensor
        ``adversarial - clean``.
    amplified : torch.Tensor
        :func:`amplify` of the perturbation (scaled by eps when given), for display.
    clean_probs, adversarial_probs : torch.Tensor
        Softmax probabilities ``(B, classes)``.
    clean_top, adversarial_top : list
        :func:`top_k` of each.
    original_class, new_class : list of int
        Clean top-1; the target for a targeted attack, else the adversarial top-1 (its
        runner-up when the attack did not change the top-1).
    success : list of bool
        Targeted: the adversarial top-1 is the target; untargeted: it differs from the clean one.
    linf, l2 : list of float
        Size of each perturbation in pixel units.
    layer : str or None
        Layer of :attr:`units`.
    units : list
        :func:`unit_changes` per image (empty without a layer).
    attribution : dict
        :func:`attribution_maps` (empty when not asked for).
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    perturbation: torch.Tensor
    amplified: torch.Tensor
    clean_probs: torch.Tensor
    adversarial_probs: torch.Tensor
    clean_top: list
    adversarial_top: list
    original_class: list[int]
    new_class: list[int]
    success: list[bool]
    linf: list[float]
    l2: list[float]
    layer: str | None = None
    units: list = field(default_factory=list)
    attribution: dict = field(default_factory=dict)

    def prediction_rows(self, i: int = 0, k: int = 5) -> list[list[Any]]:
        """``[label, p_clean, p_adversarial]`` for the union of both top-``k`` (for a bar chart),
        sorted by the larger of the two probabilities."""
        classes = [d["index"] for d in self.clean_top[i][:k]]
        classes += [d["index"] for d in self.adversarial_top[i][:k] if d["index"] not in classes]
        pc, pa = self.clean_probs[i], self.adversarial_probs[i]
        classes.sort(key=lambda cl: -max(float(pc[cl]), float(pa[cl])))
        names = {d["index"]: d["name"] for d in self.clean_top[i] + self.adversarial_top[i]}
        return [[f"{names[cl]} ({cl})", float(pc[cl]), float(pa[cl])] for cl in classes]

    def summary(self, i: int = 0) -> dict[str, Any]:
        """JSON-able summary of pair ``i`` (no tensors)."""
        return {
            "original_class": self.original_class[i],
            "new_class": self.new_class[i],
            "success": self.success[i],
            "linf": self.linf[i],
            "l2": self.l2[i],
            "clean_top": self.clean_top[i],
            "adversarial_top": self.adversarial_top[i],
            "layer": self.layer,
            "units": self.units[i] if self.units else [],
            "attribution": {
                k: v for k, v in self.attribution.items() if not isinstance(v, torch.Tensor)
            },
        }


def analyze(
    handle: ModelHandle,
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    eps: float | None = None,
    k: int = 5,
    layer: str | None = None,
    units: int = 8,
    attribution: str | None = "grad_cam",
    attribution_layer: str | None = None,
) -> PairAnalysis:
    """All analyses of clean/adversarial pairs: perturbation, top-k, changed units, maps.

    Parameters
    ----------
    clean, adversarial : torch.Tensor
        Pixel-space batches of the same shape.
    target : optional
        The attack's target class(es): then the "new class" is the target.
    eps : float, optional
        Scale of the amplified perturbation (default: each image's largest change).
    k : int
        Predictions kept before/after.
    layer : str, optional
        Layer whose most changed units are listed (``units`` of them); skipped when None.
    attribution : str or None
        ``"saliency"``, ``"guided_backprop"``, ``"grad_cam"`` or None (no maps).

    Examples
    --------
    >>> r = analyze(handle, x, adv, layer="_blocks.8", attribution="grad_cam")  # doctest: +SKIP
    >>> r.summary()["success"]                                                  # doctest: +SKIP
    True
    """
    c = _check_images(handle, clean)
    a = _check_images(handle, adversarial)
    if c.shape != a.shape:
        raise ValueError(f"clean {tuple(c.shape)} and adversarial {tuple(a.shape)} differ")
    b = c.shape[0]
    with torch.no_grad():
        probs = _logits(handle, torch.cat([c, a])).softmax(dim=1).cpu()
    pc, pa = probs[:b], probs[b:]
    orig = pc.argmax(dim=1)
    if target is not None:
        tgt, _ = _labels(handle, c, target)
        new = tgt.cpu()
        success = (pa.argmax(dim=1) == new).tolist()
    else:
        top2 = pa.topk(min(2, pa.shape[1]), dim=1).indices
        first = top2[:, 0]
        second = top2[:, -1]
        new = torch.where(first != orig, first, second)
        success = (first != orig).tolist()
    d = (a - c).cpu()
    result = PairAnalysis(
        clean=c.cpu(),
        adversarial=a.cpu(),
        perturbation=d,
        amplified=amplify(d, eps),
        clean_probs=pc,
        adversarial_probs=pa,
        clean_top=_top(handle, pc, k),
        adversarial_top=_top(handle, pa, k),
        original_class=[int(v) for v in orig],
        new_class=[int(v) for v in new],
        success=[bool(s) for s in success],
        linf=[float(v) for v in d.flatten(1).abs().amax(dim=1)],
        l2=[float(v) for v in d.double().flatten(1).norm(dim=1)],
        layer=layer,
    )
    if layer is not None:
        result.units = unit_changes(handle, c, a, layer, units)
    if attribution is not None:
        result.attribution = attribution_maps(
            handle, c, a, result.original_class, result.new_class, attribution, attribution_layer
        )
    return result
