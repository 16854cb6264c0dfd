"""Network Dissection core: streaming quantile and IoU arithmetic against brute force, a planted
red detector, stop/resume, save/load, 2-process torch.distributed equals 1 process, and Bau et
al.'s finding (pretrained > random) on the default model."""

from __future__ import annotations

import csv
import io
import math
import os
import socket
import threading
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core.blocks.runs import Run, finish
from cnnvis_widgets.core.dissection import (
    Dissection,
    DissectionJob,
    Dissector,
    IoUTally,
    NonFiniteActivationError,
    StreamingQuantile,
    check_layers,
    check_layers_of,
    combined_csv,
    compare_dissections,
    comparison_bars,
    dissect,
    dissect_steps,
    export_bytes,
    export_files,
    interpretable_text,
    label_counts,
    model_label,
    render_examples,
    shown_traits,
    static_picture,
    summary_bars,
    table_rows,
    unit_examples,
    unit_picture,
    unit_text,
)
from cnnvis_widgets.core.hooks import active_hook_count, capture
from cnnvis_widgets.data.concepts import Concept, ProbeBatch, probe_set
from tests.conftest import make_tiny
from tests.helpers import run_without

# ----------------------------------------------------------------------------- quantile


def _order_stat(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per row: v_(k) with k = floor((1 - q) * (N - 1)) (the lower neighbour of the exact
    linear-interpolation quantile)."""
    v, _ = values.double().sort(dim=1)
    k = math.floor((1 - q) * (values.shape[1] - 1))
    return v[:, k]


def _feed(sq: StreamingQuantile, values: torch.Tensor, sizes: list[int]) -> None:
    start = 0
    for n in sizes:
        if start >= values.shape[1]:
            break
        sq.update(values[:, start : start + n])
        start += n
    if start < values.shape[1]:
        sq.update(values[:, start:])


def _mixed_units(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(n, generator=g) * 3 + 1
    relu = torch.relu(torch.randn(n, generator=g))  # half exact zeros
    heavy = torch.randn(n, generator=g).exp() ** 3  # heavy tail
    negative = -torch.rand(n, generator=g) * 1e-3 - 5.0
    constant = torch.full((n,), 0.25)
    ints = torch.randint(0, 4, (n,), generator=g).float()  # big ties
    return torch.stack([normal, relu, heavy, negative, constant, ints])


@pytest.mark.parametrize("q", [0.005, 0.05, 0.5])
def test_streaming_quantile_is_within_its_bound_of_brute_force(q: float) -> None:
    values = _mixed_units(20_000, seed=1)
    sq = StreamingQuantile(values.shape[0], bins=256)
    _feed(sq, values, [7, 100, 3000, 1, 9000])
    est, bound = sq.quantile(q)
    exact = _order_stat(values, q)
    assert sq.count == values.shape[1]
    assert ((est - exact).abs() <= bound).all(), (est, exact, bound)
    span = values.double().amax(1) - values.double().amin(1)
    varying = span > 0
    assert (bound[varying] <= 2 * span[varying] / (sq.bins - 1)).all()
    # the rank error is at most one bin's count
    above_est = (values.double() > est.view(-1, 1)).sum(1)
    above_exact = (values.double() > exact.view(-1, 1)).sum(1)
    per_bin = sq.hist.amax(1)
    assert ((above_est - above_exact).abs() <= per_bin).all()
    # a constant unit has its exact value
    assert est[4] == pytest.approx(0.25)


@settings(max_examples=25, deadline=None)
@given(
    data=st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=2, max_size=400),
    cut=st.integers(1, 399),
    q=st.sampled_from([0.005, 0.01, 0.1, 0.3]),
)
# a first batch of one value sits on a very fine grid: widening it once moved the counts by
# 2**63, which overflowed int64 (found by hypothesis)
@example(data=[-0.03125, 1.0], cut=1, q=0.005)
def test_streaming_quantile_property(data: list[float], cut: int, q: float) -> None:
    values = torch.tensor(data, dtype=torch.float32).view(1, -1)
    sq = StreamingQuantile(1, bins=16)
    _feed(sq, values, [cut])
    est, bound = sq.quantile(q)
    exact = _order_stat(values, q)
    assert abs(float(est[0]) - float(exact[0])) <= float(bound[0])


def test_streaming_quantile_does_not_depend_on_order_and_merges_exactly() -> None:
    values = _mixed_units(6000, seed=2)
    perm = torch.randperm(6000, generator=torch.Generator().manual_seed(0))
    a = StreamingQuantile(6, bins=128)
    _feed(a, values, [50, 50, 1000])
    b = StreamingQuantile(6, bins=128)
    _feed(b, values[:, perm], [3000, 11])
    assert torch.equal(a.exp, b.exp) and torch.equal(a.hist, b.hist)
    assert torch.equal(a.quantile(0.005)[0], b.quantile(0.005)[0])
    left, right = StreamingQuantile(6, bins=128), StreamingQuantile(6, bins=128)
    left.update(values[:, :2500])
    right.update(values[:, 2500:])
    left.merge(right)
    assert torch.equal(left.hist, a.hist) and torch.equal(left.offset, a.offset)
    assert left.count == a.count


def test_refinement_pass_shrinks_the_bound() -> None:
    values = _mixed_units(30_000, seed=3)
    sq = StreamingQuantile(6, bins=64)
    _feed(sq, values, [10_000])
    coarse_est, coarse_bound = sq.quantile(0.005)
    sq.begin_refine(0.005)
    _feed(sq, values, [5000, 7])
    est, bound = sq.quantile(0.005)
    exact = _order_stat(values, 0.005)
    assert torch.allclose(bound, coarse_bound / 64)
    assert ((est - exact).abs() <= bound).all()
    assert (est - exact).abs().sum() <= (coarse_est - exact).abs().sum()
    sq2 = StreamingQuantile(6, bins=64)
    sq2.update(values)
    sq2.begin_refine(0.005)
    sq2.update(values[:, :100])
    with pytest.raises(RuntimeError, match="same data"):
        sq2.quantile(0.005)


def test_streaming_quantile_rejects_nan_and_bad_arguments() -> None:
    sq = StreamingQuantile(2, bins=32)
    with pytest.raises(NonFiniteActivationError):
        sq.update(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="power of two"):
        StreamingQuantile(2, bins=100)
    with pytest.raises(RuntimeError, match="no values"):
        sq.quantile(0.5)


# ----------------------------------------------------------------------------- IoU tallies


def _fake_batch(b: int, m: int, n_labels: int, seed: int) -> ProbeBatch:
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, n_labels, (b, 2, m, m), generator=g)
    masks[:, 1] = torch.where(torch.rand(b, m, m, generator=g) < 0.7, 0, masks[:, 1])
    scalars = torch.rand(b, n_labels, generator=g) < 0.2
    scalars[:, 0] = False
    present = torch.rand(b, 3, generator=g) < 0.7
    return ProbeBatch(
        indices=torch.arange(b),
        images=torch.zeros(b, 3, 4 * m, 4 * m),
        masks=masks,
        mask_categories=[0, 1],
        scalars=scalars,
        present=present,
    )


def test_iou_tallies_match_brute_force() -> None:
    n_labels, m, units = 7, 6, 5
    label_cat = torch.tensor([-1, 0, 0, 1, 1, 2, 2])
    tally = IoUTally(units, n_labels, 3, m)
    tally.CHUNK_ELEMENTS = 2 * m * m * 3  # force chunking over units
    area = torch.zeros(n_labels, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    thr = torch.rand(units, generator=g) * 0.5 + 0.3
    both = np.zeros((units, n_labels))
    ucat = np.zeros((units, 3))
    lab = np.zeros(n_labels)
    for seed in range(3):
        batch = _fake_batch(4, m, n_labels, seed)
        acts = torch.rand(4, units, 3, 3, generator=g)
        tally.update(acts, thr, batch)
        area += label_counts(batch, n_labels, m)
        up = F.interpolate(acts, size=(m, m), mode="bilinear", align_corners=False)
        for i in range(4):
            for c in range(1, n_labels):
                lab[c] += sum(int((batch.masks[i, k] == c).sum()) for k in range(2))
                lab[c] += m * m * int(batch.scalars[i, c])
            for u in range(units):
                active = (up[i, u] > thr[u]).numpy()
                for cat in range(3):
                    ucat[u, cat] += active.sum() * int(batch.present[i, cat])
                for c in range(1, n_labels):
                    for k in range(2):
                        both[u, c] += (active & (batch.masks[i, k] == c).numpy()).sum()
                    both[u, c] += active.sum() * int(batch.scalars[i, c])
    assert np.array_equal(tally.both.numpy(), both)
    assert np.array_equal(tally.units_cat.numpy(), ucat)
    assert np.array_equal(area.numpy(), lab)
    iou = tally.iou(area, label_cat).numpy()
    for u in range(units):
        for c in range(1, n_labels):
            union = ucat[u, label_cat[c]] + lab[c] - both[u, c]
            assert iou[u, c] == pytest.approx(both[u, c] / union if union else 0.0)
    assert (iou[:, 0] == 0).all()


# ----------------------------------------------------------------------------- planted units


class _RedAndNoise(nn.Module):
    """Channel 0: 1 on red pixels (the probe's 'red' box: R > 0.45, G and B < 0.34 R), else 0.
    Channel 1: pseudo-random noise of the pixel values (no concept)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        red = torch.minimum(torch.minimum(r - 0.45, 0.34 * r - g), 0.34 * r - b)
        red = (red * 50).clamp(0, 1)
        noise = torch.frac(torch.sin(r * 12.9898 + g * 78.233 + b * 37.719) * 43758.5453).abs()
        return torch.cat([red, noise], 1)


class Planted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.units = _RedAndNoise()
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.units(x).mean((2, 3)))


@pytest.fixture(scope="module")
def planted():
    # pixel space in, masks at full resolution: the red unit's map is exactly the red pixels
    return load_model(Planted(), device="cpu", input_size=48, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(scope="module")
def full_res_probe():
    return probe_set(32, size=48, seed=5, mask_size=48)


def test_planted_red_unit_is_labelled_red_and_noise_is_not(planted, full_res_probe) -> None:
    batch = full_res_probe.batch(range(len(full_res_probe)))
    red = full_res_probe.concept("red").index
    red_fraction = float((batch.masks[:, 0] == red).float().mean())
    assert 0.01 < red_fraction < 0.2
    # a binary unit is degenerate at the top 0.5 %: give it a top fraction above its firing
    # rate, so its threshold falls between 0 and 1 and it is active exactly where it fires
    result = dissect(planted, "units", full_res_probe, quantile=red_fraction + 0.05, batch_size=8)
    rec = result.units("units")[0]
    assert rec["concept"] == "red" and rec["category"] == "color"
    # near 1: only anti-aliased, blurred borders of red regions (mixed colours) disagree
    assert rec["iou"] > 0.85, rec
    assert result.unit("units", 0)["top_concepts"][1][1] < 0.5  # no close second
    noise = dissect(planted, "units", full_res_probe, batch_size=8).units("units")[1]
    assert not noise["interpretable"] and noise["iou"] < 0.04, noise
    assert active_hook_count(planted.model) == 0


def test_unit_examples_show_the_unit_and_its_concept(planted, full_res_probe) -> None:
    batch = full_res_probe.batch(range(len(full_res_probe)))
    red = full_res_probe.concept("red").index
    q = float((batch.masks[:, 0] == red).float().mean()) + 0.05
    result = dissect(planted, ["units"], full_res_probe, quantile=q, batch_size=8, top_k=4)
    ex = unit_examples(planted, result, full_res_probe, "units", 0)
    assert ex.concept == "red" and len(ex.indices) == 4
    assert ex.images.shape == (4, 3, 48, 48) and ex.active.shape == (4, 48, 48)
    # the top images are the reddest ones and the map agrees with the red mask
    inter = (ex.active & ex.concept_mask).sum()
    union = (ex.active | ex.concept_mask).sum()
    assert float(inter) / float(union) > 0.85
    pic = render_examples(ex, ncol=2)
    assert pic.shape == (3, 2 + 2 * 50, 2 + 2 * 50)
    with pytest.raises(IndexError, match="valid 0..1"):
        unit_examples(planted, result, full_res_probe, "units", 2)


# ----------------------------------------------------------------------------- runs and results


@pytest.fixture
def small_probe():
    return probe_set(24, size=32, seed=1)


def test_dissect_results_records_summary_csv_and_save_load(tiny_handle, small_probe, tmp_path):
    result = dissect(tiny_handle, ["conv1", "relu2"], small_probe, batch_size=8, top_k=3)
    assert result.layers == ["conv1", "relu2"] and result.complete
    units = result.units("relu2")
    assert len(units) == 16 and set(units[0]) >= {"unit", "concept", "category", "iou"}
    ld = result["relu2"]
    assert ld.iou.shape == (16, len(small_probe.labels)) and ld.top_images.shape == (16, 3)
    for u in units:
        assert u["iou"] == pytest.approx(float(ld.iou[u["unit"]].max()))
        assert u["interpretable"] == (u["iou"] >= 0.04)
    # top images: where the unit's thresholded map covers the most mask pixels (brute force)
    assert (np.diff(ld.top_values, axis=1) <= 0).all()
    batch = small_probe.batch(range(len(small_probe)))
    with torch.no_grad(), capture(tiny_handle, ["relu2"]) as acts:
        tiny_handle.net(tiny_handle.normalize(batch.images))
    up = F.interpolate(acts["relu2"], size=(8, 8), mode="bilinear", align_corners=False)
    area = (up > torch.tensor(ld.thresholds, dtype=torch.float32).view(1, -1, 1, 1)).sum((2, 3))
    for u in range(16):
        best = sorted(range(24), key=lambda i: (-int(area[i, u]), i))[:3]
        assert ld.top_images[u].tolist() == best
        assert ld.top_values[u].tolist() == [float(area[i, u]) for i in best]
    assert np.array_equal(ld.activated, area.sum(0).numpy())
    rows = result.summary()
    assert [r["layer"] for r in rows] == ["conv1", "relu2"]
    for r, layer in zip(rows, ["conv1", "relu2"]):
        assert r["interpretable"] == sum(u["interpretable"] for u in result.units(layer))
        detectors = result.unique_detectors(layer)
        assert {k: len(v) for k, v in detectors.items()} == r["unique"]
    strict = result.with_iou_threshold(0.99)
    assert all(r["interpretable"] == 0 for r in strict.summary())
    text = result.to_csv(tmp_path / "d.csv")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == 8 + 16 and parsed[0]["layer"] == "conv1"
    assert (tmp_path / "d.csv").read_text() == text
    path = result.save(tmp_path / "saved")
    assert path.suffix == ".json" and (tmp_path / "saved.npz").is_file()
    back = Dissection.load(tmp_path / "saved")
    assert back.layers == result.layers and back.summary() == result.summary()
    assert np.array_equal(back["relu2"].iou, ld.iou)
    assert back.labels == result.labels and back.model["name"] == "TinyNet"
    assert back.probe == small_probe.describe()
    with pytest.raises(KeyError, match="dissected layers: conv1, relu2"):
        result["conv2"]


def test_bad_arguments_say_how_to_fix_them(tiny_handle, small_probe) -> None:
    with pytest.raises(KeyError, match="nearest valid names"):
        dissect(tiny_handle, "conv3", small_probe)
    with pytest.raises(ValueError, match="no spatial output"):
        dissect(tiny_handle, "fc", small_probe)
    with pytest.raises(ValueError, match="quantile"):
        dissect(tiny_handle, "conv1", small_probe, quantile=0.7)
    with pytest.raises(ValueError, match="load_model"):
        dissect(tiny_handle, "conv1", small_probe, device="cuda")


def test_a_one_channel_model_is_dissected_on_the_luminance_of_the_probe(small_probe) -> None:
    # before: "the probe images have 3 channels, the model takes 1" (the README promises any
    # channel count)
    net = make_tiny(in_channels=1)
    h = load_model(net, device="cpu", input_size=32, mean=(0.5,), std=(0.25,))
    seen: list[torch.Tensor] = []
    hook = net.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        result = dissect(h, ["conv1", "relu2"], small_probe, batch_size=8, top_k=3)
    finally:
        hook.remove()
    assert result.complete and len(result.units("relu2")) == 16
    images = small_probe.batch(range(8), masks=False).images
    luma = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert seen[0].shape == (8, 1, 32, 32)
    torch.testing.assert_close(seen[0], (luma - 0.5) / 0.25)
    ex = unit_examples(h, result, small_probe, "conv1", 0, k=2)
    assert ex.images.shape[1] == 3  # shown as the colour pictures, computed on their grey
    assert active_hook_count(net) == 0


def test_other_channel_counts_get_a_clear_error(small_probe) -> None:
    net = make_tiny(in_channels=4)
    h = load_model(net, device="cpu", input_size=32, mean=(0.5,) * 4, std=(0.25,) * 4)
    with pytest.raises(ValueError, match="takes 4 input channels.*3 channels.*1 channel"):
        dissect(h, "conv1", small_probe)


def test_batch_and_top_k_are_bounded_and_numpy_integers_accepted(tiny_handle, small_probe):
    with pytest.raises(ValueError, match="MAX_BATCH"):
        dissect(tiny_handle, "conv1", small_probe, batch_size=10**6)
    with pytest.raises(ValueError, match="MAX_TOP_K"):
        dissect(tiny_handle, "conv1", small_probe, top_k=10**9)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        dissect(tiny_handle, "conv1", small_probe, batch_size=8.5)
    a = dissect(tiny_handle, "conv1", small_probe, batch_size=np.int64(8), top_k=np.int32(3))
    b = dissect(tiny_handle, "conv1", small_probe, batch_size=8, top_k=3)
    assert np.array_equal(a["conv1"].best_iou, b["conv1"].best_iou)


def test_nan_activations_stop_with_a_message_and_remove_hooks(small_probe) -> None:
    net = make_tiny()
    with torch.no_grad():
        net.conv1.weight.fill_(float("nan"))
    h = load_model(net, device="cpu", input_size=32)
    with pytest.raises(NonFiniteActivationError, match="'conv1'.*probe images 0..7"):
        dissect(h, ["conv1", "conv2"], small_probe, batch_size=8)
    assert active_hook_count(net) == 0


def test_stop_and_resume_gives_the_uninterrupted_result(tiny_handle, small_probe) -> None:
    full = dissect(tiny_handle, ["conv2"], small_probe, batch_size=4)
    d = Dissector(tiny_handle, ["conv2"], small_probe, batch_size=4)
    stop = threading.Event()
    seen = []
    for step in d.steps(stop):
        seen.append((step.index, step.metrics["stage"]))
        if len(seen) == 8:  # in the IoU stage (6 batches per stage)
            stop.set()
    assert len(seen) == 8 and not d.done and d.stage == "iou"
    assert active_hook_count(tiny_handle.model) == 0
    partial = d.partial_result()
    assert partial is not None and not partial.complete and partial.n_images == 8
    run = Run(d.steps())
    rest = list(run)
    assert [s.index for s in rest] == list(range(8, 12)) and rest[-1].total == 12
    assert all("result" not in s.metrics for s in rest)  # the run returns it (run protocol)
    resumed = run.result
    assert resumed is d.result and resumed is not None
    assert np.array_equal(resumed["conv2"].iou, full["conv2"].iou)
    assert np.array_equal(resumed["conv2"].thresholds, full["conv2"].thresholds)
    # closing the generator mid-run (the widget's stop) also leaves a resumable state
    d2 = Dissector(tiny_handle, ["conv2"], small_probe, batch_size=4)
    gen = d2.steps()
    next(gen)
    next(gen)
    gen.close()
    assert d2.steps_done == 2
    assert np.array_equal(d2.run()["conv2"].iou, full["conv2"].iou)


def test_dissect_steps_returns_the_result_and_none_when_stopped(tiny_handle, small_probe) -> None:
    full = dissect(tiny_handle, ["conv2"], small_probe, batch_size=4)
    run = Run(dissect_steps(tiny_handle, ["conv2"], small_probe, batch_size=4))
    stages = [step.metrics["stage"] for step in run]
    assert stages == ["quantile"] * 6 + ["iou"] * 6
    assert run.finished and np.array_equal(run.result["conv2"].iou, full["conv2"].iou)
    stop = threading.Event()
    stop.set()
    stopped = Run(dissect_steps(tiny_handle, ["conv2"], small_probe, stop_event=stop))
    assert list(stopped) == [] and stopped.result is None


def test_check_layers_names_the_model_and_the_problem(tiny_handle) -> None:
    assert check_layers(tiny_handle, ["conv1", "relu2", "conv1"]) == ["conv1", "relu2"]
    assert check_layers(tiny_handle, "conv1") == ["conv1"]
    with pytest.raises(KeyError, match="^.comparison model: .*nearest valid names"):
        check_layers(tiny_handle, ["conv9"], which="comparison model")
    with pytest.raises(ValueError, match="'fc' of the comparison model has no spatial output"):
        check_layers(tiny_handle, ["fc"], which="comparison model")
    with pytest.raises(ValueError, match="at least one layer"):
        check_layers(tiny_handle, [])


def test_a_job_dissects_several_models_one_after_the_other(tiny_handle, small_probe) -> None:
    other = load_model(make_tiny(seed=7), device="cpu", input_size=32)
    alone = [dissect(h, ["conv2"], small_probe, batch_size=8) for h in (tiny_handle, other)]
    job = DissectionJob([tiny_handle, other], ["conv2"], small_probe, batch_size=8)
    assert job.total_steps == 12 and not job.done and job.result(1, partial=True) is None
    assert job.names == [tiny_handle.name, other.name] and job.layers == ["conv2"]
    same = ([tiny_handle, other], "conv2", small_probe)
    assert job.matches(*same, batch_size=8) and job.matches(*same, batch_size=8, iou_threshold=0.3)
    assert not job.matches(*same, batch_size=4) and not job.matches([other, tiny_handle], *same[1:])
    assert not job.matches(*same[:2], probe_set(24, size=32, seed=2), batch_size=8)
    stop = threading.Event()
    first = Run(job.steps(stop))
    seen = []
    for step in first:
        seen.append((step.index, step.metrics["model"], step.total))
        if len(seen) == 8:  # in the second model's quantile stage
            stop.set()
    assert first.result is None and not job.done
    assert job.results[0] is not None and job.results[1] is None
    assert (
        job.result(0, 1.0).iou_threshold == 1.0 and job.result(1) is None and job.result(2) is None
    )
    rest = Run(job.steps())
    seen += [(step.index, step.metrics["model"], step.total) for step in rest]
    assert seen == [(i, int(i >= 6), 12) for i in range(12)]  # one index range, resumed
    assert job.done and rest.result is not None and len(rest.result) == 2
    for got, want in zip(rest.result, alone):
        assert np.array_equal(got["conv2"].iou, want["conv2"].iou)
    shown = job.shown(1, "conv2", 0, 1.0, top_k=2)
    assert shown["rows"] == table_rows(alone[1].with_iou_threshold(1.0), "conv2")
    assert shown["details"].startswith(f"{other.name}, conv2 unit 0:")


def test_a_job_tells_a_front_end_its_progress_record_and_when_to_resume(tiny_handle, small_probe):
    other = load_model(make_tiny(seed=7), device="cpu", input_size=32)
    with pytest.raises(KeyError, match="unknown layer 'conv9' in model 'TinyNet'"):
        check_layers_of([tiny_handle, other], ["conv2", "conv9"])
    small = load_model(nn.Sequential(nn.Conv2d(3, 4, 3)), device="cpu", input_size=32)
    with pytest.raises(KeyError, match="^.comparison model: "):
        check_layers_of([tiny_handle, small], ["conv2"])  # a layer of the model only
    assert check_layers_of([tiny_handle, other], ["conv2", "conv2"]) == ["conv2"]
    args = ([tiny_handle, other], ["conv2"], small_probe, ["a", "b"])
    job = DissectionJob.resumed(None, *args, batch_size=8)
    assert job.names == ["a", "b"] and job.judged() == [] and job.record(0.04) == {}
    stop = threading.Event()
    steps = []
    for step in Run(job.steps(stop)):
        steps.append(step)
        if step.metrics["model"] == 1 and step.metrics["stage"] == "iou":
            stop.set()
    last = steps[-1]  # the second model, tallying IoU: its partial labels are shown
    seen = job.progress(last, 1, "conv2", 0.04)
    assert seen["stage"] == "iou (b)" and seen["status"].startswith("b: IoU tallies")
    assert seen["rows"] == table_rows(job.result(1, 0.04, partial=True), "conv2")
    assert set(job.progress(last, 0, "conv2", 0.04)) == {"stage", "status"}  # model a not tallied
    assert DissectionJob.resumed(job, *args, batch_size=8) is job  # stopped part way: resume
    assert DissectionJob.resumed(job, *args, batch_size=4) is not job  # other settings
    first = job.judged(1.0)
    assert len(first) == 1 and first[0].iou_threshold == 1.0
    assert job.record(1.0) == {"summary": first[0].summary(), "probe": small_probe.describe()}
    assert finish(job.steps()) is not None and job.done
    assert DissectionJob.resumed(job, *args, batch_size=8) is not job  # done: a new run
    rec = job.record(0.04)
    assert (
        rec["compare"] == job.result(1, 0.04).summary() and rec["compare_model"] == other.describe()
    )
    summary = job.result(0, 0.0).summary()  # every unit interpretable at IoU >= 0
    n = sum(s["units"] for s in summary)
    assert interpretable_text(job.result(0, 0.0)) == f"{n}/{n} units interpretable"
    assert interpretable_text(job.result(0, 1.0)) == f"0/{n} units interpretable"
    assert model_label(tiny_handle) == f"{tiny_handle.name} [{tiny_handle.weights}]"


def test_views_rows_bars_text_and_pictures(tiny_handle, small_probe) -> None:
    result = dissect(tiny_handle, ["conv1", "relu2"], small_probe, batch_size=8, top_k=3)
    rows = table_rows(result, "relu2")
    assert len(rows) == 16 and table_rows(result, "conv9") == []
    units = result.units("relu2")
    assert [r["unit"] for r in rows] == list(range(16))
    assert [r["ok"] == "yes" for r in rows] == [u["interpretable"] for u in units]
    bars = summary_bars(result)
    assert [b[0] for b in bars] == ["conv1", "relu2"]
    assert bars[1][1:] == [result.summary()[1]["unique"][c] for c in result.categories]
    other = result.with_iou_threshold(1.0)  # nothing interpretable at IoU 1
    assert comparison_bars([result, other], ["a", "b"]) == [
        [s["layer"], s["interpretable"], 0] for s in result.summary()
    ]
    info = result.unit("relu2", 3)
    text = unit_text(result, "relu2", 3, "tiny")
    assert text.startswith(f"tiny, relu2 unit 3: {info['concept']} ({info['category']})")
    ex = unit_examples(tiny_handle, result, small_probe, "relu2", 3, k=3)
    picture = unit_picture(ex, ncol=4)
    assert picture.shape[-2] >= 128  # 32 px probe images shown 4 times bigger
    assert torch.equal(unit_picture(ex, min_side=1), render_examples(ex, ncol=4))
    alone = static_picture(picture, result)
    both = static_picture(picture, result, ([result, other], ["a", "b"]))
    assert alone.shape[0] == 3 and alone.shape[-1] == max(480, picture.shape[-1])
    assert both.shape[-2] > alone.shape[-2] > picture.shape[-2]
    top = alone[:, : picture.shape[-2], : picture.shape[-1]]
    assert (top - picture).abs().max() <= 1 / 255 + 1e-6  # the unit's picture on top (8 bit)


def test_shown_traits_are_what_a_front_end_copies(tiny_handle, small_probe) -> None:
    a = dissect(tiny_handle, ["relu2"], small_probe, batch_size=8, top_k=3)
    b = a.with_iou_threshold(1.0)
    handles, names = [tiny_handle, tiny_handle], ["a", "b"]
    assert shown_traits([None, None], handles, names, small_probe, 0, "relu2", 0) == {}
    got = shown_traits([a, b], handles, names, small_probe, 1, "relu2", 2, top_k=3)
    assert got["rows"] == table_rows(b, "relu2") and got["summary_bars"] == summary_bars(b)
    assert got["compare_bars"] == comparison_bars([a, b], names)
    assert got["details"] == unit_text(b, "relu2", 2, "b")
    assert got["unit_image"][:8] == b"\x89PNG\r\n\x1a\n" and got["picture"].shape[0] == 3
    only = shown_traits([a, None], handles, names, small_probe, 0, "relu2", 2, table=False)
    assert "rows" not in only and only["compare_bars"] == []
    broken = shown_traits([a], [tiny_handle], ["a"], probe_set(2, size=32), 0, "relu2", 2)
    assert "IndexError" in broken["error"] and "details" not in broken  # probe too short
    assert broken["rows"] == table_rows(a, "relu2")


def test_exports_write_one_csv_and_a_file_per_model(tiny_handle, small_probe, tmp_path) -> None:
    a = dissect(tiny_handle, ["conv1"], small_probe, batch_size=8)
    b = a.with_iou_threshold(1.0)
    assert combined_csv([a], ["x"]) == a.to_csv()
    both = combined_csv([a, b], ["x", "y"]).splitlines()
    assert both[0] == "model," + a.to_csv().splitlines()[0] and len(both) == 1 + 2 * 8
    assert both[1].startswith("x,conv1,0,") and both[9].startswith("y,conv1,0,")
    picture = torch.rand(3, 20, 30)
    paths = export_files(tmp_path / "out", [a, b], ["x", "y"], picture)
    assert set(paths) == {"csv", "json", "compare_json", "png"}
    assert Dissection.load(paths["compare_json"]).iou_threshold == 1.0
    assert Image.open(paths["png"]).size == (30, 20)
    name, mime, data = export_bytes([a], ["x"], picture, ["csv"])
    assert (name, mime, data.decode()) == ("dissection.csv", "text/csv", a.to_csv())
    name, mime, data = export_bytes([a, b], ["x", "y"], picture)
    assert (name, mime) == ("dissection.zip", "application/zip")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert "compare.npz" in z.namelist() and "dissection.png" in z.namelist()
    with pytest.raises(RuntimeError, match="no picture"):
        export_files(tmp_path / "none", [a], ["x"], None, ["png"])


def test_compare_dissections(tiny_handle, small_probe) -> None:
    a = dissect(tiny_handle, ["conv1", "conv2"], small_probe, batch_size=8)
    other = load_model(make_tiny(seed=7), device="cpu", input_size=32)
    b = dissect(other, ["conv2"], small_probe, batch_size=8)
    cmp = compare_dissections([a, b], ["first", "second"])
    assert cmp.layers == ["conv2"] and cmp.units == [16]
    assert cmp.rows() == [
        {
            "layer": "conv2",
            "units": 16,
            "first": a.summary()[1]["interpretable"],
            "second": b.summary()[0]["interpretable"],
        }
    ]
    assert "conv2" in repr(cmp) and cmp.to_csv().startswith("layer,units,first,second")
    assert compare_dissections([a, a]).names[1].endswith("#2")
    c = dissect(tiny_handle, ["conv1"], small_probe, batch_size=8)
    with pytest.raises(ValueError, match="share no layer"):
        compare_dissections([b, c])


def test_cache_reuses_a_saved_result(tiny_handle, small_probe) -> None:
    first = dissect(tiny_handle, ["conv1"], small_probe, batch_size=8, cache=True)
    again = dissect(
        tiny_handle, ["conv1"], small_probe, batch_size=8, cache=True, iou_threshold=0.5
    )
    assert again.iou_threshold == 0.5
    assert np.array_equal(again["conv1"].iou, first["conv1"].iou)
    assert again.meta["seconds"] == first.meta["seconds"]  # loaded, not recomputed


def test_concepts_without_parent_count_once_in_unique_detectors() -> None:
    labels = [
        Concept(0, "-", ""),
        Concept(1, "striped@6px", "texture", "striped"),
        Concept(2, "striped@12px", "texture", "striped"),
        Concept(3, "red", "color"),
    ]
    from cnnvis_widgets.core.dissection import LayerDissection

    iou = np.array([[0, 0.2, 0.1, 0], [0, 0.05, 0.3, 0], [0, 0, 0, 0.08], [0, 0, 0, 0.01]])
    ld = LayerDissection(
        "l",
        np.zeros(4),
        np.zeros(4),
        iou.astype(np.float32),
        np.zeros((4, 1), dtype=np.int64),
        np.zeros((4, 1), dtype=np.float32),
        np.zeros(4, dtype=np.int64),
    )
    r = Dissection(
        {"l": ld}, labels, ["color", "texture"], quantile=0.005, iou_threshold=0.04, n_images=1
    )
    s = r.summary()[0]
    assert s["interpretable"] == 3 and s["by_category"] == {"color": 1, "texture": 2}
    assert s["unique"] == {"color": 1, "texture": 1}
    assert r.unique_detectors("l") == {"color": ["red"], "texture": ["striped"]}


# ----------------------------------------------------------------------------- distributed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        h = load_model(make_tiny(), device="cpu", input_size=32)
        probe = probe_set(20, size=32, seed=2)
        d = Dissector(h, ["conv1", "relu2"], probe, batch_size=4, top_k=3)
        n_local = sum(hi - lo for lo, hi in d.batches)
        result = d.run()
        result.meta["local_images"] = n_local
        result.meta["first_local"] = d.batches[0][0]
        result.save(os.path.join(out, f"rank{rank}"))
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_one_process_result(tmp_path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    h = load_model(make_tiny(), device="cpu", input_size=32)
    single = dissect(h, ["conv1", "relu2"], probe_set(20, size=32, seed=2), batch_size=4, top_k=3)
    ranks = [Dissection.load(tmp_path / f"rank{r}") for r in (0, 1)]
    # each rank took its own slice of the probe set (5 batches of 4: 2 and 3)
    assert [r.meta["local_images"] for r in ranks] == [8, 12]
    assert [r.meta["first_local"] for r in ranks] == [0, 8]
    for r in ranks:
        assert r.meta["world_size"] == 2 and r.n_images == 20
        for layer in ("conv1", "relu2"):
            assert np.array_equal(r[layer].thresholds, single[layer].thresholds)
            assert np.array_equal(r[layer].threshold_error, single[layer].threshold_error)
            assert np.array_equal(r[layer].iou, single[layer].iou)
            assert np.array_equal(r[layer].activated, single[layer].activated)
            assert np.array_equal(r[layer].top_images, single[layer].top_images)
        assert r.summary() == single.summary()


# ----------------------------------------------------------------------------- fidelity


# Bau et al.'s finding (pretrained > random twin) is in tests/test_findings.py


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_dissection_matches_cpu(small_probe) -> None:
    cpu = load_model(make_tiny(), device="cpu", input_size=32)
    gpu = load_model(make_tiny(), device="cuda", input_size=32)
    a = dissect(cpu, ["conv2"], small_probe, batch_size=8)
    b = dissect(gpu, ["conv2"], small_probe, batch_size=8)
    assert np.allclose(a["conv2"].thresholds, b["conv2"].thresholds, rtol=1e-3, atol=1e-4)
    agree = (a["conv2"].best_label == b["conv2"].best_label).mean()
    assert agree > 0.8


def test_dissection_core_runs_without_widget_packages() -> None:
    code = r"""
from cnnvis_widgets import load_model
from cnnvis_widgets.core.dissection import dissect
from cnnvis_widgets.data.concepts import probe_set
from cnnvis_widgets.data.broden import broden_probe
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
r = dissect(load_model(net, device='cpu', input_size=16), '1', probe_set(8, size=16), batch_size=4)
print('ok', len(r.units('1')))
"""
    out = run_without(code)
    assert "ok 4" in out.stdout
