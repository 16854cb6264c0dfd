"""The `cnnvis` command: exit codes, listings, the report job."""

from __future__ import annotations

from cnnvis_widgets.cli import main


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
    assert "activation maximization" in capsys.readouterr().err


def test_export_missing_notebook_fails_clearly(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope.ipynb")]) == 1
    assert "no notebook at" in capsys.readouterr().err


def test_voila_missing_notebook_fails_clearly(tmp_path, capsys) -> None:
    assert main(["voila", str(tmp_path / "nope.ipynb")]) == 1
    assert "no notebook at" in capsys.readouterr().err
