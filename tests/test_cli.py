"""The `cnnvis` command: exit codes, listings, the report job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
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
