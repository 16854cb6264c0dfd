"""Sanity checks for saliency maps (Adebayo et al. 2018): is a map about the model at all?

:func:`cascading_randomization` re-initialises the network's weights from the logits downwards,
one block at a time and cumulatively, on a **copy** (the user's model is never touched), and
computes every method's maps at every stage with their similarity to the trained model's maps:
Spearman rank correlation of the signed maps and of their absolute values, and SSIM of the
absolute maps scaled to [0, 1]. A map that stays similar while the weights it should explain are
random is not about the model; the paper's finding is that guided backprop (and guided Grad-CAM)
stay similar while plain gradients fall apart. ``independent=True`` randomizes one block at a
time instead (the others trained).

Blocks are the network's modules with weights, grouped by their first name component (and the
index of a numbered container: ``_blocks.3``), in forward order.

Examples
--------
>>> run = Run(cascading_randomization(handle, x, 281, ["saliency", "guided"]))  # doctest: +SKIP
>>> for step in run: print(step.metrics["block"])                   # doctest: +SKIP
>>> run.result.scores["saliency"]["spearman_abs"]                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...models import ModelHandle
from ..blocks.optimize import Step
from ..training import handle_of
from .gradients import METHODS, _as_input, attribute, canonical_method

__all__ = [
    "SanityResult",
    "cascading_randomization",
    "weight_blocks",
    "spearman",
    "ssim",
    "similarity",
    "MEASURES",
]

MEASURES = ("spearman", "spearman_abs", "ssim")


def weight_blocks(module: nn.Module) -> list[str]:
    """Names of the blocks of ``module`` that hold weights, in definition order (for the
    networks here, forward order): the first name component, plus the index of a numbered
    container (``_blocks.3``, ``features.7``)."""
    seen: dict[str, None] = {}
    for name, _ in module.named_parameters():
        parts = name.split(".")
        key = parts[0] if len(parts) < 3 or not parts[1].isdigit() else ".".join(parts[:2])
        seen.setdefault(key, None)
    return list(seen)


def _randomize(module: nn.Module, prefix: str, seed: int) -> None:
    root = module.get_submodule(prefix)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in root.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            reset_stats = getattr(m, "reset_running_stats", None)
            if callable(reset_stats):
                reset_stats()


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), as scipy's ``rankdata``."""
    order = torch.argsort(v, stable=True)
    sv = v[order]
    ranks = torch.empty_like(v, dtype=torch.float64)
    ranks[order] = torch.arange(v.numel(), dtype=torch.float64)
    # tie groups: the mean of their ordinal ranks
    uniq, inverse, counts = torch.unique_consecutive(sv, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() + 1) / 2
    ranks[order] = mean_rank[inverse]
    del uniq
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps (any shape, same number of values); 0 when one of
    them is constant.

    >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 25.0]))
    1.0
    """
    ra, rb = (
        _ranks(a.detach().flatten().double().cpu()),
        _ranks(b.detach().flatten().double().cpu()),
    )
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return 0.0 if den == 0 else round(float((ra * rb).sum()) / den, 12)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Structural similarity of two ``(H, W)`` maps in [0, 1] (Gaussian window of sigma 1.5,
    as Wang et al. 2004 and scikit-image's ``gaussian_weights=True``).

    >>> m = torch.rand(32, 32)
    >>> round(ssim(m, m), 6)
    1.0
    """
    from ..blocks.regularizers import gaussian_blur

    x = a.detach().double().cpu().view(1, 1, *a.shape[-2:])
    y = b.detach().double().cpu().view(1, 1, *b.shape[-2:])
    c1, c2 = 0.01**2, 0.03**2

    def g(t: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(t, 1.5)

    mx, my = g(x), g(y)
    vx = g(x * x) - mx * mx
    vy = g(y * y) - my * my
    cxy = g(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def _reduce(m: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` -> signed ``(H, W)`` (sum over channels)."""
    return m.detach().float().sum(0).cpu()


def _unit(m: torch.Tensor) -> torch.Tensor:
    top = float(m.max())
    return m / top if top > 0 else m


def similarity(trained: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """The three measures of one image's map ``(C, H, W)`` against the trained model's, averaged
    over images for a batch ``(B, C, H, W)``."""
    if trained.dim() == 3:
        trained, other = trained.unsqueeze(0), other.unsqueeze(0)
    rows = []
    for t, o in zip(trained, other):
        ts, os_ = _reduce(t), _reduce(o)
        rows.append(
            {
                "spearman": spearman(ts, os_),
                "spearman_abs": spearman(ts.abs(), os_.abs()),
                "ssim": ssim(_unit(ts.abs()), _unit(os_.abs())),
            }
        )
    return {k: sum(r[k] for r in rows) / len(rows) for k in MEASURES}


@dataclass
class SanityResult:
    """What :func:`cascading_randomization` returns.

    ``stages``: ``"trained"`` then the block randomized at each stage (cumulative: this one and
    all above it; independent: only this one). ``maps[method][i]`` the maps at stage ``i`` (on
    the CPU); ``scores[method][measure][i]`` the similarity to stage 0.
    """

    stages: list[str]
    independent: bool
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def verdict(
        self, method: str, measure: str = "spearman_abs", threshold: float = 0.5,
        stage: int | None = None,
    ) -> str:  # fmt: skip
        """The result in words: does ``method``'s map change once the top of the network is
        random? Judged at ``stage`` (default: the top quarter of the blocks randomized, at least
        one), where a map about the model has lost most of its similarity (Adebayo et al.)."""
        n = len(self.stages) - 1
        at = max(1, n // 4) if stage is None else int(stage)
        at = min(max(at, 0), len(self.scores[method][measure]) - 1)
        value = self.scores[method][measure][at]
        where = f"after randomizing down to {self.stages[at]}"
        if value >= threshold:
            return (
                f"fails: {where} its map keeps {measure} {value:.2f} with the trained one: it "
                "shows the image more than the model"
            )
        return f"passes: {where} its map drops to {measure} {value:.2f}"


def cascading_randomization(
    handle: ModelHandle,
    images: torch.Tensor,
    target: Any,
    methods: Sequence[str] = ("saliency", "guided_backprop"),
    *,
    layer: str | None = None,
    independent: bool = False,
    blocks: Sequence[str] | None = None,
    seed: int = 0,
) -> Generator[Step, None, SanityResult]:
    """Cascading (or independent) randomization of a copy of the network, as a generator.

    Parameters
    ----------
    handle : ModelHandle
        The trained network (never changed: a copy is randomized).
    images : torch.Tensor
        Model-input batch ``(B, C, H, W)``.
    target : int, sequence, Objective or str
        What the maps explain; a class target stays the same class on the random networks.
    methods : sequence of str
        Keys of :data:`cnnvis_widgets.core.attribution.METHODS`.
    layer : str, optional
        Grad-CAM's layer (its default otherwise).
    independent : bool
        Randomize one block at a time (the others trained) instead of cumulatively from the top.
    blocks : sequence of str, optional
        Which blocks, top first (default: every block with weights, from the logits down).

    Yields a :class:`Step` per stage (``metrics``: ``stage``, ``block``, ``maps`` (method ->
    CPU tensor) and ``scores`` (method -> measures)); returns the :class:`SanityResult`.
    """
    names = [canonical_method(m) for m in methods]
    x = _as_input(handle, images)
    module = copy.deepcopy(handle.model)  # the user's module is only read
    twin = handle_of(handle, module, "randomized")  # handle's input spec, the copy's weights
    order = list(blocks) if blocks is not None else list(reversed(weight_blocks(module)))
    for b in order:
        module.get_submodule(b)  # AttributeError naming a block that does not exist
    pristine = copy.deepcopy(module.state_dict()) if independent else None
    result = SanityResult(stages=["trained", *order], independent=independent)
    total = len(order) + 1

    def maps_now() -> dict[str, torch.Tensor]:
        return {
            m: attribute(twin, x, target, m, layer if METHODS[m][2] else None).detach().cpu()
            for m in names
        }

    for i, stage in enumerate(result.stages):
        if i > 0:
            if pristine is not None:
                module.load_state_dict(pristine)
            _randomize(module, stage, seed + i)
            twin.refresh()
        maps = maps_now()
        scores: dict[str, dict[str, float]] = {}
        for m in names:
            result.maps.setdefault(m, []).append(maps[m])
            sim = similarity(result.maps[m][0], maps[m])
            scores[m] = sim
            per = result.scores.setdefault(m, {k: [] for k in MEASURES})
            for k in MEASURES:
                per[k].append(sim[k])
        yield Step(
            i, None, None, {"stage": stage, "block": stage, "maps": maps, "scores": scores}, total
        )
    return result
