"""Warnings of dependencies that would show as red cell outputs in the teaching notebooks.

Each check runs in a fresh interpreter: these warnings are raised once per process, on first use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CLASS_CONTRIBUTIONS = """
import warnings
import torch
from torch import nn
from cnnvis_widgets import load_model
from cnnvis_widgets.core import atlas

torch.set_num_threads(1)
model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 3))
handle = load_model(model, device="cpu", input_size=16)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    contrib = atlas.class_contributions(handle, "1", 0, torch.rand(2, 3, 16, 16))
assert contrib.shape == (3,), contrib.shape
print("WARNINGS:", [f"{w.category.__name__}: {w.message}" for w in seen])
"""


def test_class_contributions_shows_no_jit_script_future_warning() -> None:
    """The atlas's forward-mode pass loads torch's JVP decompositions, which call the
    deprecated ``torch.jit.script`` (FutureWarning in notebook 06): silenced at that call."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, "-c", CLASS_CONTRIBUTIONS],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    warnings_line = [ln for ln in proc.stdout.splitlines() if ln.startswith("WARNINGS:")]
    assert warnings_line == ["WARNINGS: []"], proc.stdout + proc.stderr
    assert "jit.script" not in proc.stderr, proc.stderr
