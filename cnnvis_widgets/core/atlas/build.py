"""The atlas as a batch job: every part of every layer, resumable, on one or many processes.

:func:`build_atlas_steps` computes, for each layer, the AM image of every unit (in batches, by
:func:`~.grid.layer_grid_steps`), the top-k dataset patches over the dataset (in shards, by
:func:`~cnnvis_widgets.core.topk.top_k_steps`) with their DeconvNet projections, one Network
Dissection of all layers (:class:`~cnnvis_widgets.core.dissection.Dissector`), the regularized
inversion of a reference photo, the classes each unit feeds and what removing each unit does
(:func:`~cnnvis_widgets.core.importance.ablate`, set to zero, over the same dataset), and
writes the directory format of :mod:`.store` (``cnnvis-atlas/1``).

* **Resumable.** Each piece (a batch of units, a dataset shard, a layer's inversion, a layer's
  ablation, a chunk of unit cards, the dissection) is kept in ``DIR/parts/`` under a key of its
  content (model fingerprint, dataset fingerprint, settings, units): after an interruption the
  next build reads the finished pieces and computes only the others; a changed model, dataset
  or setting has other keys, so nothing stale is reused.
* **Distributed.** Under ``torchrun --nproc-per-node N`` (one or several nodes) the pieces are
  dealt to the ranks round by round (:mod:`.distributed`: gloo on CPU, nccl on CUDA); the
  dissection shards its probe set itself and all-reduces its integer tallies. Top-k shards are
  merged by score with ties to the smaller image index; the shards, batches and seeds do not
  depend on the number of processes, so 1 and N processes give the same atlas. Rank 0 alone
  writes (parts and output). A single process needs no distributed set-up.

Examples
--------
>>> from cnnvis_widgets import load_model                                   # doctest: +SKIP
>>> from cnnvis_widgets.core.atlas.build import build_atlas, BuildSettings  # doctest: +SKIP
>>> build_atlas(load_model(), ["_blocks.4"], None, "atlas-out",             # doctest: +SKIP
...             BuildSettings(steps=64))
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ... import cache
from ...data.datasets import ImageDataset, as_dataset, augmented_samples
from ...models.handle import ModelHandle
from ..blocks.runs import finish
from ..blocks.settings import Settings
from ..optimize import Step
from . import parts as P
from . import store as S
from .distributed import Group, setup
from .network import _digest, _reference_pixels, default_atlas_layers
from .settings import am_settings, settings_key

__all__ = ["BuildSettings", "BuildReport", "build_atlas_steps", "build_atlas"]


@dataclass
class BuildSettings(Settings):
    """Everything that makes a built atlas (all of it is in the manifest and the part keys).

    Attributes
    ----------
    preset, steps, size, seed, batch
        The AM recipe (:data:`~cnnvis_widgets.core.activation_max.PRESETS`), image side, seed
        and units per batch (batches of the same units in every run).
    k : int
        Top dataset images per unit.
    n_images : int
        Images of the default dataset (augmented samples) when no dataset is given.
    shard : int
        Dataset images per top-k piece.
    probe_images, probe_size
        The generated probe set of the dissection (0: no dissection; size default: the input).
    inversion_steps, inversion_size, reference
        The inversion of the reference photo (a sample name) at each layer (0 steps: none).
    top_classes : int
        Classes listed per unit.
    projections : bool
        DeconvNet projections of the top patches.
    card_chunk : int
        Units per piece of unit cards.
    ablation : bool
        Measure what removing each unit does (each unit set to zero alone, over the dataset;
        an unlabelled dataset is labelled by the intact network's own top-1, so the accuracy
        drop is the share of images whose top-1 changes). One piece per layer.
    max_units : int or None
        Only the first units of each layer (None: all).
    """

    preset: str = "lucid"
    steps: int = 128
    size: int = 64
    seed: int = 0
    batch: int = 32
    k: int = 9
    n_images: int = 64
    shard: int = 64
    probe_images: int = 64
    probe_size: int | None = None
    inversion_steps: int = 64
    inversion_size: int = 96
    reference: str = "cat"
    top_classes: int = 5
    projections: bool = True
    card_chunk: int = 16
    ablation: bool = True
    max_units: int | None = None


@dataclass
class BuildReport:
    """What a build did: pieces ``computed`` and ``reused`` per kind, the output folder and
    (on rank 0, when complete) the :class:`~.store.BuiltAtlas`."""

    out: Path
    computed: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    atlas: S.BuiltAtlas | None = None


@dataclass
class _Item:
    kind: str
    layer: str
    key: str
    run: Callable[[], dict[str, Any] | None]

    def path(self, out: Path) -> Path:
        return out / "parts" / self.kind / f"{self.key}.pt"


def _dataset(dataset: Any, handle: ModelHandle, s: BuildSettings) -> tuple[ImageDataset, str]:
    if dataset is None:
        return augmented_samples(n=s.n_images, size=max(handle.input_size), seed=0), "augmented"
    ds = as_dataset(dataset)
    if ds is None:
        raise TypeError(
            "dataset must be a folder of images, an ImageDataset or 'augmented', got "
            f"{type(dataset).__name__}"
        )
    name = Path(dataset).name if isinstance(dataset, (str, Path)) else ds.key
    return ds, name


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / "atlas.json").is_file() or (out / "parts").is_dir()):
            raise ValueError(
                f"{str(out)!r} is not empty and holds no atlas: choose an empty or new folder "
                "(nothing was written)"
            )


def build_atlas_steps(
    handle: ModelHandle,
    layers: Sequence[str] | None,
    dataset: Any,
    out: str | Path,
    settings: BuildSettings | None = None,
    *,
    group: Group | None = None,
    stop_event: threading.Event | None = None,
) -> Generator[Step, None, BuildReport | None]:
    """Build (or resume, or complete) the atlas of ``layers`` in ``out``.

    Yields a progress :class:`Step` per finished piece (``metrics``: ``stage``, ``layer``) and
    returns the :class:`BuildReport` (None when ``stop_event`` ended it: the finished pieces are
    kept and the next call resumes from them).

    Parameters
    ----------
    handle : ModelHandle
    layers : list of str, optional
        Layers with a spatial output (default: :func:`~.network.default_atlas_layers`).
    dataset : folder, ImageDataset or None
        The top-k dataset (None: ``augmented_samples(settings.n_images)``).
    out : str or Path
        The atlas folder (new, empty, or an earlier build of it).
    settings : BuildSettings, optional
    group : Group, optional
        The processes (default: :func:`~.distributed.setup`, one process unless started by
        ``torchrun``). Every rank must call this with the same arguments.
    """
    s = settings or BuildSettings()
    out = Path(out).expanduser()
    names = list(layers) if layers else default_atlas_layers(handle)
    infos = [handle.layer(n) for n in names]
    for li in infos:
        if not li.spatial:
            raise ValueError(
                f"layer {li.name!r} has no spatial output; the atlas needs conv-like layers"
            )
    if s.batch < 1 or s.k < 1 or s.shard < 1 or s.card_chunk < 1 or s.steps < 1:
        raise ValueError("batch, k, shard, card_chunk and steps must be >= 1")
    group = group or setup(str(handle.device))
    if group.is_writer:
        _check_out(out)
    ds, ds_name = _dataset(dataset, handle, s)
    fp = handle.fingerprint()
    ams = am_settings(s.preset, s.steps)
    am_key = settings_key(s.preset, ams, s.size, s.seed)
    report = BuildReport(out)

    def key(kind: str, **parts: Any) -> str:
        return cache.cache_key(kind, model=fp, **parts)

    # ------------------------------------------------------------------ the pieces
    chosen = {li.name: list(range(min(li.channels, s.max_units or li.channels))) for li in infos}
    shards = [(lo, min(len(ds), lo + s.shard)) for lo in range(0, len(ds), s.shard)]
    top_keys = {
        n: [key("top", layer=n, dataset=ds.key, lo=lo, hi=hi, k=s.k, size=list(handle.input_size))
            for lo, hi in shards]
        for n in names
    }  # fmt: skip
    target = None
    if s.inversion_steps > 0:
        target = _reference_pixels(handle, s.reference, s.inversion_size)
    first: list[_Item] = []
    for n in names:
        units = chosen[n]
        for lo in range(0, len(units), s.batch):
            chunk = units[lo : lo + s.batch]
            first.append(
                _Item("am", n, key("am", layer=n, units=chunk, **am_key),
                      partial(P.am_part, handle, n, chunk, preset=s.preset, steps=s.steps,
                              size=s.size, seed=s.seed, stop_event=stop_event))
            )  # fmt: skip
        for (lo, hi), k in zip(shards, top_keys[n]):
            first.append(
                _Item("top", n, k, partial(P.top_part, handle, n, ds, lo, hi, s.k, stop_event))
            )  # fmt: skip
        if target is not None:
            ik = key("inversion", layer=n, reference=_digest(target), steps=s.inversion_steps,
                     size=s.inversion_size)  # fmt: skip
            first.append(
                _Item("inversion", n, ik, partial(P.inversion_part, handle, n, target,
                                                  s.inversion_steps, stop_event))
            )  # fmt: skip
        if s.ablation:
            every_unit = len(units) == handle.layer(n).channels
            which: list[int] | str = "all" if every_unit else units
            ak = key("ablation", layer=n, units=which, dataset=ds.key, how="zero",
                     classes=s.top_classes, size=list(handle.input_size))  # fmt: skip
            first.append(
                _Item("ablation", n, ak, partial(P.ablation_part, handle, n, which, ds,
                                                 s.top_classes, stop_event))
            )  # fmt: skip
    merged: dict[str, Any] = {}

    def card_run(n: str, chunk: list[int]) -> dict[str, Any]:
        top = P.as_topk(handle, n, merged[n], ds, s.k)
        return P.cards_part(
            handle, n, chunk, top, ds, projections=s.projections, top_classes=s.top_classes
        )

    cards: list[_Item] = []
    for n in names:
        units = chosen[n]
        for lo in range(0, len(units), s.card_chunk):
            chunk = units[lo : lo + s.card_chunk]
            ck = key("cards", layer=n, units=chunk, top=top_keys[n], projections=s.projections,
                     classes=s.top_classes)  # fmt: skip
            cards.append(_Item("cards", n, ck, partial(card_run, n, chunk)))
    probe: Any = None
    dis_key = None
    if s.probe_images > 0:
        from ...data.concepts import probe_set

        probe = probe_set(s.probe_images, size=int(s.probe_size or max(handle.input_size)), seed=0)
        dis_key = key("dissection", layers=names, probe=probe.describe(), batch=16)
    # what is already there (rank 0 looks, every rank gets the answer)
    every = first + cards
    have = group.broadcast(
        [it.path(out).is_file() for it in every]
        + [bool(dis_key) and (out / "parts" / "dissection" / f"{dis_key}.json").is_file()]
        if group.is_writer
        else None
    )
    done = {it.key for it, h in zip(every, have) if h}
    todo_first = [it for it in first if it.key not in done]
    todo_cards = [it for it in cards if it.key not in done]
    need_dis = probe is not None and not have[-1]
    total = len(todo_first) + len(todo_cards) + int(need_dis) + 1
    for it in every:
        if it.key in done:
            report.reused[it.kind] = report.reused.get(it.kind, 0) + 1
    progress = {"index": 0}

    def run_items(items: list[_Item]) -> Generator[Step, None, bool]:
        for r in range(0, len(items), group.world):
            stop = bool(stop_event is not None and stop_event.is_set())
            if group.broadcast(stop):
                return False
            mine = items[r + group.rank] if r + group.rank < len(items) else None
            result = mine.run() if mine is not None else None
            got = group.gather(result)
            stopped = group.broadcast(
                any(g is None for g, it in zip(got, items[r : r + group.world])) if got else None
            )
            if group.is_writer:
                for it, part in zip(items[r : r + group.world], got):
                    if part is not None:
                        P.save_part(it.path(out), part)
                        report.computed[it.kind] = report.computed.get(it.kind, 0) + 1
            for it in items[r : r + group.world]:
                yield Step(
                    progress["index"], None, None, {"stage": it.kind, "layer": it.layer}, total
                )
                progress["index"] += 1
            if stopped:
                return False
        return True

    if not (yield from run_items(todo_first)):
        return None
    # ------------------------------------------------------------------ dissection (all ranks)
    if need_dis:
        from ..dissection import Dissector

        result = finish(Dissector(handle, names, probe, batch_size=16).steps(stop_event))
        if group.broadcast(result is None) or result is None:
            return None
        if group.is_writer:
            path = out / "parts" / "dissection" / str(dis_key)
            path.parent.mkdir(parents=True, exist_ok=True)
            result.save(path)
            report.computed["dissection"] = 1
        yield Step(progress["index"], None, None, {"stage": "dissection", "layer": ""}, total)
        progress["index"] += 1
    elif probe is not None:
        report.reused["dissection"] = 1
    # ------------------------------------------------------------------ unit cards
    if todo_cards:
        wanted = sorted({it.layer for it in todo_cards}, key=names.index)
        merged.update(
            group.broadcast(
                {n: P.merge_top([_load(out, "top", k) for k in top_keys[n]], s.k) for n in wanted}
                if group.is_writer
                else None
            )
        )
        if not (yield from run_items(todo_cards)):
            return None
    # ------------------------------------------------------------------ the output (rank 0)
    if group.is_writer:
        record = dict(
            model={"name": handle.name, "fingerprint": fp, "input_size": list(handle.input_size),
                   "num_classes": int(handle.num_outputs or 0)},
            settings={**dataclasses.asdict(s), "am": am_key, "dataset": ds.key,
                      "probe": probe.describe() if probe is not None else None},
            dataset={"name": ds_name, "images": len(ds), "fingerprint": ds.key},
        )  # fmt: skip
        dissection = None
        if dis_key is not None:
            from ..dissection import Dissection

            dissection = Dissection.load(out / "parts" / "dissection" / str(dis_key))
        _write_output(out, handle, names, chosen, first, cards, top_keys, dissection, record, s)
        report.atlas = S.open_atlas(out)
    group.barrier()
    yield Step(progress["index"], None, None, {"stage": "done", "layer": ""}, total)
    return report


def _load(out: Path, kind: str, key: str) -> dict[str, Any]:
    part = P.load_part(out / "parts" / kind / f"{key}.pt")
    if part is None:
        raise RuntimeError(f"the {kind} piece {key} is missing from {out / 'parts'}")
    return part


def _write_output(
    out: Path,
    handle: ModelHandle,
    names: list[str],
    chosen: dict[str, list[int]],
    first: list[_Item],
    cards: list[_Item],
    top_keys: dict[str, list[str]],
    dissection: Any,
    record: dict[str, Any],
    s: BuildSettings,
) -> None:
    """Write every layer folder, then the manifest (rank 0)."""
    (out / "atlas.json").unlink(missing_ok=True)  # no manifest while the folders change
    layers_dir = out / "layers"
    keep = {S.layer_dir(i, n).split("/", 1)[1] for i, n in enumerate(names)}
    if layers_dir.is_dir():
        for d in layers_dir.iterdir():
            if d.is_dir() and d.name[:3].isdigit() and d.name not in keep:
                shutil.rmtree(d)
    entries = []
    for i, n in enumerate(names):
        li = handle.layer(n)
        rel = S.layer_dir(i, n)
        folder = out / rel
        if folder.exists():
            shutil.rmtree(folder)
        units: dict[int, dict[str, Any]] = {
            u: {"unit": u, "am": None, "diversity": [], "max_activation": None, "top": [],
                "dissection": None, "classes": [], "ablation": None}
            for u in range(li.channels)
        }  # fmt: skip
        for it in first:
            if it.layer == n and it.kind == "am":
                part = _load(out, "am", it.key)
                for j, u in enumerate(part["units"]):
                    S.write_png(folder / "am" / f"{u}.png", part["images"][j])
                    units[u]["am"] = f"am/{u}.png"
                    units[u]["max_activation"] = S.finite(part["activation"][j])
        merged = P.merge_top([_load(out, "top", k) for k in top_keys[n]], s.k)
        for it in cards:
            if it.layer != n:
                continue
            for c in _load(out, "cards", it.key)["cards"]:
                u = c["unit"]
                row = merged["images"][u].tolist()
                tops = []
                for r, patch in enumerate(c["patches"]):
                    S.write_png(folder / "top" / f"{u}_{r}.png", patch)
                    proj = None
                    if c["projections"] is not None and r < len(c["projections"]):
                        S.write_png(folder / "proj" / f"{u}_{r}.png", c["projections"][r])
                        proj = f"proj/{u}_{r}.png"
                    tops.append({"image": f"top/{u}_{r}.png", "projection": proj,
                                 "score": S.finite(merged["values"][u, r]),
                                 "source": merged["names"].get(row[r], str(row[r]))})  # fmt: skip
                units[u]["top"] = tops
                units[u]["classes"] = [[name, S.finite(w)] for name, w in c["classes"]]
        interpretable = None
        threshold = None
        if dissection is not None and n in dissection.layers:
            threshold = float(dissection.iou_threshold)
            recs = dissection.units(n)
            for r in recs:  # a label only where the IoU reaches the threshold
                best = {"label": r["concept"], "category": r["category"],
                        "iou": S.finite(r["iou"])}  # fmt: skip
                units[r["unit"]]["best_concept"] = best
                units[r["unit"]]["dissection"] = best if r["interpretable"] else None
            interpretable = sum(r["interpretable"] for r in recs) / max(1, len(recs))
        inversion = None
        for it in first:
            if it.layer == n and it.kind == "inversion":
                part = _load(out, "inversion", it.key)
                S.write_png(folder / "inversion.png", part["image"])
                inversion = {"image": "inversion.png", "error": S.finite(part["error"])}
        ablated = False
        for it in first:
            if it.layer == n and it.kind == "ablation":
                part = _load(out, "ablation", it.key)
                for r in part["units"]:
                    units[r["unit"]]["ablation"] = {
                        "accuracy_drop": S.finite(r["accuracy_drop"]),
                        "classes": [[name, S.finite(d)] for name, d in r["classes"]],
                        "accuracy": S.finite(r["accuracy"]),
                        "baseline_accuracy": S.finite(part["baseline_accuracy"]),
                        "images": part["images"], "labels": part["labels"],
                    }  # fmt: skip
                ablated = True
        folder.mkdir(parents=True, exist_ok=True)
        S.write_json(
            folder / "layer.json",
            {"name": n, "channels": li.channels, "interpretable": interpretable,
             "iou_threshold": threshold, "inversion": inversion,
             "units": [units[u] for u in range(li.channels)]},
        )  # fmt: skip
        every = len(chosen[n]) == li.channels
        entries.append(
            {"name": n, "dir": rel, "kind": li.kind, "channels": li.channels,
             "shape": [li.channels, li.height, li.width],
             "complete": {"am": every, "top": every, "classes": every,
                          "dissection": dissection is not None and n in dissection.layers,
                          "inversion": inversion is not None, "ablation": every and ablated}}
        )  # fmt: skip
    S.write_json(
        out / "atlas.json",
        {"format": S.FORMAT, **record, "layers": entries,
         "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "version": _version()},
        sync=True,
    )  # fmt: skip


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cnnvis_widgets")
    except Exception:  # noqa: BLE001 - a source tree without metadata
        return "0+unknown"


def build_atlas(
    handle: ModelHandle,
    layers: Sequence[str] | None,
    dataset: Any,
    out: str | Path,
    settings: BuildSettings | None = None,
    **kwargs: Any,
) -> BuildReport:
    """Run :func:`build_atlas_steps` to the end and return its :class:`BuildReport`."""
    report = finish(build_atlas_steps(handle, layers, dataset, out, settings, **kwargs))
    if report is None:
        raise RuntimeError("the atlas build was stopped")
    return report
