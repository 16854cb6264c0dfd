"""The ``cnnvis`` command: ``lab``, ``report``, ``export``, ``models``, ``atlas build|export``.

Exit codes: 0 success, 1 a step failed (the message says which and why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["main"]

T = TypeVar("T")

PACKAGE = Path(__file__).resolve().parent
# JupyterLab settings overrides shipped with the package: widget state saved in the notebooks (a
# reopened notebook shows each widget's last picture without a kernel), no news, no update check.
LAB_SETTINGS = PACKAGE / "_jupyter" / "lab" / "settings"


class CliError(Exception):
    """A failure with a message for the user (exit code 1)."""


def progress(items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
    """A tqdm progress bar on stderr: count, rate and ETA (a log file gets a line every 10 s)."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    with tqdm(
        items,
        total=total,
        desc=f"  {label}",
        file=sys.stderr,
        dynamic_ncols=tty,
        ncols=None if tty else 100,
        mininterval=0.1 if tty else 10.0,
        ascii=not tty,
    ) as bar:
        yield from bar


def _notebooks_dir() -> Path:
    """The teaching notebooks: the source tree's, or the copy shipped in the wheel."""
    repo = PACKAGE.parent / "notebooks"
    if repo.is_dir():
        return repo
    shipped = PACKAGE / "_notebooks"
    if shipped.is_dir():
        return shipped
    raise CliError("the teaching notebooks are not installed with this copy of cnnvis_widgets")


# ---------------------------------------------------------------------------------------- lab
def lab_settings_dir() -> Path:
    """The app settings folder for ``cnnvis lab``: the package's ``overrides.json``, merged under
    the overrides of this environment's own app settings folder (those win) when it has some."""
    ours = json.loads((LAB_SETTINGS / "overrides.json").read_text())
    try:
        from jupyterlab.commands import get_app_dir

        default = Path(get_app_dir()) / "settings"
    except Exception:  # noqa: BLE001 - no JupyterLab or an odd layout: ours alone
        return LAB_SETTINGS
    if not default.is_dir() or not any(default.iterdir()):
        return LAB_SETTINGS
    merged = Path(tempfile.mkdtemp(prefix="cnnvis-lab-settings-"))
    shutil.copytree(default, merged, dirs_exist_ok=True)
    theirs_path = merged / "overrides.json"
    theirs = json.loads(theirs_path.read_text()) if theirs_path.is_file() else {}
    for plugin, values in ours.items():
        theirs[plugin] = {**values, **theirs.get(plugin, {})}
    theirs_path.write_text(json.dumps(theirs, indent=2))
    return merged


