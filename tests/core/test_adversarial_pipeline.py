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


def test_pgd_steps_returns_the_adversarial_batch_of_its_last_step(tiny_handle, clean) -> None:
    steps, adv = run(A.pgd_steps(tiny_handle, clean, 4 / 255, steps=3, seed=1))
    assert len(steps) == 3 and torch.equal(adv, steps[-1].image)
    assert adv is not steps[-1].image  # a copy: the caller may keep it
    assert torch.equal(A.pgd(tiny_handle, clean, 4 / 255, 3, seed=1), adv)
    stop = threading.Event()
    stop.set()
    assert run(A.pgd_steps(tiny_handle, clean, 4 / 255, steps=3, stop_event=stop)) == ([], None)


def test_attack_settings_name_the_attack_and_its_cache_key() -> None:
    s = P.AttackSettings(method="fgsm", epsilon=2 / 255, steps=50, target=3)
    assert s.norm == "linf" and s.attack_steps == 1 and s.target_class == 3
    assert s.args() == P.attack_args("fgsm", 2 / 255, 50)
    assert P.AttackSettings(method="pgd-l2").norm == "l2"
    assert P.AttackSettings(show_units=False).unit_steps == 0
    base = P.AttackSettings()
    assert P.AttackSettings(n_units=3, layer="x").attack_key() == base.attack_key()
    assert P.AttackSettings(seed=1).attack_key() != base.attack_key()
    assert s.describe(lambda c: f"class{c}") == "fgsm eps 2/255 (0.007843), target class3"
    with pytest.raises(ValueError, match="unknown method"):
        P.AttackSettings().update(method="cw")


def test_epsilon_and_target_checks_name_the_range() -> None:
    assert P.check_epsilon(1.0, "linf") == 1.0 and P.check_epsilon(20.0, "l2") == 20.0
    for bad, norm in ((-0.1, "linf"), (float("nan"), "linf"), (1.5, "linf"), (40.0, "l2")):
        with pytest.raises(ValueError, match="pixel units"):
            P.check_epsilon(bad, norm)
    assert P.check_target(-1, 5) == -1 and P.check_target(4, 5) == 4
    with pytest.raises(ValueError, match=r"valid 0\.\.4, or -1"):
        P.check_target(5, 5)


def test_image_argument_and_clean_pixels(tiny_handle, tmp_path) -> None:
    from PIL import Image

    assert P.image_argument("cat", ["cat"]) == ("cat", None, "cat")
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 0, 0)).save(path)
    choice, photo, label = P.image_argument(str(path), ["cat"])
    assert choice == P.CUSTOM and label == "your image: red.png"
    px = P.clean_pixels(tiny_handle, photo, 32)
    assert px.shape == (1, 3, 32, 32) and 0 <= float(px.min()) <= float(px.max()) <= 1
    _, tensor, _ = P.image_argument(torch.full((3, 8, 8), 0.25), [])
    assert torch.allclose(P.clean_pixels(tiny_handle, tensor, 16), torch.full((1, 3, 16, 16), 0.25))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        P.image_argument(torch.full((3, 8, 8), 2.0), [])
    with pytest.raises(KeyError, match="packaged photos: cat"):
        P.image_argument("dog", ["cat"])


def _settings(**kw):
    args = dict(steps=3, layer="conv2", n_units=2, am_steps=2, am_size=16, attribution="saliency")
    return P.AttackSettings(**{**args, **kw})


def test_run_steps_fills_the_run_and_reuses_the_attack_of_the_same_image(
    tiny_handle, clean
) -> None:
    attack_cache: dict = {}
    am_cache: dict = {}
    seen: list = []
    run1 = P.AdversarialRun(_settings(), image="cat")

    def on_analysis(r):  # called once, before the unit pictures
        seen.append((r.analysis is not None, r.units_pixels is None))

    steps, done = run(
        P.run_steps(
            tiny_handle,
            clean,
            run1,
            attack_cache=attack_cache,
            am_cache=am_cache,
            on_analysis=on_analysis,
        )
    )
    assert done is run1 and seen == [(True, True)]
    assert [s.index for s in steps] == [0, 1, 2, 3, 4] and {s.total for s in steps} == {5}
    assert [s.metrics.get("phase") for s in steps[3:]] == ["units", "units"]
    assert not run1.attack_reused and run1.units_pixels.shape == (2, 3, 16, 16)
    assert float((run1.analysis.adversarial - clean).abs().max()) <= 4 / 255 + 1e-6
    rec = run1.record()
    assert rec["image"] == "cat" and rec["units_synthesized"] and rec["method"] == "pgd-linf"
    # same image and attack settings, other analysis settings: the attack is replayed
    run2 = P.AdversarialRun(_settings(attribution="grad_cam"))
    steps2, _ = run(
        P.run_steps(tiny_handle, clean, run2, attack_cache=attack_cache, am_cache=am_cache)
    )
    assert run2.attack_reused and run2.units_reused
    assert torch.equal(run2.analysis.adversarial, run1.analysis.adversarial)
    assert [s.index for s in steps2] == [2, 4]  # the replayed attack, the cached pictures
    # another image with the same settings is attacked again (the key is the content)
    run3 = P.AdversarialRun(_settings())
    run(P.run_steps(tiny_handle, 1 - clean, run3, attack_cache=attack_cache))
    assert not run3.attack_reused and len(attack_cache) == 1


def test_a_stopped_run_returns_none_and_keeps_nothing_half_done(tiny_handle, clean) -> None:
    stop = threading.Event()
    stop.set()
    r = P.AdversarialRun(_settings())
    called: list = []
    _, done = run(P.run_steps(tiny_handle, clean, r, on_analysis=called.append, stop_event=stop))
    assert done is None and r.analysis is None and called == []
    assert "units_synthesized" not in r.record()
    no_units = P.AdversarialRun(_settings(show_units=False))
    steps, done = run(P.run_steps(tiny_handle, clean, no_units))
    assert done is no_units and len(steps) == 3 and no_units.units_pixels is None


def test_tables_live_pictures_and_status_texts(tiny_handle, clean) -> None:
    adv = (clean + 0.03).clamp(0, 1)
    r, _ = P.analyze_pair(
        tiny_handle, clean, adv, target=None, eps=0.03, layer="conv2", units=2,
        attribution="saliency",
    )  # fmt: skip
    rows = P.prediction_table(r)
    assert rows and all(len(row) == 3 and row[1] == round(row[1], 6) for row in rows)
    assert [u["unit"] for u in P.unit_table(r)] == [u["unit"] for u in r.units[0]]
    assert {c["key"] for c in P.UNIT_TABLE_COLUMNS} <= set(P.unit_table(r)[0])
    pictures = P.live_pictures(adv, clean, 0.03)
    assert pictures is not None and torch.equal(pictures[0], adv[0])
    assert P.live_pictures(adv[:, :, :16], clean, 0.03) is None
    assert P.live_pictures(None, clean, 0.03) is None
    assert [P.grid_rows(n) for n in (1, 3, 4, 7)] == [1, 1, 2, 3]
    run_ = P.AdversarialRun(_settings(), analysis=r)
    report = run_.report("Adversarial examples", tiny_handle.class_name)
    assert (
        report.size
        == P.report_image(
            r, title="t", eps=4 / 255, norm="linf", class_name=tiny_handle.class_name
        ).size
    )
    with pytest.raises(RuntimeError, match="no analysis"):
        P.AdversarialRun().report("t", str)
