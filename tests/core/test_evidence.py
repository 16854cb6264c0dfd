"""Faithfulness curves and the sanity check of saliency maps (Adebayo et al. 2018)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnvis_widgets import load_model
from cnnvis_widgets.core.attribution import faithfulness as FA
from cnnvis_widgets.core.attribution import sanity as S
from cnnvis_widgets.core.blocks.runs import Run


class TopLeft(nn.Module):
    """Class 0's logit is 4 x the mean absolute value of the top-left 8 x 8 pixels (averaged
    over channels); class 1's is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)[:, 0, :8, :8].abs().mean((1, 2)) * 4
        return torch.stack([a, torch.zeros_like(a)], 1)


def test_deletion_by_the_true_importance_beats_random_and_reversed() -> None:
    h = load_model(TopLeft(), device="cpu", input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    x = ((yy + xx) % 2 * 2 - 1).float().expand(1, 3, 16, 16)  # a +-1 checkerboard: blur -> ~0
    truth = torch.zeros(16, 16)
    truth[:8, :8] = 1.0
    maps = {"truth": truth, "reversed": 1.0 - truth}
    run = Run(FA.faithfulness_steps(h, x, 0, maps, steps=16, batch_size=5))
    steps = list(run)
    c = run.result
    assert c is not None and steps[-1].metrics["done"] == len(steps)
    dele = c.auc("deletion")
    assert dele["truth"] < dele["random"] < dele["reversed"]
    ins = c.auc("insertion")
    assert ins["truth"] > ins["reversed"]
    p_full = float(torch.sigmoid(torch.tensor(4.0)))
    assert float(c.curves["deletion"]["truth"][0]) == pytest.approx(p_full, rel=1e-5)
    assert float(c.curves["deletion"]["truth"][-1]) == pytest.approx(0.5, rel=1e-5)  # all grey
    assert [r["order"] for r in c.table()] == ["truth", "reversed", "random", "centre"]


def test_faithfulness_refuses_unit_targets_batches_and_maps_of_another_size(tiny_handle) -> None:
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(TypeError, match="class target"):
        FA.faithfulness(tiny_handle, x, "conv2:1", {"m": torch.rand(32, 32)})
    with pytest.raises(ValueError, match="one image"):
        FA.faithfulness(tiny_handle, torch.randn(2, 3, 32, 32), 0, {"m": torch.rand(32, 32)})
    with pytest.raises(ValueError, match="the image is"):
        FA.faithfulness(tiny_handle, x, 0, {"m": torch.rand(16, 16)})


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (200,), generator=g).float()
    b = a + torch.randint(0, 3, (200,), generator=g).float()
    assert S.spearman(a, b) == pytest.approx(float(stats.spearmanr(a, b).statistic), abs=1e-9)
    assert S.spearman(a, torch.zeros(200)) == 0.0


