"""The adversarial run as core steps (attack -> analyze -> maps -> unit pictures) and its
picture, on the tiny model: settings -> attack arguments, replay of a cached attack, stopping,
the attribution fallback, the unit-picture cache, the summary text and the report's rows."""

from __future__ import annotations

import threading

import pytest
import torch

from cnnvis_widgets.core import adversarial as A
from cnnvis_widgets.core.adversarial import pipeline as P


@pytest.fixture
def clean(tiny_handle):
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 32, 32, generator=g)


def run(gen):
    """Drain a steps generator; return (steps, result)."""
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


def test_attack_args_of_each_method() -> None:
    fgsm = P.attack_args("fgsm", 0.02, steps=50, random_start=True)
    assert fgsm == dict(eps=0.02, steps=1, step_size=0.02, norm="linf", random_start=False)
    pgd = P.attack_args("pgd-linf", 0.02, steps=7, step_size=0.0, seed=3)
    assert pgd["steps"] == 7 and pgd["step_size"] is None and pgd["seed"] == 3
    assert P.attack_args("pgd-l2", 1.0, step_size=0.1)["norm"] == "l2"
    assert P.eps_text(8 / 255, "linf").startswith("8/255") and P.eps_text(0.5, "l2") == "0.5"


def test_attack_stays_in_the_ball_and_streams_every_step(tiny_handle, clean) -> None:
    args = P.attack_args("pgd-linf", 4 / 255, steps=5, seed=0)
    steps, (adv, losses) = run(P.attack_steps(tiny_handle, clean, target=None, total=9, **args))
    assert len(steps) == 5 and all(s.total == 9 for s in steps)
    assert len(losses) == 5
    assert float((adv - clean).abs().max()) <= 4 / 255 + 1e-6
    assert not torch.equal(adv, clean)


def test_a_cached_attack_is_replayed_without_attacking(tiny_handle, clean, monkeypatch) -> None:
    adv = clean + 0.01
    monkeypatch.setattr(A, "pgd_steps", lambda *a, **k: 1 / 0)
    args = P.attack_args("pgd-linf", 4 / 255, steps=6)
    steps, (got, losses) = run(
        P.attack_steps(tiny_handle, clean, target=None, total=6, reuse=(adv, [3.0, 2.0]), **args)
    )
    assert [s.index for s in steps] == [5] and steps[0].loss == 2.0
    assert torch.equal(got, adv) and losses == [3.0, 2.0]


def test_a_stopped_attack_returns_nothing(tiny_handle, clean) -> None:
    stop = threading.Event()
    stop.set()
    args = P.attack_args("pgd-linf", 4 / 255, steps=5)
    _, result = run(
        P.attack_steps(tiny_handle, clean, target=None, total=5, stop_event=stop, **args)
    )
    assert result is None


def test_analyze_pair_keeps_the_analysis_when_the_maps_fail(tiny_handle, clean, monkeypatch):
    adv = (clean + 0.02).clamp(0, 1)
    kw = dict(target=None, eps=None, layer="conv2", units=3, attribution="saliency")
    r, err = P.analyze_pair(tiny_handle, clean, adv, **kw)
    assert err == "" and {"clean/original", "adversarial/new"} <= set(r.attribution)
    assert len(r.units[0]) == 3

    def broken(*a, **k):
        raise RuntimeError("no maps here")

    monkeypatch.setattr(A, "attribution_maps", broken)
    r, err = P.analyze_pair(tiny_handle, clean, adv, **kw)
    assert err == "RuntimeError: no maps here" and r.attribution == {} and r.units


def test_unit_pictures_are_cached_per_unit(tiny_handle) -> None:
    cache: dict = {}
    kw = dict(steps=3, size=16, seed=0, cache=cache, offset=10, total=13)
    steps, (px, reused) = run(P.unit_pictures_steps(tiny_handle, "conv2", [4, 1], **kw))
    assert px.shape == (2, 3, 16, 16) and not reused
    assert [s.index for s in steps] == [10, 11, 12]
    assert all(s.metrics == {"phase": "units"} for s in steps)
    assert set(cache) == {("conv2", 3, 16, 0, 4), ("conv2", 3, 16, 0, 1)}
    steps, (again, reused) = run(P.unit_pictures_steps(tiny_handle, "conv2", [1, 4], **kw))
    assert reused and [s.index for s in steps] == [12]
    assert torch.equal(again[0], px[1]) and torch.equal(again[1], px[0])


def test_the_unit_cache_is_bounded(tiny_handle, monkeypatch) -> None:
    monkeypatch.setattr(P, "AM_CACHE_MAX", 2)
    cache = {("old", 0, 0, 0, i): torch.zeros(3, 4, 4) for i in range(3)}
    run(P.unit_pictures_steps(tiny_handle, "conv2", [0], steps=1, size=16, seed=0, cache=cache))
    assert list(cache) == [("conv2", 1, 16, 0, 0)]


def test_summary_and_report_picture(tiny_handle, clean) -> None:
    adv = (clean + 0.03).clamp(0, 1)
    r, _ = P.analyze_pair(
        tiny_handle,
        clean,
        adv,
        target=None,
        eps=0.03,
        layer="conv2",
        units=2,
        attribution="saliency",
    )
    lines = P.summary_lines(
        r, method="pgd-linf", eps=0.03, steps=4, target=-1, class_name=tiny_handle.class_name
    )
    verdict = "changed the top-1 class" if r.success[0] else "did not change the top-1 class"
    assert lines[0].startswith("pgd-linf, epsilon ") and "4 steps" in lines[0]
    assert lines[3] == f"the attack {verdict}"
    targeted = P.summary_lines(
        r,
        method="fgsm",
        eps=0.03,
        steps=4,
        target=2,
        class_name=tiny_handle.class_name,
        attribution_error="boom",
    )
    assert "steps" not in targeted[0] and "target" in targeted[0] and "(2)" in targeted[0]
    assert targeted[-1] == "no attribution maps: boom"
    kw = dict(title="t", eps=0.03, norm="linf", class_name=tiny_handle.class_name)
    two_rows = P.report_image(r, **kw)
    three_rows = P.report_image(r, units_pixels=torch.rand(2, 3, 16, 16), **kw)
    assert three_rows.height > two_rows.height and three_rows.width >= two_rows.width
    r.attribution = {}
    assert P.report_image(r, **kw).height < two_rows.height


def test_units_grid_fills_the_last_row_with_blank_cells() -> None:
    grid = P.units_grid(torch.zeros(4, 1, 8, 8), cols=3)
    assert grid.shape == (3, 2 + 2 * 10, 2 + 3 * 10)
    assert float(grid[:, 12:20, 2:10].max()) == 0.0  # unit 3: first cell of row 2
    assert float(grid[:, 12:20, 12:20].min()) == 1.0  # blank cell
