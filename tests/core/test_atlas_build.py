"""The atlas batch job: the built directory, resuming after an interruption, content keys, and
one process vs two (torchrun, gloo) giving the same atlas."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cnnvis_widgets import load_model
from cnnvis_widgets.core.atlas import store as S
from cnnvis_widgets.core.atlas.build import BuildSettings, build_atlas, build_atlas_steps

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import atlas_tiny  # noqa: E402

LAYERS = ["1", "4"]
SMALL = dict(steps=3, size=32, batch=4, n_images=10, shard=4, probe_images=8,
             inversion_steps=3, inversion_size=32)  # fmt: skip
CLI_SMALL = ["--steps", "3", "--size", "32", "--batch", "4", "--n-images", "10", "--shard", "4",
             "--probe-images", "8", "--inversion-steps", "3", "--inversion-size", "32"]  # fmt: skip


def tiny_handle(seed: int = 0):
    return load_model(atlas_tiny.tiny(seed), device="cpu", input_size=32)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the output (not parts/), the manifest without its time stamp."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith("parts/"):
            data = p.read_bytes()
            if rel == "atlas.json":
                d = json.loads(data)
                d.pop("created")
                data = json.dumps(d, sort_keys=True).encode()
            out[rel] = data
    return out


@pytest.fixture(scope="module")
def one_go(tmp_path_factory):
    out = tmp_path_factory.mktemp("one-go")
    report = build_atlas(tiny_handle(), LAYERS, None, out, BuildSettings(**SMALL))
    return out, report


def test_the_built_directory_follows_the_format(one_go):
    out, report = one_go
    assert report.reused == {} and report.computed["am"] == 2 + 3  # 8 and 12 units, batch 4
    m = json.loads((out / "atlas.json").read_text())
    assert m["format"] == "cnnvis-atlas/1" and m["model"]["num_classes"] == 5
    assert m["model"]["fingerprint"] == tiny_handle().fingerprint()
    assert [e["dir"] for e in m["layers"]] == ["layers/000-1", "layers/001-4"]
    assert m["layers"][1]["shape"] == [12, 16, 16] and all(m["layers"][1]["complete"].values())
    assert m["dataset"]["images"] == 10 and m["settings"]["steps"] == 3
    atlas = S.open_atlas(out)
    rec = atlas.layer("4")
    assert rec["channels"] == 12 and len(rec["units"]) == 12
    assert rec["inversion"]["image"] == "inversion.png" and rec["inversion"]["error"] >= 0
    u = rec["units"][5]
    assert u["am"] == "am/5.png" and (out / "layers/001-4" / u["am"]).is_file()
    assert len(u["top"]) == 9 and [t["image"] for t in u["top"]][:2] == [
        "top/5_0.png",
        "top/5_1.png",
    ]
    scores = [t["score"] for t in u["top"]]
    assert scores == sorted(scores, reverse=True)
    assert all((out / "layers/001-4" / t["image"]).is_file() for t in u["top"])
    assert len(u["classes"]) == 5 and u["best_concept"]["label"]
    # a dissection label only where the IoU reaches the threshold; the share is theirs
    thr = rec["iou_threshold"]
    for r in rec["units"]:
        assert (r["dissection"] is not None) == (r["best_concept"]["iou"] >= thr)
        assert r["dissection"] in (None, r["best_concept"])
    share = sum(r["dissection"] is not None for r in rec["units"]) / 12
    assert rec["interpretable"] == pytest.approx(share)
    # what removing each unit does: ablate's own numbers, the network's top-1 as the labels
    from cnnvis_widgets.core.atlas.build import _dataset
    from cnnvis_widgets.core.importance import ablate

    h = tiny_handle()
    res = ablate(h, "4", "all", _dataset(None, h, BuildSettings(**SMALL))[0], how="zero")
    assert res.labels_from == "model" and res.baseline_accuracy == 1.0 and res.count == 10
    for g, r in enumerate(rec["units"]):
        a = r["ablation"]
        assert a["accuracy_drop"] == float(res.accuracy_drop[g]) and a["images"] == 10
        assert a["classes"] == [[n, -d] for n, d in res.hurts_most(g, 5)]
        assert all(d > 0 for _, d in a["classes"]) and a["labels"] == "model"
    drops = [r["ablation"]["accuracy_drop"] for r in rec["units"]]
    assert max(drops) > 0  # some unit of the tiny net changes some image's top-1
    assert report.computed["ablation"] == 2
    grid = atlas.grid("4")
    assert grid.complete and grid.images.shape == (12, 3, 32, 32)
    assert set(atlas.labels("4")) == set(range(12))
    with pytest.raises(ValueError, match="not empty and holds no atlas"):
        (out.parent / "other").mkdir(exist_ok=True)
        (out.parent / "other" / "notes.txt").write_text("mine")
        build_atlas(tiny_handle(), LAYERS, None, out.parent / "other", BuildSettings(**SMALL))
    assert (out.parent / "other" / "notes.txt").read_text() == "mine"


def test_an_opened_atlas_card_shows_the_stored_removal(one_go):
    from cnnvis_widgets.core.atlas.build import _dataset
    from cnnvis_widgets.core.atlas.card import card_view
    from cnnvis_widgets.core.atlas.opened import atlas_card
    from cnnvis_widgets.core.importance import ablate

    out, _ = one_go
    h = tiny_handle()
    res = ablate(h, "4", "all", _dataset(None, h, BuildSettings(**SMALL))[0], how="zero")
    row = max(range(12), key=lambda g: (bool(res.hurts_most(g)), float(res.accuracy_drop[g])))
    card = atlas_card(h, S.open_atlas(out), "4", row)
    live = res.worth(3)[res.ranking().index(row)]  # what the computed card would show
    assert live.units == (row,) and card.removal is not None
    assert card.removal.accuracy_drop == pytest.approx(live.accuracy_drop)
    assert card.removal.accuracy == pytest.approx(live.accuracy)
    assert [n for n, _ in card.removal.hurts] == [n for n, _ in live.hurts]
    assert [d for _, d in card.removal.hurts] == pytest.approx([d for _, d in live.hurts])
    text = card_view(card)["removal_text"]
    assert "10 images, agreement with the intact network (intact 100.0%)" in text


def test_interrupted_build_resumes_to_the_same_atlas(one_go, tmp_path):
    ref, full = one_go
    out = tmp_path / "resumed"
    stop = threading.Event()
    seen = 0
    for _ in build_atlas_steps(tiny_handle(), LAYERS, None, out, BuildSettings(**SMALL),
                                  stop_event=stop):  # fmt: skip
        seen += 1
        if seen == 6:
            stop.set()
    assert not (out / "atlas.json").exists() and (out / "parts").is_dir()
    report = build_atlas(tiny_handle(), LAYERS, None, out, BuildSettings(**SMALL))
    reused = sum(report.reused.values())
    assert reused >= 5  # the pieces finished before the stop are not computed again
    for kind, n in full.computed.items():
        assert report.computed.get(kind, 0) + report.reused.get(kind, 0) == n, kind
    assert snapshot(out) == snapshot(ref)
    # once complete, nothing is computed again
    again = build_atlas(tiny_handle(), LAYERS, None, out, BuildSettings(**SMALL))
    assert again.computed == {} and snapshot(out) == snapshot(ref)


def test_changed_settings_or_model_are_not_served_stale_results(one_go, tmp_path):
    ref, full = one_go
    out = tmp_path / "changed"
    quick = dict(SMALL, inversion_steps=0, ablation=False)
    build_atlas(tiny_handle(), LAYERS, None, out, BuildSettings(**quick))
    m = json.loads((out / "atlas.json").read_text())
    assert not m["layers"][1]["complete"]["ablation"] and m["layers"][1]["complete"]["am"]
    assert all(u["ablation"] is None for u in S.open_atlas(out).layer("4")["units"])
    steps = build_atlas(tiny_handle(), LAYERS, None, out, BuildSettings(**dict(quick, steps=4)))
    assert steps.computed["am"] == full.computed["am"]  # new AM recipe: every batch again
    assert "top" not in steps.computed and "dissection" not in steps.computed
    assert json.loads((out / "atlas.json").read_text())["settings"]["steps"] == 4
    other = build_atlas(tiny_handle(1), LAYERS, None, out, BuildSettings(**quick))
    assert other.reused == {}  # other weights: nothing of the first model is reused
    assert snapshot(out)["layers/001-4/layer.json"] != snapshot(ref)["layers/001-4/layer.json"]


def test_no_ablation_on_the_command_line():
    from cnnvis_widgets.cli import build_parser

    args = ["atlas", "build", "--out", "x"]
    assert build_parser().parse_args(args).ablation is None  # the setting's default: measured
    assert build_parser().parse_args([*args, "--no-ablation"]).ablation is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_build_the_same_atlas_as_one(one_go, tmp_path):
    ref, _ = one_go
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]),
               CNNVIS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # fmt: skip
    args = ["atlas", "build", "--model", "atlas_tiny:tiny", "--input-size", "32", "--device",
            "cpu", "--layers", *LAYERS, *CLI_SMALL, "--out", str(tmp_path / "two")]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "cnnvis_widgets.cli", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(2 processes)" in proc.stderr
    assert snapshot(tmp_path / "two") == snapshot(ref)
