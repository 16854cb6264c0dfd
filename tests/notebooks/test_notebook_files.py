"""The stored teaching notebooks as files: what JupyterLab sees when it opens them (no kernel run).

JupyterLab 4 marks a notebook as modified right after opening it when its ``kernelspec`` or
``language_info`` differ from what the kernel reports, and a notebook that nbformat would
rewrite differently is rewritten on the first save: the generator (scripts/make_notebooks.py)
writes both as the kernel does, and this checks every stored notebook. The browser side (the tab
shows no "modified" dot) is tests/e2e/test_lab_notebook.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_as_nbformat_and_jupyterlab_write_it(path: Path) -> None:
    import nbformat
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, nbformat.v4.nbformat_minor)
    assert nbformat.writes(nb) + "\n" == text, "nbformat would rewrite this file"
    assert [c.id for c in nb.cells] == [f"cell-{i:02d}" for i in range(len(nb.cells))]
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
    assert "widgets" not in nb.metadata  # no stale widget state from a generator run

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert nb.metadata.kernelspec == {
        "display_name": spec.display_name,
        "language": spec.language,
        "name": "python3",
    }
    info = dict(IPythonKernel.language_info)
    stored = dict(nb.metadata.language_info)
    # The patch version is the generating interpreter's (3.11.x here); the rest must be equal.
    assert stored.pop("version").split(".")[:2] == info.pop("version").split(".")[:2]
    assert stored == info
