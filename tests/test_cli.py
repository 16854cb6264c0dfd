"""The `cnnvis` command: exit codes, listings, the report job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis_widgets import cli
from cnnvis_widgets.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_models_lists_and_unknown_model_fails(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "efficientnet_lite0" and "torchvision:vgg16" in out
    assert main(["models", "torchvision:alexnet", "--random"]) == 0
    assert "features.0" in capsys.readouterr().out
    assert main(["models", "alexnet9"]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_report_quick_writes_html(tmp_path, capsys) -> None:
    code = main(["report", "--quick", "--steps", "4", "--no-pdf", "--out", str(tmp_path)])
    html = (tmp_path / "report.html").read_text()
    for section in (
        "The model",
        "Activation maximization",
        "DeconvNet: top-9 patches",
        "Attribution",
        "Adversarial examples",
    ):
        assert f"<h2>{section}</h2>" in html
    assert "This section failed" not in html and "Not available" not in html
    assert html.count("data:image/png;base64,") >= 7
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "activation maximization" in err
    # tqdm bars: count, elapsed<remaining and a rate
    assert re.search(r"activation maximization.*4/4 \[\d\d:\d\d<\d\d:\d\d", err), err


def test_export_missing_notebook_fails_clearly(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope.ipynb")]) == 1
    assert "no notebook at" in capsys.readouterr().err


def test_voila_missing_notebook_fails_clearly(tmp_path, capsys) -> None:
    assert main(["voila", str(tmp_path / "nope.ipynb")]) == 1
    assert "no notebook at" in capsys.readouterr().err


def _tokens(text: str) -> list[str]:
    return re.findall(r"token[=: ]+([0-9a-f]{16,})", text)


def test_lab_prints_the_token_the_server_gets_and_ships_lab_settings(tmp_path, monkeypatch, capsys):
    seen: list[list[str]] = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, **kw: seen.append(cmd) or 0)
    assert main(["lab", "--dir", str(tmp_path), "--port", "8890"]) == 0
    (cmd,) = seen
    printed = _tokens(capsys.readouterr().out)
    server = [a.split("=", 1)[1] for a in cmd if a.startswith("--IdentityProvider.token=")]
    assert printed and set(printed) == set(server), (printed, server)
    assert (tmp_path / "00_tour.ipynb").is_file()  # the notebooks were copied there
    # The Lab settings overrides: widget state saved into notebooks, no news fetched.
    (settings,) = [a.split("=", 1)[1] for a in cmd if a.startswith("--LabApp.app_settings_dir=")]
    overrides = json.loads((Path(settings) / "overrides.json").read_text())
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


def test_lab_settings_keep_the_environments_own_overrides(tmp_path, monkeypatch):
    import jupyterlab.commands

    app = tmp_path / "app"
    (app / "settings").mkdir(parents=True)
    mine = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": False}, "x:y": {"a": 1}}
    (app / "settings" / "overrides.json").write_text(json.dumps(mine))
    (app / "settings" / "page_config.json").write_text("{}")
    monkeypatch.setattr(jupyterlab.commands, "get_app_dir", lambda: str(app))
    merged = cli.lab_settings_dir()
    assert merged != cli.LAB_SETTINGS and (merged / "page_config.json").is_file()
    got = json.loads((merged / "overrides.json").read_text())
    assert got["@jupyter-widgets/jupyterlab-manager:plugin"] == {"saveState": False}  # theirs win
    assert got["x:y"] == {"a": 1}
    assert got["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_lab_uses_one_token(tmp_path):
    """`make -n lab` (a dry run) shows every use of the token: all equal; an override wins."""
    env = {k: v for k, v in os.environ.items() if k != "TOKEN"}
    out = subprocess.run(
        ["make", "-s", "-n", "lab"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout
    tokens = _tokens(out)
    assert tokens and len(set(tokens)) == 1, out
    out = subprocess.run(
        ["make", "-s", "-n", "lab", "TOKEN=abcdef0123456789"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert set(_tokens(out)) == {"abcdef0123456789"}, out


def test_progress_bar_shows_count_rate_and_eta(capsys):
    assert list(cli.progress(iter(range(8)), 8, "activation maximization")) == list(range(8))
    err = capsys.readouterr().err
    assert "activation maximization" in err
    assert "100%" in err and "8/8" in err
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+(it/s|s/it)\]", err), err  # elapsed<ETA, rate
    assert list(cli.progress(iter(["a", "b"]), None, "sections")) == ["a", "b"]
    assert "2it" in capsys.readouterr().err.replace(" ", "")


def test_atlas_build_then_export_through_the_site_package(tmp_path, monkeypatch, capsys):
    import types

    monkeypatch.syspath_prepend(str(REPO / "tests" / "core"))  # atlas_tiny:tiny
    monkeypatch.setenv("CNNVIS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "atlas"
    args = ["atlas", "build", "--model", "atlas_tiny:tiny", "--input-size", "32", "--device",
            "cpu", "--steps", "2", "--size", "16", "--n-images", "4", "--probe-images", "0",
            "--inversion-steps", "0", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "atlas" in captured.err  # the progress bar
    manifest = json.loads((out / "atlas.json").read_text())
    assert manifest["format"] == "cnnvis-atlas/1" and manifest["settings"]["steps"] == 2
    assert [e["name"] for e in manifest["layers"]] == ["1", "4"]
    # a second run resumes: every piece is reused
    assert main(args) == 0
    assert "computed {}" in capsys.readouterr().out
    # export hands the folder to cnnvis_widgets.site.export_site
    calls = []
    site = types.ModuleType("cnnvis_widgets.site")
    site.export_site = lambda atlas_dir, dest: calls.append((atlas_dir, dest)) or dest
    monkeypatch.setitem(sys.modules, "cnnvis_widgets.site", site)
    assert main(["atlas", "export", str(out), "--out", str(tmp_path / "site")]) == 0
    assert calls == [(out, tmp_path / "site")]


def test_atlas_commands_fail_clearly(tmp_path, monkeypatch, capsys):
    assert main(["atlas", "export", str(tmp_path / "none"), "--out", str(tmp_path / "s")]) == 1
    assert "not a built atlas" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "cnnvis_widgets.site", None)  # an installation without it
    (tmp_path / "atlas.json").write_text("{}")
    assert main(["atlas", "export", str(tmp_path), "--out", str(tmp_path / "site")]) == 1
    assert "static-site exporter" in capsys.readouterr().err
    assert main(["atlas", "build", "--model", "no_such_module:f", "--out", str(tmp_path)]) == 1
    assert "cannot import the model factory" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    monkeypatch.syspath_prepend(str(REPO / "tests" / "core"))
    code = main(["atlas", "build", "--model", "atlas_tiny:tiny", "--input-size", "32",
                 "--device", "cpu", "--out", str(busy)])  # fmt: skip
    assert code == 1 and "holds no atlas" in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine"
