"""What the method-notebook generators share: their cells and how a notebook is written.

A generator script (``nb_*.py``) defines one upper-case string constant per cell, in the order of
the notebook; ``write_notebook(NAME, globals())`` turns them into cells. A text that begins with a
heading (``#``) is a markdown cell, any other a code cell: every prose cell of these notebooks
opens with its heading, and no code cell begins with a comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def cells(namespace: Mapping[str, object]) -> list[nbformat.NotebookNode]:
    """The cells: the upper-case string constants of ``namespace`` in definition order.

    ``NAME`` (the file name) is not a cell.

    >>> [c.cell_type for c in cells({"NAME": "x.ipynb", "INTRO": "# Title", "CODE": "1 + 1"})]
    ['markdown', 'code']
    """
    texts = [v for k, v in namespace.items() if k.isupper() and k != "NAME" and isinstance(v, str)]
    return [new_markdown_cell(t) if t.startswith("#") else new_code_cell(t) for t in texts]


def write_notebook(name: str, namespace: Mapping[str, object]) -> Path:
    """Write ``notebooks/<name>`` from the cells of ``namespace`` and return its path."""
    NOTEBOOKS.mkdir(exist_ok=True)
    nb = new_notebook(cells=cells(namespace))
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    path = NOTEBOOKS / name
    nbformat.write(nb, path)
    print("wrote", path)
    return path
