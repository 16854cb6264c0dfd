"""The house's layering: arrows point down only (DESIGN.md section 1).

``cli -> report / site / widgets -> figures -> core -> models / data -> imaging / limits`` (the
static atlas, ``site/``, sits at the report's level). Every import
of the package is read with :mod:`ast` (those inside functions and ``TYPE_CHECKING`` blocks too),
relative imports are resolved, and each module is checked against the layers it may not import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cnnvis_widgets

PACKAGE = Path(cnnvis_widgets.__file__).resolve().parent
ROOT = "cnnvis_widgets"

_UPPER = ("widgets", "report", "report_sections", "report_design", "site", "cli")

#: (modules the rule applies to, packages/modules they must not import, why).
RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (
        ("models", "data"),
        ("core", "figures", *_UPPER),
        "models/ and data/ sit below core: they may use imaging, never core, widgets or the report",
    ),
    (
        ("imaging",),
        ("core", "models", "data", "figures", *_UPPER),
        "imaging.py is the bottom layer for pictures (torch, numpy, pillow only)",
    ),
    (
        ("limits",),
        ("core", "models", "data", "figures", *_UPPER),
        "limits.py (the settings' ranges) is a bottom layer: it imports no core, model or widget",
    ),
    (("core",), ("figures", *_UPPER), "core/ imports no widget, figure, report or CLI module"),
    (("figures",), _UPPER, "figures.py sits below the widgets and the report"),
    (
        ("report", "report_sections", "report_design"),
        ("widgets", "cli"),
        "the report imports no widget module",
    ),
    (("site",), ("widgets", "cli"), "the static atlas (site/) imports no widget or CLI module"),
]


def module_name(path: Path, package: Path) -> str:
    """``.../cnnvis_widgets/core/hooks.py`` -> ``cnnvis_widgets.core.hooks``."""
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, package: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file, at any depth.

    ``from X import y`` yields both ``X`` and ``X.y`` (``y`` may be a submodule).
    """
    name = module_name(path, package)
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else list(here)
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*"]
    return out


def _within(mod: str, layer: str) -> bool:
    target = f"{ROOT}.{layer}"
    return mod == target or mod.startswith(target + ".")


def violations(package: Path = PACKAGE) -> list[str]:
    """Every import that points up a layer, as ``"module:line imports target (why)"``."""
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        if "static" in path.relative_to(package).parts:
            continue
        name = module_name(path, package)
        for subjects, forbidden, why in RULES:
            if not any(_within(name, s) for s in subjects):
                continue
            seen: set[int] = set()  # one report per import statement
            for line, mod in imported_modules(path, package):
                if line not in seen and any(_within(mod, f) for f in forbidden):
                    seen.add(line)
                    found.append(f"{name}:{line} imports {mod} ({why})")
    return sorted(found)


def test_the_package_is_layered() -> None:
    assert violations() == []


def _write(root: Path, rel: str, text: str = "") -> None:
    p = root / ROOT / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("rel", "source", "offender"),
    [
        ("models/handle.py", "def f():\n    from ..core.imaging import to_pil\n", "models.handle"),
        ("data/concepts.py", "from ..widgets import Dissection\n", "data.concepts"),
        ("data/__init__.py", "from .. import core\n", "data:1"),
        ("core/topk.py", "import cnnvis_widgets.report\n", "core.topk"),
        ("core/atlas/grid.py", "from ...widgets._base import x\n", "core.atlas.grid"),
        ("report.py", "if True:\n    from .widgets.atlas import Atlas\n", "report:2"),
        ("imaging.py", "from .core import hooks\n", "imaging:1"),
        ("limits.py", "def f():\n    from .core.blocks import settings\n", "limits:2"),
        ("figures.py", "from .cli import main\n", "figures:1"),
        ("core/atlas/grid.py", "from ...site import export_site\n", "core.atlas.grid"),
        ("site/_pages.py", "from ..widgets.atlas import Atlas\n", "site._pages"),
        ("data/images.py", "import cnnvis_widgets.site\n", "data.images"),
    ],
)
def test_an_injected_upward_import_is_named(
    tmp_path: Path, rel: str, source: str, offender: str
) -> None:
    for f in ("__init__.py", "core/__init__.py", "models/__init__.py", "data/__init__.py"):
        _write(tmp_path, f)
    _write(tmp_path, "core/hooks.py", "from ..models import ModelHandle\nfrom ..imaging import x\n")
    _write(tmp_path, "widgets/__init__.py", "from ..core import hooks\nfrom ..report import R\n")
    assert violations(tmp_path / ROOT) == []  # downward imports are fine
    _write(tmp_path, rel, source)
    found = violations(tmp_path / ROOT)
    assert len(found) == 1 and found[0].startswith(f"{ROOT}.{offender}"), found