def lab_settings_args(settings_dir: Path | None = None) -> list[str]:
    """The JupyterLab options of ``cnnvis lab`` (and ``make lab``) besides address and token."""
    return [
        f"--LabApp.app_settings_dir={settings_dir or lab_settings_dir()}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]


def cmd_lab(args: argparse.Namespace) -> int:
    src = _notebooks_dir()
    work = Path(args.dir).resolve() if args.dir else None
    if work is None:
        work = src if os.access(src, os.W_OK) else Path.cwd() / "cnnvis-notebooks"
    if work != src:
        work.mkdir(parents=True, exist_ok=True)
        for nb in src.glob("*.ipynb"):
            if not (work / nb.name).exists():
                shutil.copy2(nb, work / nb.name)
    token = args.token or secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={args.port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={work}",
        "--LabApp.default_url=/lab/tree/00_tour.ipynb",
        *lab_settings_args(),
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    print(f"Open http://127.0.0.1:{args.port}/lab/tree/00_tour.ipynb?token={token}")
    print(f"(token: {token}; notebooks in {work})", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


# -------------------------------------------------------------------------------------- voila
def cmd_voila(args: argparse.Namespace) -> int:
    """Voila on 127.0.0.1 with the project's template (Voila's lab page minus its CDN links)."""
    nb = Path(args.notebook)
    if not nb.is_file():
        raise CliError(f"no notebook at {nb}")
    env = dict(os.environ)
    extra = str(PACKAGE / "_jupyter")
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (extra, env.get("JUPYTER_PATH", "")) if p)
    cmd = [
        sys.executable,
        "-m",
        "voila",
        str(nb),
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        f"--port={args.port}",
        "--template=cnnvis",
    ]
    print(f"Open http://127.0.0.1:{args.port}/", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


# ------------------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    from .models import available_models, load_model

    if not args.name:
        for name in available_models():
            print(name)
        print("\nor any nn.Module of your own: cnnvis_widgets.load_model(module)")
        print("layers of one model: cnnvis models NAME")
        return 0
    try:
        handle = load_model(args.name, weights=None if args.random else "default", device="cpu")
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    print(handle)
    layers = handle.layers.values() if args.all else handle.conv_layers()
    for li in layers:
        size = f"{li.height}x{li.width}" if li.spatial else "-"
        print(f"  {li.name:40s} {li.kind:6s} {li.channels:6d} ch  {size}")
    return 0


# ------------------------------------------------------------------------------------- report
def _section(
    report: Any, title: str, fn: Callable[[Any], None], failures: list[str], *, required: bool
) -> None:
    report.add_heading(title)
    try:
        fn(report)
    except ImportError as exc:
        report.add_text(f"Not available in this installation: {exc}")
        if required:
            failures.append(f"{title}: {exc}")
    except Exception as exc:  # noqa: BLE001 - reported, the rest of the report goes on
        report.add_text(f"This section failed: {type(exc).__name__}: {exc}")
        failures.append(f"{title}: {type(exc).__name__}: {exc}")


def cmd_report(args: argparse.Namespace) -> int:
    from . import report_sections
    from .models import load_model
    from .report import Report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"loading {args.model} ...", file=sys.stderr)
    try:
        handle = load_model(args.model, device=args.device)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from exc
    report = Report(f"What {handle.name} sees", author=args.author)
    failures: list[str] = []
    ctx = report_sections.Context(
        handle=handle, steps=args.steps, progress=progress, quick=args.quick
    )
    for title, fn in report_sections.SECTIONS:
        print(f"{title}:", file=sys.stderr)
        _section(report, title, lambda r, fn=fn: fn(ctx, r), failures, required=False)
    html_path = report.save_html(out / "report.html")
    print(f"wrote {html_path}")
    if not args.no_pdf:
        try:
            pdf = report.save_pdf(out / "report.pdf", html_path=html_path)
            print(f"wrote {pdf}")
        except (FileNotFoundError, RuntimeError) as exc:
            failures.append(f"PDF: {exc}")
    if failures:
        print("some sections failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_notebook

    try:
        html = export_notebook(Path(args.notebook), out_dir=args.out, execute=not args.no_execute)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {html}")
    return 0


# -------------------------------------------------------------------------------------- atlas
def _atlas_model(spec: str, device: str | None, input_size: int | None, random: bool) -> Any:
    """A named model, or ``package.module:factory`` (a function returning an ``nn.Module`` or a
    ``ModelHandle``)."""
    import importlib

    from .models import NAMED_MODELS, ModelHandle, load_model

    weights = None if random else "default"
    if ":" in spec and spec not in NAMED_MODELS and not spec.startswith("torchvision:"):
        mod_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise CliError(f"cannot import the model factory {spec!r}: {exc}") from exc
        made = factory()
        if isinstance(made, ModelHandle):
            return load_model(made, weights=weights) if random else made
        return load_model(made, device=device, input_size=input_size, weights=weights)
    return load_model(spec, device=device, weights=weights, input_size=input_size)


def cmd_atlas_build(args: argparse.Namespace) -> int:
    from .core.atlas.build import BuildSettings, build_atlas_steps
    from .core.atlas.distributed import setup, world_from_env

    _, world, local = world_from_env()
    device = args.device
    if device is None:
        import torch

        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    group = setup(device)
    try:
        try:
            handle = _atlas_model(args.model, device, args.input_size, args.random)
        except (ValueError, RuntimeError, FileNotFoundError, TypeError) as exc:
            raise CliError(str(exc)) from exc
        fields = {f: getattr(args, f) for f in _BUILD_FIELDS if getattr(args, f) is not None}
        settings = BuildSettings(**fields)
        if group.is_writer:
            print(
                f"building the atlas of {handle.name} in {args.out} "
                f"({group.world} process{'es' if group.world > 1 else ''})",
                file=sys.stderr,
            )
        try:
            steps = build_atlas_steps(
                handle, args.layers or None, args.dataset, args.out, settings, group=group
            )
            report = _drive(steps, show=group.is_writer)
        except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
            raise CliError(str(exc).strip("'\"")) from exc
        if group.is_writer and report is not None:
            print(f"wrote {report.out / 'atlas.json'} (computed {report.computed}, reused "
                  f"{report.reused})")  # fmt: skip
    finally:
        group.close()
    return 0


def _drive(steps: Any, show: bool) -> Any:
    """Run a steps generator to its end with a tqdm bar (pieces done of all; only where
    ``show``) and return its result."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    bar = tqdm(total=None, desc="  atlas", file=sys.stderr, disable=not show, ascii=not tty,
               mininterval=0.1 if tty else 10.0, ncols=None if tty else 100)  # fmt: skip
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            if step.total and bar.total != step.total:
                bar.total = step.total
            bar.set_postfix_str(f"{step.metrics.get('stage', '')} {step.metrics.get('layer', '')}")
            bar.update(1)
    finally:
        bar.close()


#: the BuildSettings fields the command line sets (same names as the options)
_BUILD_FIELDS = (
    "preset", "steps", "size", "seed", "batch", "k", "n_images", "shard", "probe_images",
    "inversion_steps", "inversion_size", "top_classes", "max_units", "ablation",
)  # fmt: skip


def cmd_atlas_export(args: argparse.Namespace) -> int:
    atlas_dir = Path(args.dir)
    if not (atlas_dir / "atlas.json").is_file():
        raise CliError(f"{str(atlas_dir)!r} is not a built atlas (no atlas.json)")
    try:
        from .site import export_site
    except ImportError as exc:
        raise CliError(
            "the static-site exporter (cnnvis_widgets.site) is not part of this installation: "
            f"{exc}"
        ) from exc
    try:
        out = export_site(atlas_dir, Path(args.out))
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {out if out is not None else args.out}")
    return 0


def _add_atlas(sub: Any) -> None:
    atl = sub.add_parser("atlas", help="build a whole-network atlas as a batch job, export a site")
    asub = atl.add_subparsers(dest="atlas_command", required=True)
    b = asub.add_parser("build", help="compute every part of the atlas (resumable; torchrun-able)")
    b.add_argument("--model", default="efficientnet_lite0",
                   help="a model name or package.module:factory")  # fmt: skip
    b.add_argument("--layers", nargs="+", default=None, help="layers (default: the blocks)")
    b.add_argument("--dataset", default=None, help="folder of images for the top-k patches")
    b.add_argument("--out", required=True, help="the atlas folder (new, or a build to resume)")
    b.add_argument("--device", default=None)
    b.add_argument("--input-size", type=int, default=None, help="input side of a module's model")
    b.add_argument("--random", action="store_true", help="random weights")
    b.add_argument("--preset", default=None, help="AM preset")
    for name, what in (
        ("steps", "AM optimization steps"), ("size", "AM image side"), ("seed", "AM seed"),
        ("batch", "units per AM batch"), ("k", "top images per unit"),
        ("n-images", "images of the default dataset"), ("shard", "dataset images per piece"),
        ("probe-images", "dissection probe images (0: none)"),
        ("inversion-steps", "inversion steps (0: none)"), ("inversion-size", "inversion side"),
        ("top-classes", "classes per unit"), ("max-units", "only the first units of each layer"),
    ):  # fmt: skip
        b.add_argument(f"--{name}", type=int, default=None, help=what)
    b.add_argument("--no-ablation", dest="ablation", action="store_const", const=False,
                   default=None, help="do not measure what removing each unit does")  # fmt: skip
    b.set_defaults(func=cmd_atlas_build)
    e = asub.add_parser("export", help="write a static site of a built atlas (no server needed)")
    e.add_argument("dir", help="the built atlas folder")
    e.add_argument("--out", required=True, help="the site folder")
    e.set_defaults(func=cmd_atlas_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnvis", description="Interactive CNN visualization: notebooks, reports, exports."
    )
    sub = p.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="JupyterLab on 127.0.0.1 with the teaching notebooks")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--token", default=None, help="access token (default: random, printed)")
    lab.add_argument("--dir", default=None, help="where to copy the notebooks (default: here)")
    lab.set_defaults(func=cmd_lab)

    rep = sub.add_parser("report", help="run every method and write report.html / report.pdf")
    rep.add_argument("--model", default="efficientnet_lite0")
    rep.add_argument("--out", required=True, help="output folder")
    rep.add_argument("--device", default=None)
    rep.add_argument("--steps", type=int, default=128, help="optimization steps per picture")
    rep.add_argument("--author", default=None)
    rep.add_argument("--quick", action="store_true", help="small sizes (for tests and previews)")
    rep.add_argument("--no-pdf", action="store_true", help="skip printing the PDF")
    rep.set_defaults(func=cmd_report)

    exp = sub.add_parser("export", help="execute a notebook and export HTML that renders offline")
    exp.add_argument("notebook")
    exp.add_argument("--out", default=None, help="output folder (default: next to the notebook)")
    exp.add_argument("--no-execute", action="store_true", help="export the saved outputs as is")
    exp.set_defaults(func=cmd_export)

    vo = sub.add_parser("voila", help="serve a notebook as an app with Voila, nothing off-machine")
    vo.add_argument("notebook")
    vo.add_argument("--port", type=int, default=8866)
    vo.set_defaults(func=cmd_voila)

    mod = sub.add_parser("models", help="the models that can be loaded, or one model's layers")
    mod.add_argument("name", nargs="?", default=None)
    mod.add_argument("--all", action="store_true", help="every layer, not only conv-like ones")
    mod.add_argument("--random", action="store_true", help="random weights (no weights needed)")
    mod.set_defaults(func=cmd_models)
    _add_atlas(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnnvis`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"cnnvis {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `cnnvis models | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
