"""What a user installs: the dependencies, the lazy sub-packages, and wheels / sdists built from a
clean clone that carry the front-end bundle (as CI must check).

The ``packaging`` tests (``pytest -m packaging``) clone the repository's committed HEAD into a
temporary folder and build it the way a user or CI would: ``pip wheel --no-deps`` (with build
isolation: hatchling comes from the package index, npm installs from the lock file), an sdist, a
wheel from that sdist with no npm on PATH, and a clean clone with no npm at all (must fail
loudly). They need git, npm and a reachable package index.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_without

ROOT = Path(__file__).resolve().parents[1]


def _hook_constant(name: str) -> Any:
    """The literal constant ``name`` of the build hook (hatch_build.py), read with :mod:`ast`:
    importing the hook needs hatchling, which only the build environment has."""
    for node in ast.parse((ROOT / "hatch_build.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise LookupError(f"hatch_build.py has no constant {name}")


#: the files of the front-end bundle that every wheel and sdist must carry (the hook's list)
BUNDLE: tuple[str, ...] = _hook_constant("BUNDLE")
STATIC = "cnnvis_widgets/widgets/static"
WIDGET_PACKAGES = ("anywidget", "ipywidgets", "traitlets", "plotly")
NO_NPM_MESSAGE = "npm was not found on PATH"


def _requirement_names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r.strip(), maxsplit=1)[0].lower() for r in reqs}


# ------------------------------------------------------------------------------ dependencies
def test_widgets_and_sample_photo_packages_are_plain_dependencies() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plain = _requirement_names(meta["dependencies"])
    needed = {*WIDGET_PACKAGES, "scikit-learn", "matplotlib", "scikit-image"}
    assert needed <= plain, needed - plain
    # the old extras still resolve (old install lines keep working) and add nothing
    extras = meta["optional-dependencies"]
    assert extras["widgets"] == [] and extras["samples"] == []


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )


def test_subpackages_are_attributes_imported_on_first_use() -> None:
    out = _run_python(
        """
import sys
import cnnvis_widgets as cw
before = sorted(m for m in sys.modules if m.startswith('cnnvis_widgets.'))
assert 'cnnvis_widgets.data' not in sys.modules and 'cnnvis_widgets.core' not in sys.modules
photos = cw.data.sample_images()
assert 'cat' in photos and photos['cat'].mode == 'RGB'
assert cw.core.topk.top_k_patches and cw.core.projections.unit_projections
assert callable(cw.core.activation_max.maximize)
assert 'topk' in dir(cw.core) and 'data' in dir(cw)
try:
    cw.core.no_such_method
except AttributeError as exc:
    assert 'no_such_method' in str(exc)
else:
    raise AssertionError('unknown attribute did not raise')
print('widgets', sorted(m for m in ('anywidget', 'ipywidgets', 'traitlets') if m in sys.modules))
print('ok', len(photos))
"""
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "widgets []" in out.stdout  # core and data never pull in the widget layer
    assert re.search(r"ok \d+", out.stdout)


def test_lazy_attributes_work_with_the_widget_packages_blocked() -> None:
    out = run_without(
        """
import cnnvis_widgets as cw
assert 'cat' in cw.data.sample_images()
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
h = cw.load_model(net, device='cpu', input_size=16)
r = cw.core.activation_max.maximize(h, '1:2', steps=2, size=16)
print('ok', tuple(r.image.shape))
try:
    cw.DeconvNet
except ImportError as exc:
    print('widget', exc)