def test_ssim_is_one_for_equal_maps_and_lower_with_noise() -> None:
    m = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    from cnnvis_widgets.core.blocks.regularizers import gaussian_blur

    m = gaussian_blur(m, 2.0)[0, 0]
    m = m / m.max()
    noisy = (m + 0.3 * torch.rand(32, 32, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert S.ssim(m, m) == pytest.approx(1.0, abs=1e-9)
    assert S.ssim(m, noisy) < 0.9


def test_randomization_runs_on_a_copy_and_the_independent_variant_restores(tiny_handle) -> None:
    model = tiny_handle.model
    model.train()
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    assert S.weight_blocks(model) == ["conv1", "conv2", "fc"]
    casc = Run(S.cascading_randomization(tiny_handle, x, 1, ["saliency"], blocks=["fc", "conv2"]))
    stages = [st.metrics["stage"] for st in casc]
    ind = S.cascading_randomization(tiny_handle, x, 1, ["saliency"], blocks=["fc", "conv2"],
                                    independent=True)  # fmt: skip
    ind_run = Run(ind)
    list(ind_run)
    assert stages == ["trained", "fc", "conv2"]
    assert casc.result is not None and ind_run.result is not None
    # stage 1 is the same in both (fc random); stage 2 differs: fc trained again in the variant
    torch.testing.assert_close(casc.result.maps["saliency"][1], ind_run.result.maps["saliency"][1])
    assert not torch.allclose(casc.result.maps["saliency"][2], ind_run.result.maps["saliency"][2])
    assert casc.result.scores["saliency"]["spearman"][0] == pytest.approx(1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    with pytest.raises(AttributeError):
        list(S.cascading_randomization(tiny_handle, x, 1, ["saliency"], blocks=["nope"]))


def test_guided_backprop_survives_randomization_where_gradients_do_not(lite0) -> None:
    """Adebayo et al. 2018, Fig. 2: with the top blocks re-initialised, the plain gradient's map
    decorrelates from the trained model's while guided backprop's stays nearly the same."""
    from cnnvis_widgets.data import sample_image

    x = torch.cat([lite0.preprocess(sample_image(n)) for n in ("cat", "coffee")])
    before = {k: v.clone() for k, v in lite0.model.state_dict().items()}
    top = ["_fc", "_bn1", "_conv_head", "_blocks.15"]
    run = Run(S.cascading_randomization(lite0, x, [281, 967], ["saliency", "guided_backprop"],
                                        blocks=top))  # fmt: skip
    for _ in run:
        pass
    r = run.result
    assert r is not None
    sal, gb = r.scores["saliency"]["spearman_abs"], r.scores["guided_backprop"]["spearman_abs"]
    assert sal[-1] < 0.5 and gb[-1] > 0.9, (sal, gb)
    assert r.verdict("saliency").startswith("passes") and r.verdict("guided_backprop").startswith(
        "fails"
    )
    assert all(torch.equal(v, before[k]) for k, v in lite0.model.state_dict().items())


def test_deletion_only_skips_the_blur_and_the_steps_carry_each_batch(monkeypatch) -> None:
    h = load_model(TopLeft(), device="cpu", input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    truth = torch.rand(16, 16, generator=torch.Generator().manual_seed(5))

    def no_blur(*args, **kwargs):
        raise AssertionError("the insertion substrate was blurred for deletion only")

    monkeypatch.setattr(FA, "gaussian_blur", no_blur)
    run = Run(FA.faithfulness_steps(h, x, 0, {"m": truth}, steps=10, kinds=("deletion",),
                                    batch_size=4))  # fmt: skip
    got: dict[str, list[float]] = {}
    for step in run:
        row = got.setdefault(step.metrics["order"], [])
        assert step.metrics["start"] == len(row)
        row.extend(step.metrics["values"].tolist())
    assert run.result is not None and list(run.result.curves) == ["deletion"]
    for name, values in run.result.curves["deletion"].items():
        assert values.tolist() == got[name]


def test_the_curve_board_streams_every_map_and_the_baselines() -> None:
    from cnnvis_widgets.core.attribution import evidence_run as E

    h = load_model(TopLeft(), device="cpu", input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    truth = torch.zeros(16, 16)
    truth[:8, :8] = 1.0
    maps = {"truth": truth, "reversed": 1.0 - truth}
    keys = {"truth": ("t",), "reversed": ("r",), "baselines": ("b",)}
    board = E.CurveBoard(list(maps), 6, 16 * 16)
    kept: dict = {}
    charts = []
    for _ in E.curves_steps(h, x, 0, maps, board, kept, keys):
        charts.append([s["name"] for s in board.chart("deletion")["series"]])
    assert charts[0] == ["truth"] and charts[-1] == ["truth", "reversed", "random", "centre"]
    want = FA.faithfulness(h, x, 0, maps, steps=6)
    chart = board.chart("insertion")
    for s in chart["series"]:
        assert s["dashed"] == (s["name"] in FA.BASELINE_ORDERS)
        assert [p[1] for p in s["points"]] == pytest.approx(
            want.curves["insertion"][s["name"]].tolist(), abs=1e-4
        )
    assert [r["order"] for r in board.rows()] == ["truth", "reversed", "random", "centre"]
    assert board.rows()[0]["deletion"] == pytest.approx(want.auc("deletion")["truth"], abs=1e-4)
    again = E.CurveBoard(["reversed"], 6, 16 * 16)  # kept curves are not computed again
    steps = list(E.curves_steps(h, x, 0, {"reversed": maps["reversed"]}, again, kept, keys))
    assert steps == [] and again.rows() == [r for r in board.rows() if r["order"] != "truth"]


def test_sanity_badges_are_provisional_until_the_judged_stage_then_the_verdict() -> None:
    from cnnvis_widgets.core.attribution import evidence_run as E

    strip = E.SanityStrip(["saliency", "guided_backprop"], planned=8)  # judged after 2 blocks
    stages = [("trained", 1.0, 1.0), ("fc", 0.6, 0.95), ("b7", 0.3, 0.9), ("b6", 0.1, 0.9)]
    lines = []
    for stage, sal, gb in stages:
        strip.add({"stage": stage, "maps": {"saliency": torch.zeros(1, 3, 2, 2),
                   "guided_backprop": torch.zeros(1, 3, 2, 2)},
                   "scores": {"saliency": {"spearman_abs": sal},
                              "guided_backprop": {"spearman_abs": gb}}})  # fmt: skip
        lines.append(strip.verdicts().splitlines())
    assert "randomizing the top blocks" in lines[0][0]
    assert lines[1][0].endswith("so far, judged after 2 blocks") and "fails" in lines[1][0]
    assert (
        "map changes with the weights (passes): rank corr. 0.30 after randomizing 2 blocks"
        in (lines[2][0])
    )
    assert lines[3][0].endswith("; 0.10 after 3 blocks")
    assert (
        "still looks the same after randomizing 2 blocks (down to b7), rank corr. 0.90"
        in (lines[3][1])
    )
    assert "not about the model" in lines[3][1]
    result = S.SanityResult(stages=["trained", "fc", "b7", "b6", *"abcde"], independent=False)
    result.scores = {"saliency": {"spearman_abs": [1.0, 0.6, 0.3, 0.1]}}
    assert result.verdict("saliency").startswith("passes")  # judged at the same stage
