"""Hatch build hook: every wheel and sdist carries the front-end bundle.

The bundle (``cnnvis_widgets/widgets/static/``: ``widget.js``, ``widget.css`` and ``vendor/`` with
require.js, the widget HTML manager and anywidget's AMD module for static exports) is built from
``js/`` by esbuild and is git-ignored. Before hatchling collects the files of any target (wheel,
sdist, editable), this hook

1. checks that every file of the bundle exists and that none is older than the front end's
   sources (``js/src``, ``js/scripts``, ``js/package.json``, ``js/package-lock.json``);
2. if the bundle is missing or stale, runs ``npm ci --prefer-offline`` in ``js/`` when
   ``js/node_modules`` is missing, then ``npm run build``, and checks the result;
3. without npm: a missing bundle fails the build with a message naming the fix (install Node.js
   and npm, or build from the sdist, which contains the bundle); a stale one fails too unless
   ``CNNVIS_JS_BUILD=skip`` says to package it as it is. Editable installs only warn (the source
   tree is live: ``make js`` later is enough).

``CNNVIS_JS_BUILD=always`` rebuilds even an up-to-date bundle; ``skip`` never runs npm.
The sdist contains ``js/`` (without ``node_modules``) and the built bundle, with one mtime for
every file, so a wheel built from it needs no npm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: the files of the bundle, relative to the package's static folder (js/package.json's build)
BUNDLE = (
    "widget.js",
    "widget.css",
    "vendor/require.js",
    "vendor/embed-amd.js",
    "vendor/anywidget.js",
)
STATIC = Path("cnnvis_widgets", "widgets", "static")
SOURCES = ("src", "scripts", "package.json", "package-lock.json")


def _newest(paths: list[Path]) -> float:
    newest = 0.0
    for p in paths:
        if p.is_dir():
            newest = max([newest, *(f.stat().st_mtime for f in p.rglob("*") if f.is_file())])
        elif p.is_file():
            newest = max(newest, p.stat().st_mtime)
    return newest


def bundle_state(root: Path) -> tuple[str, str]:
    """``("ok" | "missing" | "stale", detail)`` of the bundle under ``root`` (the project)."""
    static = root / STATIC
    missing = [name for name in BUNDLE if not (static / name).is_file()]
    if missing:
        return "missing", ", ".join(str(STATIC / m) for m in missing)
    js = root / "js"
    sources = _newest([js / s for s in SOURCES])
    built = min((static / name).stat().st_mtime for name in BUNDLE)
    if sources > built:
        return "stale", f"{STATIC} is older than the sources in js/"
    return "ok", ""


class FrontEndBuildHook(BuildHookInterface):
    """Build the front-end bundle with npm when it is missing or stale (see the module doc)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        mode = os.environ.get("CNNVIS_JS_BUILD", "auto").strip().lower()
        state, detail = bundle_state(root)
        if mode == "always" and (root / "js" / "package.json").is_file():
            state, detail = "stale", "CNNVIS_JS_BUILD=always"
        if state == "ok":
            return
        npm = shutil.which("npm")
        has_js = (root / "js" / "package.json").is_file()
        if mode == "skip" or npm is None or not has_js:
            why = (
                "CNNVIS_JS_BUILD=skip"
                if mode == "skip"
                else ("npm was not found on PATH" if npm is None else "js/ is missing")
            )
            message = (
                f"cnnvis_widgets: the front-end bundle is {state} ({detail}) and {why}.\n"
                "Without the bundle the widgets render blank. Fix: install Node.js (>= 18) and npm "
                "and build again (the build runs `npm ci` and `npm run build` in js/), or run "
                "`make js` first, or install from the sdist / the released wheel, which contain "
                "the bundle."
            )
            if version == "editable":
                self.app.display_warning(message + "\n(editable install: continuing)")
                return
            if state == "stale" and mode == "skip":
                self.app.display_warning(message + "\n(packaging the existing bundle as it is)")
                return
            raise RuntimeError(message)
        self._build(root / "js", npm)
        state, detail = bundle_state(root)
        if state != "ok":
            raise RuntimeError(
                "cnnvis_widgets: `npm run build` in js/ finished but the bundle is "
                f"{state}: {detail}"
            )

    def _build(self, js: Path, npm: str) -> None:
        steps = []
        if not (js / "node_modules").exists():
            steps.append([npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"])
        steps.append([npm, "run", "build"])
        for cmd in steps:
            self.app.display_info(f"cnnvis_widgets front end: {' '.join(cmd[1:])} (in js/)")
            result = subprocess.run(cmd, cwd=js, stdout=sys.stderr, stderr=sys.stderr)
            if result.returncode != 0:
                raise RuntimeError(
                    f"cnnvis_widgets: `npm {' '.join(cmd[1:])}` in js/ failed with exit status "
                    f"{result.returncode} (see its output above); the wheel would have no "
                    "front end. Fix the npm error (network for `npm ci`, Node.js >= 18) and build "
                    "again, or `make js` first."
                )
