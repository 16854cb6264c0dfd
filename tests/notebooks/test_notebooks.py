"""Execute every ``notebooks/*.ipynb`` top to bottom with nbclient and require that no cell errors.

The kernel is ``python3`` (resolved by jupyter_client to the interpreter running pytest, i.e. the
venv), its working directory is ``notebooks/``, the repo root is on ``PYTHONPATH`` so the working
tree's ``cnnvis_widgets`` is imported, ``CNNVIS_NUM_THREADS=1``, and ``CNNVIS_NOTEBOOK_STEPS``
(32 unless set) shortens the optimizations run in code cells. Executed copies are written to
``test-artifacts/notebooks/`` for inspection.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
TOUR = NOTEBOOKS_DIR / "00_tour.ipynb"
CELL_TIMEOUT = 900  # seconds per cell: the CI machines are slow and CPU-only
# The notebooks read this to run fewer optimization steps in their code cells (default 256).
NOTEBOOK_STEPS = os.environ.get("CNNVIS_NOTEBOOK_STEPS", "32")

pytestmark = pytest.mark.notebook


def test_tour_notebook_exists():
    assert TOUR.is_file(), f"{TOUR.relative_to(REPO)} is missing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(notebook: Path, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # The kernel subprocess inherits this environment.
    monkeypatch.setenv("CNNVIS_NUM_THREADS", "1")
    monkeypatch.setenv("CNNVIS_NOTEBOOK_STEPS", NOTEBOOK_STEPS)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("CNNVIS_REPORT_DIR", str(tmp_path / "report"))  # the lab-report template
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), path) if p))

    nb = nbformat.read(str(notebook), as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    failure: CellExecutionError | None = None
    try:
        client.execute()
    except CellExecutionError as exc:
        failure = exc
    finally:
        out_dir = REPO / "test-artifacts" / "notebooks"
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(out_dir / notebook.name))

    errors = [
        (i, out)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    # No red output either: nothing on stderr (warnings of dependencies included).
    stderr = [
        (i, "".join(out.get("text", "")))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]
    for i, text in stderr:
        errors.append((i, {"ename": "stderr output", "evalue": text[:2000]}))
    if failure is not None or errors:
        lines = [f"{notebook.name}: cell(s) raised"]
        for i, out in errors:
            lines.append(f"--- cell {i}: {out.get('ename')}: {out.get('evalue')}")
        if failure is not None:
            lines.append(re.sub(r"\x1b\[[0-9;]*m", "", str(failure))[-4000:])
        pytest.fail("\n".join(lines), pytrace=False)