""",
        blocked=WIDGET_PACKAGES,
    )
    assert "ok (1, 3, 16, 16)" in out.stdout
    assert "widget blocked" in out.stdout  # the widgets really were unavailable


# ------------------------------------------------------------------------------ built artefacts
def _tool(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed")


def _no_npm_path(tmp: Path) -> str:
    """A PATH without npm or node (pip itself runs from sys.executable)."""
    empty = tmp / "no-npm-bin"
    empty.mkdir(exist_ok=True)
    return str(empty)


def _pip_wheel(
    source: Path | str, out: Path, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out)]
    return subprocess.run(
        [*cmd, str(source)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def _clone(dest: Path) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert not (dest / STATIC).exists()  # the bundle is git-ignored: a clean clone has none
    return dest


def _check_wheel(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for name in BUNDLE:
            info = z.getinfo(f"{STATIC}/{name}")
            assert info.file_size > 1000, name  # really built, not an empty placeholder
        fonts = [n for n in names if n.startswith(f"{STATIC}/vendor/") and n.endswith(".woff2")]
        assert fonts, "the widget manager's fonts are missing from vendor/"
        # the vendored MNIST digits of the zf_mnist network, with their licence notice
        assert z.getinfo("cnnvis_widgets/data/mnist_5k.csv.gz").file_size > 1_000_000
        assert "cnnvis_widgets/data/NOTICE-mnist_5k.txt" in names
        notebooks = [n for n in names if n.startswith("cnnvis_widgets/_notebooks/")]
        assert "cnnvis_widgets/_notebooks/00_tour.ipynb" in notebooks and len(notebooks) >= 5
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        plain = _requirement_names(
            [
                line.split(":", 1)[1]
                for line in meta.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line
            ]
        )
        assert {*WIDGET_PACKAGES, "scikit-learn", "matplotlib"} <= plain
        assert b"export" in z.read(f"{STATIC}/widget.js")  # an ES module for anywidget


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory):
    """A clean clone of HEAD and the wheel `pip wheel --no-deps` builds from it (npm runs)."""
    _tool("git", "npm")
    tmp = tmp_path_factory.mktemp("packaging")
    src = _clone(tmp / "clone")
    t0 = time.perf_counter()
    out = _pip_wheel(src, tmp / "wheel")
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    wheels = list((tmp / "wheel").glob("cnnvis_widgets-*.whl"))
    assert len(wheels) == 1
    print(f"\nwheel from a clean clone (npm ci + build): {seconds:.1f} s")
    return {"tmp": tmp, "src": src, "wheel": wheels[0]}


@pytest.mark.packaging
def test_wheel_from_a_clean_clone_carries_the_front_end(clean_build) -> None:
    _check_wheel(clean_build["wheel"])
    # the hook built the bundle in the clone, newer than every source
    src = clean_build["src"]
    assert (src / STATIC / "widget.js").stat().st_mtime >= (src / "js/src/index.js").stat().st_mtime


def _hatchling(tmp: Path) -> Path:
    """hatchling (and editables, for editable wheels) installed into a folder of its own (the
    venv need not have them)."""
    target = tmp / "hatchling"
    if not target.exists():
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(target),
                "hatchling",
                "editables",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-3000:]
    return target


def _build_sdist(src: Path, out: Path, tmp: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    try:
        import build  # noqa: F401

        cmd = [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(src)]
        env = dict(os.environ)
    except ImportError:
        code = f"from hatchling.build import build_sdist; print(build_sdist({str(out)!r}))"
        cmd = [sys.executable, "-c", code]
        env = {**os.environ, "PYTHONPATH": str(_hatchling(tmp))}
    res = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    (sdist,) = out.glob("cnnvis_widgets-*.tar.gz")
    return sdist


@pytest.mark.packaging
def test_sdist_carries_bundle_and_js_sources_and_builds_a_wheel_without_npm(clean_build) -> None:
    tmp = clean_build["tmp"]
    # its own clean clone: the sdist build runs the hook too (npm ci from the lock file was
    # exercised by the wheel build; its node_modules is reused to save a minute)
    src = _clone(tmp / "clone-sdist")
    (src / "js/node_modules").symlink_to(clean_build["src"] / "js/node_modules")
    sdist = _build_sdist(src, tmp / "sdist", tmp)
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for name in BUNDLE:
        assert f"{STATIC}/{name}" in names, name
    for name in (
        "js/package.json",
        "js/package-lock.json",
        "js/src/index.js",
        "js/scripts/vendor.mjs",
        "hatch_build.py",
        "pyproject.toml",
        "notebooks/00_tour.ipynb",
    ):
        assert name in names, name
    assert not any("node_modules" in n for n in names)
    # a wheel from the sdist needs no npm: PATH has no npm or node at all
    out = _pip_wheel(sdist, tmp / "wheel-from-sdist", {"PATH": _no_npm_path(tmp)})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    (wheel,) = (tmp / "wheel-from-sdist").glob("cnnvis_widgets-*.whl")
    _check_wheel(wheel)


@pytest.mark.packaging
def test_clean_clone_without_npm_fails_loudly_naming_the_fix(tmp_path) -> None:
    _tool("git")
    src = _clone(tmp_path / "clone")
    out = _pip_wheel(src, tmp_path / "wheel", {"PATH": _no_npm_path(tmp_path)})
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert NO_NPM_MESSAGE in text and "install Node.js" in text and "render blank" in text
    assert not list((tmp_path / "wheel").glob("*.whl"))


@pytest.mark.packaging
def test_stale_bundle_is_not_packaged_silently(clean_build) -> None:
    """js/src newer than the bundle and no npm: the build fails; CNNVIS_JS_BUILD=skip packages
    the bundle as it is, with a warning. With npm, the bundle is rebuilt (see the first test)."""
    tmp = clean_build["tmp"]
    src = tmp / "clone-stale"
    shutil.copytree(
        clean_build["src"], src, symlinks=True, ignore=shutil.ignore_patterns("node_modules")
    )
    later = time.time() + 5
    os.utime(src / "js/src/index.js", (later, later))
    no_npm = {"PATH": _no_npm_path(tmp)}
    out = _pip_wheel(src, tmp / "wheel-stale", no_npm)
    assert out.returncode != 0 and "bundle is stale" in out.stdout + out.stderr
    out = _pip_wheel(src, tmp / "wheel-stale", {**no_npm, "CNNVIS_JS_BUILD": "skip"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    _check_wheel(next((tmp / "wheel-stale").glob("*.whl")))


@pytest.mark.packaging
def test_editable_build_keeps_working(clean_build) -> None:
    """The editable wheel (what `pip install -e .` installs) builds; it points at the source."""
    tmp = clean_build["tmp"]
    out_dir = tmp / "editable"
    out_dir.mkdir()
    code = f"from hatchling.build import build_editable; print(build_editable({str(out_dir)!r}))"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=clean_build["src"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(_hatchling(tmp))},
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    (wheel,) = out_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        pth = [n for n in z.namelist() if n.endswith(".pth")]
        assert pth and str(clean_build["src"]) in z.read(pth[0]).decode()
